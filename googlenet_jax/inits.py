"""Named weight-initialization schemes, each defined once and handed to every layer.

Fans follow jax.nn.initializers and PyTorch: for an HWIO conv kernel
fan_in = kh*kw*c_in and fan_out = kh*kw*c_out; for a dense (in, out) kernel
fan_in = in and fan_out = out.

A scheme is a kernel initializer (the ``jax.nn.initializers`` signature
``(key, shape, dtype)``) plus a bias initializer that also receives the layer's
fan-in as a keyword, ``bias_init(key, shape, dtype, fan_in=...)``: PyTorch's
default bias U(+-1/sqrt(fan_in)) needs it and Flax only passes the bias shape.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers

Initializer = Callable[..., jax.Array]
BiasInitializer = Callable[..., jax.Array]  # (key, shape, dtype, *, fan_in) -> Array


@dataclasses.dataclass(frozen=True)
class InitScheme:
  """A named init scheme: the kernel's distribution and the bias's.

  Attributes:
    name: canonical name, as `list_inits()` returns it.
    formula: the distribution in one line (shown by `--help` and reports).
    kernel_init: ``(key, shape, dtype) -> Array`` for conv (HWIO) and dense kernels.
    bias_init: ``(key, shape, dtype, *, fan_in) -> Array``.
    data_dependent: True when the scheme must be finished on a batch of data
      after `model.init` (LSUV); the kernels here are only its starting point.
  """

  name: str
  formula: str
  kernel_init: Initializer
  bias_init: BiasInitializer
  data_dependent: bool = False


def zeros_bias(key, shape, dtype=jnp.float32, *, fan_in: int) -> jax.Array:
  """Bias = 0 (every scheme except PyTorch's default)."""
  del key, fan_in
  return jnp.zeros(shape, dtype)


def torch_default_bias(key, shape, dtype=jnp.float32, *, fan_in: int) -> jax.Array:
  """PyTorch's Conv2d/Linear bias: U(+-1/sqrt(fan_in)), Var = 1/(3 fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _scheme(name, formula, kernel_init, bias_init=zeros_bias, **kw) -> InitScheme:
  return InitScheme(name, formula, kernel_init, bias_init, **kw)


_SCHEMES: dict[str, InitScheme] = {s.name: s for s in [
    _scheme("glorot_uniform", "W ~ U(+-sqrt(6/(fan_in+fan_out))), Var(W) = 2/(fan_in+fan_out); b = 0",
            initializers.glorot_uniform()),
    _scheme("glorot_normal", "W ~ truncated normal (+-2 sd), Var(W) = 2/(fan_in+fan_out); b = 0",
            initializers.glorot_normal()),
    _scheme("he_normal", "W ~ truncated normal (+-2 sd), Var(W) = 2/fan_in; b = 0",
            initializers.he_normal()),
    _scheme("he_uniform", "W ~ U(+-sqrt(6/fan_in)), Var(W) = 2/fan_in; b = 0",
            initializers.he_uniform()),
    _scheme("lecun_normal", "W ~ truncated normal (+-2 sd), Var(W) = 1/fan_in (Flax's default); b = 0",
            initializers.lecun_normal()),
    _scheme("lecun_uniform", "W ~ U(+-sqrt(3/fan_in)), Var(W) = 1/fan_in; b = 0",
            initializers.lecun_uniform()),
    _scheme("torch_default",
            "W ~ U(+-1/sqrt(fan_in)), Var(W) = 1/(3 fan_in); b ~ U(+-1/sqrt(fan_in)) (PyTorch's reset_parameters)",
            initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), torch_default_bias),
    _scheme("normal_0.01", "W ~ N(0, 0.01^2); b = 0", initializers.normal(0.01)),
    _scheme("orthogonal",
            "W reshaped to (kh*kw*c_in, c_out) has orthonormal columns (or rows) times gain sqrt(2); "
            "Var(W) = 2/max(fan_in, c_out); b = 0",
            initializers.orthogonal(math.sqrt(2.0))),
    _scheme("lsuv",
            "LSUV (Mishkin & Matas 2016): orthogonal (gain 1), then each layer's kernel rescaled in depth "
            "order until its output variance on a data batch is 1; b = 0",
            initializers.orthogonal(1.0), data_dependent=True),
]}

_ALIASES = {
    "glorot": "glorot_uniform", "xavier": "glorot_uniform", "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming": "he_normal", "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
    "flax_default": "lecun_normal",
    "pytorch": "torch_default",
}


def list_inits() -> list[str]:
  """The canonical scheme names (aliases resolve to these)."""
  return sorted(_SCHEMES)


def describe_inits() -> str:
  """One line per scheme with its aliases and formula (for --help)."""
  lines = []
  for name in list_inits():
    aliases = sorted(a for a, target in _ALIASES.items() if target == name)
    also = f" (also: {', '.join(aliases)})" if aliases else ""
    lines.append(f"{name}{also}: {_SCHEMES[name].formula}")
  return "\n".join(lines)


def get_init(name: str | InitScheme) -> InitScheme:
  """Returns the scheme called `name` (case-insensitive, aliases allowed).

  Raises:
    ValueError: for an unknown name, listing the valid choices.
  """
  if isinstance(name, InitScheme):
    return name
  key = str(name).strip().lower()
  key = _ALIASES.get(key, key)
  if key not in _SCHEMES:
    raise ValueError(f"unknown init scheme {name!r}; valid choices: "
                     f"{', '.join(list_inits())} (aliases: {', '.join(sorted(_ALIASES))})")
  return _SCHEMES[key]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
  """(fan_in, fan_out) of an HWIO conv kernel or an (in, out) dense kernel."""
  if len(shape) < 2:
    raise ValueError(f"a kernel has at least 2 dimensions, got shape {shape}")
  receptive_field = math.prod(shape[:-2])
  return shape[-2] * receptive_field, shape[-1] * receptive_field


def kernel_variance(scheme: InitScheme | str, shape: tuple[int, ...]) -> float:
  """The variance `scheme` gives a kernel of `shape` by its formula (for tests and diagnostics)."""
  scheme = get_init(scheme)
  fan_in, fan_out = fans(shape)
  return {
      "glorot_uniform": 2.0 / (fan_in + fan_out),
      "glorot_normal": 2.0 / (fan_in + fan_out),
      "he_normal": 2.0 / fan_in,
      "he_uniform": 2.0 / fan_in,
      "lecun_normal": 1.0 / fan_in,
      "lecun_uniform": 1.0 / fan_in,
      "torch_default": 1.0 / (3.0 * fan_in),
      "normal_0.01": 1e-4,
      # Orthonormal columns of length fan_in (or rows of length c_out).
      "orthogonal": 2.0 / max(fan_in, shape[-1]),
      "lsuv": 1.0 / max(fan_in, shape[-1]),
  }[scheme.name]


