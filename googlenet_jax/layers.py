"""Layers that take their initializers explicitly: conv, dense, pooling, LRN.

No layer here has a default initializer, so a model cannot fall back to
Flax's lecun_normal by accident. Kernels use HWIO (conv) / (in, out) (dense),
the layout jax.nn.initializers computes fans for.

Speed notes (XLA:CPU, measured in benchmarks/): a 1x1 convolution is computed
as one matrix product over the channel axis, whose weight gradient XLA runs
several times faster than the equivalent convolution's; max-pooling is the
maximum of shifted strided slices, whose backward is a few cheap selects
instead of select-and-scatter. Both compute exactly what the plain ops do.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from googlenet_jax.inits import BiasInitializer, Initializer

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=(strides, strides), padding=((padding, padding),) * 2,
      dimension_numbers=_CONV_DIMS)


def _tap_slices(x: jax.Array, k: int, strides: int, out_hw: tuple[int, int],
                axes: tuple[int, int] = (1, 2)) -> list[jax.Array]:
  """The k*k strided slices of the padded `x` that tap (i, j) of a kxk kernel reads, row-major."""
  out_h, out_w = out_hw
  pieces = []
  for i in range(k):
    for j in range(k):
      index = [slice(None)] * x.ndim
      index[axes[0]] = slice(i, i + strides * (out_h - 1) + 1, strides)
      index[axes[1]] = slice(j, j + strides * (out_w - 1) + 1, strides)
      pieces.append(x[tuple(index)])
  return pieces


def _pad_hw(x: jax.Array, padding: int, axes: tuple[int, int] = (1, 2)) -> jax.Array:
  if not padding:
    return x
  config = [(0, 0)] * x.ndim
  config[axes[0]] = config[axes[1]] = (padding, padding)
  return jnp.pad(x, config)


def _out_hw(x_shape, k: int, strides: int, padding: int) -> tuple[int, int]:
  return tuple((x_shape[a] + 2 * padding - k) // strides + 1 for a in (1, 2))


def _im2col_conv(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
  """Conv as (patches with HWIO's (kh, kw, c_in) feature order) @ kernel.reshape(-1, c_out)."""
  k, _, c_in, c_out = kernel.shape
  n = x.shape[0]
  out_h, out_w = _out_hw(x.shape, k, strides, padding)
  patches = jnp.concatenate(_tap_slices(_pad_hw(x, padding), k, strides, (out_h, out_w)), axis=-1)
  y = jnp.dot(patches.reshape(n * out_h * out_w, k * k * c_in), kernel.reshape(k * k * c_in, c_out))
  return y.reshape(n, out_h, out_w, c_out)


def _use_im2col(x_shape, k: int, strides: int) -> bool:
  """Kernel wider than the image (GoogLeNet's 5x5 on 3x3 maps): XLA:CPU's conv is ~10x slow there."""
  return strides == 1 and k > min(x_shape[1], x_shape[2])


def _kernel_grad(x: jax.Array, g: jax.Array, k: int, strides: int, padding: int) -> jax.Array:
  """d(conv)/d(kernel) in HWIO, picking the formulation XLA:CPU runs fastest for the shape."""
  n, _, _, c_in = x.shape
  _, out_h, out_w, c_out = g.shape
  rows = n * out_h * out_w
  g2 = g.reshape(rows, c_out)
  if c_in * k * k <= 64:
    # Few input channels (the stem conv on the image): channel-major patches, whose
    # (k*k*c_in, rows) matrix is built from contiguous slices and feeds one plain dot.
    xt = _pad_hw(x.transpose(3, 0, 1, 2), padding, axes=(2, 3))
    patches = jnp.stack(_tap_slices(xt, k, strides, (out_h, out_w), axes=(2, 3)))
    return jnp.dot(patches.reshape(k * k * c_in, rows), g2).reshape(k, k, c_in, c_out)
  if out_h * out_w >= 400:
    # Large maps: one (c_in, rows) x (rows, c_out) product per tap; XLA's conv
    # kernel gradient runs at a third of matmul speed here.
    xp = _pad_hw(x, padding)
    taps = [jnp.dot(piece.reshape(rows, c_in).T, g2)
            for piece in _tap_slices(xp, k, strides, (out_h, out_w))]
    return jnp.stack(taps).reshape(k, k, c_in, c_out)
  return jax.vjp(lambda w: _xla_conv(x, w, strides, padding),
                 jnp.zeros((k, k, c_in, c_out), x.dtype))[1](g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_kxk(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
  if _use_im2col(x.shape, kernel.shape[0], strides):
    return _im2col_conv(x, kernel, strides, padding)
  return _xla_conv(x, kernel, strides, padding)


def _conv_kxk_fwd(x, kernel, strides, padding):
  return _conv_kxk(x, kernel, strides, padding), (x, kernel)


def _conv_kxk_bwd(strides, padding, res, g):
  x, kernel = res
  k = kernel.shape[0]
  if _use_im2col(x.shape, k, strides):
    # Stride 1: the input gradient is the conv of g with the flipped, transposed kernel.
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = _im2col_conv(g, flipped, 1, k - 1 - padding)
  else:
    dx = jax.vjp(lambda x_: _xla_conv(x_, kernel, strides, padding), x)[1](g)[0]
  dw = _kernel_grad(x, g, k, strides, padding)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


_conv_kxk.defvjp(_conv_kxk_fwd, _conv_kxk_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1, padding: int = 0) -> jax.Array:
  """NHWC x HWIO convolution with symmetric zero padding.

  Equal (to float tolerance) to lax.conv_general_dilated, values and gradients.
  1x1/stride 1 is a matrix product over channels. kxk keeps XLA's conv for the
  forward and input gradient, except where the kernel is wider than the map
  (im2col product), and computes the kernel gradient as matrix products where
  XLA:CPU's own is slow (see `_kernel_grad`).
  """
  kh, kw, c_in, c_out = kernel.shape
  if (kh, kw, strides, padding) == (1, 1, 1, 0):
    n, h, w, _ = x.shape
    return jnp.dot(x.reshape(n * h * w, c_in), kernel.reshape(c_in, c_out)).reshape(n, h, w, c_out)
  if kh != kw:
    return _xla_conv(x, kernel, strides, padding)
  return _conv_kxk(x, kernel, strides, padding)


def _window_slices(x: jax.Array, window: int, strides: int) -> list[jax.Array]:
  """The window*window strided slices of `x` (already padded), in row-major window order."""
  out_h = (x.shape[1] - window) // strides + 1
  out_w = (x.shape[2] - window) // strides + 1
  return [x[:, di:di + strides * (out_h - 1) + 1:strides, dj:dj + strides * (out_w - 1) + 1:strides, :]
          for di in range(window) for dj in range(window)]


def _max_pool_with_index(x: jax.Array, window: int, strides: int) -> tuple[jax.Array, jax.Array]:
  """Max over the window and the index of its first maximal element (row-major), as int8."""
  pieces = _window_slices(x, window, strides)
  out, idx = pieces[0], jnp.zeros(pieces[0].shape, jnp.int8)
  for t, piece in enumerate(pieces[1:], start=1):
    take = piece > out  # strict: ties keep the first maximum, as select_and_scatter(ge) does
    out = jnp.where(take, piece, out)
    idx = jnp.where(take, jnp.int8(t), idx)
  return out, idx


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_padded(x: jax.Array, window: int, strides: int) -> jax.Array:
  # Without differentiation reduce_window is the faster forward; same values.
  return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, window, window, 1),
                           (1, strides, strides, 1), "VALID")


def _max_pool_padded_fwd(x, window, strides):
  # Materialise both in one pass, so XLA neither re-derives idx in the backward
  # nor recomputes the where-chain inside every consumer.
  out, idx = lax.optimization_barrier(_max_pool_with_index(x, window, strides))
  return out, (idx, x.shape)


def _max_pool_padded_bwd(window, strides, res, g):
  """Routes each output gradient to its window's first maximum.

  The gradient and index maps are dilated by the stride and padded once; the
  input gradient is then the sum over window taps of shifted slices of them,
  one fused loop. (A sum of per-tap pads instead made XLA:CPU materialise
  every padded piece; select-and-scatter is slower still.)
  """
  idx, shape = res
  out_h, out_w = g.shape[1:3]
  height, width = shape[1:3]
  halo = window - 1
  config = ((0, 0, 0),
            (halo, height - strides * (out_h - 1) - 1, strides - 1),
            (halo, width - strides * (out_w - 1) - 1, strides - 1),
            (0, 0, 0))
  g_wide, idx_wide = lax.optimization_barrier(
      (lax.pad(g, jnp.zeros((), g.dtype), config), lax.pad(idx, jnp.int8(-1), config)))
  zero = jnp.zeros((), g.dtype)
  dx = None
  for t in range(window * window):
    di, dj = divmod(t, window)
    rows = slice(halo - di, halo - di + height)
    cols = slice(halo - dj, halo - dj + width)
    piece = jnp.where(idx_wide[:, rows, cols] == t, g_wide[:, rows, cols], zero)
    dx = piece if dx is None else dx + piece
  return (dx,)


_max_pool_padded.defvjp(_max_pool_padded_fwd, _max_pool_padded_bwd)


def max_pool(x: jax.Array, window: int = 3, strides: int = 1, padding: int = 0) -> jax.Array:
  """Max-pool with -inf padding (PyTorch's MaxPool2d(window, strides, padding)).

  Same values and gradients as `nn.max_pool` (the gradient goes to the first
  maximum of each window, like select-and-scatter); the forward is the maximum
  of window*window strided slices and the backward a sum of strided pads of the
  masked output gradient, both single fused loops on XLA:CPU, where
  select-and-scatter (and differentiating a jnp.maximum chain) is slow.
  """
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                constant_values=-jnp.inf)
  return _max_pool_padded(x, window, strides)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Cross-channel LRN as in Caffe/BVLC GoogLeNet: x / (k + alpha/size * sum_window x^2)^beta."""
  half = size // 2
  squared = jnp.pad(jnp.square(x), ((0, 0), (0, 0), (0, 0), (half, half)))
  channels = x.shape[-1]
  window_sum = sum(squared[..., i:i + channels] for i in range(size))
  return x / jnp.power(k + (alpha / size) * window_sum, beta)


class Conv(nn.Module):
  """A conv layer's parameters and its linear map (no activation).

  kernel: (kh, kw, c_in, features) from `kernel_init`; bias: (features,) from
  `bias_init(..., fan_in=kh*kw*c_in)`.
  """

  features: int
  kernel_size: int
  kernel_init: Initializer
  bias_init: BiasInitializer
  strides: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def weights(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    """Declares (on first use) and returns (kernel, bias or None)."""
    shape = (self.kernel_size, self.kernel_size, in_features, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
    bias = None
    if self.use_bias:
      fan_in = self.kernel_size * self.kernel_size * in_features
      bias = self.param("bias", lambda key, s: self.bias_init(key, s, jnp.float32, fan_in=fan_in),
                        (self.features,))
    return kernel, bias

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = self.weights(x.shape[-1])
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding)
    return y if bias is None else y + bias.astype(self.dtype)


class Dense(nn.Module):
  """y = x W + b with W: (in, features) from `kernel_init`, b from `bias_init(..., fan_in=in)`."""

  features: int
  kernel_init: Initializer
  bias_init: BiasInitializer
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (fan_in, self.features), jnp.float32)
    bias = self.param("bias", lambda key, s: self.bias_init(key, s, jnp.float32, fan_in=fan_in),
                      (self.features,))
    self.sow("intermediates", "input_ms", jnp.mean(jnp.square(x.astype(jnp.float32))))
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)
    self.sow("intermediates", "preact", y)
    return y


class ConvBlock(nn.Module):
  """Conv (+ BatchNorm, whose conv then has no bias) + activation.

  Into the "intermediates" collection (which the diagnostics and LSUV read) go
  the input's second moment E[x^2] as "input_ms" and the pre-activation output
  as "preact". Unless that collection is mutable both cost nothing.
  """

  features: int
  kernel_size: int
  kernel_init: Initializer
  bias_init: BiasInitializer
  strides: int = 1
  padding: int = 0
  batch_norm: bool = False
  activation: str = "relu"
  dtype: Any = jnp.float32

  def setup(self):
    self.conv = Conv(self.features, self.kernel_size, self.kernel_init, self.bias_init,
                     strides=self.strides, padding=self.padding, use_bias=not self.batch_norm,
                     dtype=self.dtype)
    if self.batch_norm:
      self.bn = nn.BatchNorm(momentum=0.9, epsilon=1e-3, dtype=self.dtype)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    self.record_input(x)
    return self.finish(self.conv(x), train)

  def record_input(self, x: jax.Array) -> None:
    self.sow("intermediates", "input_ms", jnp.mean(jnp.square(x.astype(jnp.float32))))

  def finish(self, y: jax.Array, train: bool) -> jax.Array:
    """Everything after the conv's linear map: BatchNorm, record, activation."""
    if self.batch_norm:
      y = self.bn(y, use_running_average=not train)
    self.sow("intermediates", "preact", y)
    return get_activation(self.activation)(y)


def fused_1x1(blocks: Sequence[ConvBlock], x: jax.Array, train: bool) -> list[jax.Array]:
  """Applies several 1x1 ConvBlocks that read the same `x` with one matrix product.

  Each block keeps its own kernel, bias and init; only the product is shared
  (one (c_in, sum of widths) GEMM instead of three thin ones).
  """
  c_in = x.shape[-1]
  for block in blocks:
    block.record_input(x)
  weights = [block.conv.weights(c_in) for block in blocks]
  kernel = jnp.concatenate([k.reshape(c_in, -1) for k, _ in weights], axis=1)
  dtype = blocks[0].dtype
  y = conv2d(x.astype(dtype), kernel.astype(dtype).reshape(1, 1, c_in, -1))
  outs, start = [], 0
  for block, (k, b) in zip(blocks, weights):
    piece = y[..., start:start + k.shape[-1]]
    start += k.shape[-1]
    if b is not None:
      piece = piece + b.astype(dtype)
    outs.append(block.finish(piece, train))
  return outs
