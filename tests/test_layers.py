"""The fast conv2d / max_pool equal plain lax.conv_general_dilated / nn.max_pool:
outputs and gradients (input and kernel), on tiny shapes that reach every code path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from googlenet_jax import layers


def _ref_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, (strides, strides), ((padding, padding),) * 2,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


def _value_and_grads(fn, x, w, cot):
  y, vjp = jax.vjp(fn, x, w)
  return (y, *vjp(cot))


# (name, input NHWC, kernel size, c_out, stride, padding). Paths: 1x1 as a matmul;
# kxk through XLA's conv with the kernel gradient from XLA (small maps), per-tap
# products (>= 20x20 outputs) or channel-major patches (few input channels); im2col
# forward / input gradient where the kernel is wider than the map.
CASES = [
    ("1x1", (2, 5, 5, 6), 1, 4, 1, 0),
    ("3x3 small map", (2, 6, 6, 12), 3, 8, 1, 1),
    ("3x3 large map", (1, 20, 20, 8), 3, 8, 1, 1),
    ("5x5", (2, 6, 6, 8), 5, 6, 1, 2),
    ("5x5 on 3x3 map", (2, 3, 3, 8), 5, 6, 1, 2),
    ("3x3 on 2x2 map", (2, 2, 2, 16), 3, 8, 1, 1),
    ("7x7 stride 2, 1 channel", (2, 16, 16, 1), 7, 8, 2, 3),
    ("7x7 stride 2, 3 channels, odd size", (2, 15, 15, 3), 7, 4, 2, 3),
    ("3x3 stride 2 no padding", (2, 9, 9, 8), 3, 4, 2, 0),
]


@pytest.mark.parametrize("name,shape,k,c_out,strides,padding", CASES, ids=[c[0] for c in CASES])
def test_conv2d_matches_lax(name, shape, k, c_out, strides, padding):
  kx, kw, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, (k, k, shape[-1], c_out)) / np.sqrt(k * k * shape[-1])
  out_shape = jax.eval_shape(lambda x, w: _ref_conv(x, w, strides, padding), x, w).shape
  cot = jax.random.normal(kc, out_shape)
  with jax.default_matmul_precision("highest"):
    fast = jax.jit(lambda x, w, c: _value_and_grads(
        lambda x, w: layers.conv2d(x, w, strides, padding), x, w, c))(x, w, cot)
  ref = jax.jit(lambda x, w, c: _value_and_grads(
      lambda x, w: _ref_conv(x, w, strides, padding), x, w, c))(x, w, cot)
  for got, want, what in zip(fast, ref, ("output", "input grad", "kernel grad")):
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{name}: {what}")


def test_conv2d_bfloat16_close():
  x = jax.random.normal(jax.random.key(1), (2, 3, 3, 8), jnp.bfloat16)
  w = (jax.random.normal(jax.random.key(2), (5, 5, 8, 4)) * 0.1).astype(jnp.bfloat16)
  fast = jax.grad(lambda x, w: layers.conv2d(x, w, 1, 2).astype(jnp.float32).sum(), (0, 1))(x, w)
  ref = jax.grad(lambda x, w: _ref_conv(x, w, 1, 2).astype(jnp.float32).sum(), (0, 1))(x, w)
  for got, want in zip(fast, ref):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=5e-2, atol=5e-2)


POOLS = [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 2, 0)]


@pytest.mark.parametrize("window,strides,padding", POOLS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pool_matches_flax(window, strides, padding, ties):
  x = jax.random.normal(jax.random.key(3), (2, 9, 8, 3))
  if ties:  # ReLU zeros and repeated values: the gradient goes to each window's first maximum
    x = jnp.maximum(jnp.round(2 * x), 0.0)

  def ref(x):
    return nn.max_pool(x, (window, window), (strides, strides), ((padding, padding),) * 2)

  def fast(x):
    return layers.max_pool(x, window, strides, padding)

  y_ref, vjp_ref = jax.vjp(ref, x)
  y_fast, vjp_fast = jax.jit(lambda x: jax.vjp(fast, x))(x)
  cot = jax.random.normal(jax.random.key(4), y_ref.shape)
  np.testing.assert_array_equal(y_fast, y_ref)
  np.testing.assert_array_equal(jax.jit(fast)(x), y_ref)
  np.testing.assert_allclose(vjp_fast(cot)[0], vjp_ref(cot)[0], rtol=1e-6, atol=1e-6)
