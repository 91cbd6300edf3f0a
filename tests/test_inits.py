"""Each scheme's kernels and biases have the variance its formula gives (chex)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import inits

SCHEMES = inits.list_inits()
# Parametrized specs: the same checks hold for every parameter (fan_out mode uses kh*kw*c_out).
PARAMETRIZED = ["normal:std=0.02", "uniform:scale=0.05", "he_normal:mode=fan_out",
                "orthogonal:gain=1.0", "variance_scaling:scale=2,mode=fan_avg,distribution=uniform",
                "glorot_uniform:distribution=normal", "lecun_uniform:scale=3"]
# The formulas written out independently of inits.py, for a non-square HWIO kernel.
KH, KW, C_IN, C_OUT = 3, 5, 70, 110
FAN_IN, FAN_OUT = KH * KW * C_IN, KH * KW * C_OUT
EXPECTED_VARIANCE = {
    "glorot_uniform": 2 / (FAN_IN + FAN_OUT), "glorot_normal": 2 / (FAN_IN + FAN_OUT),
    "he_normal": 2 / FAN_IN, "he_uniform": 2 / FAN_IN,
    "lecun_normal": 1 / FAN_IN, "lecun_uniform": 1 / FAN_IN,
    "torch_default": 1 / (3 * FAN_IN), "normal_0.01": 1e-4, "normal": 1e-4, "uniform": 1e-4 / 3,
    "orthogonal": 2 / FAN_IN, "lsuv": 1 / FAN_IN, "variance_scaling": 1 / FAN_IN,
    "normal:std=0.02": 4e-4, "uniform:scale=0.05": 0.05 ** 2 / 3, "he_normal:mode=fan_out": 2 / FAN_OUT,
    "orthogonal:gain=1.0": 1 / FAN_IN,
    "variance_scaling:scale=2,mode=fan_avg,distribution=uniform": 4 / (FAN_IN + FAN_OUT),
    "glorot_uniform:distribution=normal": 2 / (FAN_IN + FAN_OUT), "lecun_uniform:scale=3": 3 / FAN_IN,
}


@pytest.fixture(autouse=True, scope="module")
def optimized_xla():
  """XLA's full optimizations for this module: conftest's lowest level compiles models
  faster, but here the kernels are drawn op by op (a few small programs per shape) and
  unoptimized RNG code runs slower than it compiles (this file: 78 -> 57 s alone)."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def assert_moments(sample: np.ndarray, variance: float, what: str) -> None:
  """Mean 0 and the given variance, within 6 standard errors for this sample size.

  The standard error of a sample variance is Var * sqrt((kurtosis - 1) / n);
  kurtosis is 1.8 (uniform), ~2.5 (truncated normal) or 3 (normal): <= 3 here.
  """
  n = sample.size
  chex.assert_scalar_non_negative(variance)
  np.testing.assert_allclose(sample.mean(), 0.0, atol=6 * math.sqrt(variance / n), err_msg=what)
  np.testing.assert_allclose(sample.var(), variance, rtol=6 * math.sqrt(2 / n), err_msg=what)


def assert_kernel(scheme: inits.InitScheme, kernel: np.ndarray, what: str) -> None:
  assert_moments(kernel, scheme.variance(kernel.shape), what)
  bound = scheme.bound(kernel.shape)
  if bound is not None:  # uniform: sqrt(3 Var); truncated normal: 2/0.8796 sd
    assert np.abs(kernel).max() <= bound * (1 + 1e-6), what


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
    assert_kernel(scheme, np.asarray(kernel), f"{name} {shape}")


@pytest.mark.parametrize("spec", SCHEMES + PARAMETRIZED)
def test_formula_on_a_non_square_kernel(spec):
  """Var(W) of a (3, 5, 70, 110) HWIO kernel, against the formulas written out by hand:
  swapping any two axes, or fan_in for fan_out, changes it."""
  scheme = inits.get_init(spec)
  shape = (KH, KW, C_IN, C_OUT)
  assert inits.fans(shape) == (FAN_IN, FAN_OUT)
  np.testing.assert_allclose(scheme.variance(shape), EXPECTED_VARIANCE[spec], rtol=1e-12)
  kernel = np.asarray(scheme.kernel_init(jax.random.key(3), shape, jnp.float32))
  assert_kernel(scheme, kernel, spec)


@pytest.mark.parametrize("fan_in", [3, 147, 4608])
def test_torch_default_bias(fan_in):
  bias = np.asarray(inits.get_init("torch_default").bias_init(
      jax.random.key(1), (200_000,), jnp.float32, fan_in=fan_in))
  assert np.abs(bias).max() <= 1 / math.sqrt(fan_in)
  assert_moments(bias, 1 / (3 * fan_in), f"torch_default bias, fan_in {fan_in}")


@pytest.mark.parametrize("name", [n for n in SCHEMES + PARAMETRIZED if n != "torch_default"])
def test_other_schemes_have_zero_bias(name):
  bias = inits.get_init(name).bias_init(jax.random.key(1), (64,), jnp.float32, fan_in=10)
  chex.assert_trees_all_equal(bias, jnp.zeros(64))


def test_dense_fans():
  assert inits.fans((256, 10)) == (256, 10)


@pytest.mark.parametrize("alias,name", [
    ("glorot", "glorot_uniform"), ("Xavier", "glorot_uniform"), ("XAVIER_UNIFORM", "glorot_uniform"),
    ("xavier_normal", "glorot_normal"), ("kaiming", "he_normal"), ("Kaiming_Normal", "he_normal"),
    ("kaiming_uniform", "he_uniform"), ("flax_default", "lecun_normal"), ("PyTorch", "torch_default"),
    ("normal_0.01", "normal_0.01"), ("Orthogonal", "orthogonal"),
    # Parameters: canonical order and formatting; a default value is dropped.
    ("kaiming:mode=fan_out", "he_normal:mode=fan_out"), ("he_normal:mode=fan_in", "he_normal"),
    ("normal:std=0.020", "normal:std=0.02"), ("orthogonal:gain=1", "orthogonal:gain=1"),
    ("variance_scaling:mode=fan_avg, scale=2", "variance_scaling:scale=2,mode=fan_avg"),
])
def test_names_aliases_and_canonical_specs(alias, name):
  assert inits.get_init(alias).name == name
  assert inits.get_init(name).name == name


def test_plain_names_keep_their_meaning():
  assert inits.get_init("normal_0.01").variance((3, 3, 4, 4)) == pytest.approx(1e-4)
  assert inits.get_init("orthogonal").variance((1, 1, 64, 32)) == pytest.approx(2 / 64)
  assert inits.get_init("he_normal").distribution == "truncated_normal"


def test_unknown_name_lists_the_choices():
  with pytest.raises(ValueError, match="unknown init scheme 'glorious'.*glorot_uniform.*torch_default"):
    inits.get_init("glorious")


@pytest.mark.parametrize("spec,problem", [
    ("normal:sd=0.1", "unknown parameter 'sd'.*normal takes std=float > 0"),
    ("normal:std=abc", "std must be a number.*normal takes std"),
    ("normal:std=-1", "std must be a finite number > 0"),
    ("he_normal:mode=fan_sideways", "bad value 'fan_sideways' for mode.*fan_in\\|fan_out\\|fan_avg"),
    ("variance_scaling:distribution=cauchy", "bad value 'cauchy'.*truncated_normal\\|normal\\|uniform"),
    ("orthogonal:gain", "expected key=value"),
    ("torch_default:scale=2", "unknown parameter 'scale'.*torch_default takes no parameters"),
    ("uniform:", "nothing after ':'"),
])
def test_malformed_specs_say_what_the_scheme_accepts(spec, problem):
  with pytest.raises(ValueError, match=problem):
    inits.get_init(spec)


def test_split_specs_keeps_parameters_with_their_scheme():
  text = "glorot,normal:std=0.01,variance_scaling:scale=2,mode=fan_avg,distribution=uniform,he_normal"
  assert inits.split_specs(text) == [
      "glorot", "normal:std=0.01", "variance_scaling:scale=2,mode=fan_avg,distribution=uniform",
      "he_normal"]


def test_every_scheme_has_a_formula():
  for name in SCHEMES + PARAMETRIZED:
    assert "b = 0" in inits.get_init(name).formula or name == "torch_default"
