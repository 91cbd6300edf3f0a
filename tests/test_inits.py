"""Each scheme's kernels and biases have the variance its formula gives (chex)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import inits

SCHEMES = inits.list_inits()
UNIFORM_BOUND = {  # scheme -> bound(fan_in, fan_out)
    "glorot_uniform": lambda fi, fo: math.sqrt(6 / (fi + fo)),
    "he_uniform": lambda fi, fo: math.sqrt(6 / fi),
    "lecun_uniform": lambda fi, fo: math.sqrt(3 / fi),
    "torch_default": lambda fi, fo: 1 / math.sqrt(fi),
}
TRUNCATED_NORMAL = ("glorot_normal", "he_normal", "lecun_normal")
# jax's variance_scaling truncates at +-2 sd of the underlying normal, whose sd is
# sqrt(Var) / 0.8796 so that the truncated variance is still Var.
TRUNCATION_SD = 2 / 0.87962566103423978


def assert_moments(sample: np.ndarray, variance: float, what: str) -> None:
  """Mean 0 and the given variance, within 6 standard errors for this sample size.

  The standard error of a sample variance is Var * sqrt((kurtosis - 1) / n);
  kurtosis is 1.8 (uniform), ~2.5 (truncated normal) or 3 (normal): <= 3 here.
  """
  n = sample.size
  chex.assert_scalar_non_negative(variance)
  np.testing.assert_allclose(sample.mean(), 0.0, atol=6 * math.sqrt(variance / n), err_msg=what)
  np.testing.assert_allclose(sample.var(), variance, rtol=6 * math.sqrt(2 / n), err_msg=what)


# lsuv starts from orthogonal (gain 1); its data-dependent part has its own tests.
@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "lsuv"])
def test_kernel_moments_and_bounds_for_every_shape(name, all_kernel_shapes):
  scheme = inits.get_init(name)
  for i, shape in enumerate(all_kernel_shapes):
    # RBG keys: the same initializers, but XLA compiles them several times faster
    # than threefry for each of the ~50 shapes.
    kernel = scheme.kernel_init(jax.random.key(i, impl="rbg"), shape, jnp.float32)
    chex.assert_shape(kernel, shape)
    chex.assert_tree_all_finite(kernel)
    kernel = np.asarray(kernel)
    fan_in, fan_out = inits.fans(shape)
    assert_moments(kernel, inits.kernel_variance(scheme, shape), f"{name} {shape}")
    if name in UNIFORM_BOUND:
      assert np.abs(kernel).max() <= UNIFORM_BOUND[name](fan_in, fan_out) * (1 + 1e-6)
    if name in TRUNCATED_NORMAL:
      sd = math.sqrt(inits.kernel_variance(scheme, shape))
      assert np.abs(kernel).max() <= TRUNCATION_SD * sd * (1 + 1e-6)


@pytest.mark.parametrize("fan_in", [3, 147, 4608])
def test_torch_default_bias(fan_in):
  bias = np.asarray(inits.get_init("torch_default").bias_init(
      jax.random.key(1), (200_000,), jnp.float32, fan_in=fan_in))
  assert np.abs(bias).max() <= 1 / math.sqrt(fan_in)
  assert_moments(bias, 1 / (3 * fan_in), f"torch_default bias, fan_in {fan_in}")


@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "torch_default"])
def test_other_schemes_have_zero_bias(name):
  bias = inits.get_init(name).bias_init(jax.random.key(1), (64,), jnp.float32, fan_in=10)
  chex.assert_trees_all_equal(bias, jnp.zeros(64))


def test_fans_of_a_non_square_hwio_kernel():
  # kh=3, kw=5, c_in=70, c_out=110: swapping any two axes changes the fans.
  shape = (3, 5, 70, 110)
  assert inits.fans(shape) == (3 * 5 * 70, 3 * 5 * 110)
  assert inits.fans((256, 10)) == (256, 10)
  key = jax.random.key(2)
  he = np.asarray(inits.get_init("he_normal").kernel_init(key, shape, jnp.float32))
  assert_moments(he, 2 / (3 * 5 * 70), "he_normal uses fan_in = kh*kw*c_in")
  glorot = np.asarray(inits.get_init("glorot_uniform").kernel_init(key, shape, jnp.float32))
  assert_moments(glorot, 2 / (3 * 5 * 70 + 3 * 5 * 110), "glorot uses kh*kw*(c_in + c_out)")


@pytest.mark.parametrize("alias,name", [
    ("glorot", "glorot_uniform"), ("Xavier", "glorot_uniform"), ("XAVIER_UNIFORM", "glorot_uniform"),
    ("xavier_normal", "glorot_normal"), ("kaiming", "he_normal"), ("Kaiming_Normal", "he_normal"),
    ("kaiming_uniform", "he_uniform"), ("flax_default", "lecun_normal"), ("PyTorch", "torch_default"),
    ("normal_0.01", "normal_0.01"), ("Orthogonal", "orthogonal"),
])
def test_names_and_aliases(alias, name):
  assert inits.get_init(alias).name == name


def test_unknown_name_lists_the_choices():
  with pytest.raises(ValueError, match="unknown init scheme 'glorious'.*glorot_uniform.*torch_default"):
    inits.get_init("glorious")


def test_every_scheme_has_a_formula():
  for name in SCHEMES:
    assert "b = 0" in inits.get_init(name).formula or name == "torch_default"
