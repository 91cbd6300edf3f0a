"""Named weight-initialization schemes, each defined once and handed to every layer.

Fans follow jax.nn.initializers and PyTorch: for an HWIO conv kernel
fan_in = kh*kw*c_in and fan_out = kh*kw*c_out; for a dense (in, out) kernel
fan_in = in and fan_out = out.

A scheme is a kernel initializer (the ``jax.nn.initializers`` signature
``(key, shape, dtype)``) plus a bias initializer that also receives the layer's
fan-in as a keyword, ``bias_init(key, shape, dtype, fan_in=...)``: PyTorch's
default bias U(+-1/sqrt(fan_in)) needs it and Flax only passes the bias shape.

Schemes take optional parameters in a spec string, ``name:key=value,...``:
``normal:std=0.02``, ``uniform:scale=0.05``, ``he_normal:mode=fan_out``,
``orthogonal:gain=1.0``, ``variance_scaling:scale=2,mode=fan_avg,distribution=uniform``.
A plain name means the scheme with its defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers

Initializer = Callable[..., jax.Array]
BiasInitializer = Callable[..., jax.Array]  # (key, shape, dtype, *, fan_in) -> Array

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")
# jax's truncated_normal variance_scaling draws from a normal cut at +-2 of its sd,
# scaled by 1/0.8796 so the variance stays scale/n: the bound is 2/0.8796 sd.
TRUNCATED_NORMAL_BOUND_SD = 2 / 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class InitScheme:
  """A named init scheme: the kernel's distribution and the bias's.

  Attributes:
    name: canonical spec (`list_inits()` names, plus any non-default parameters,
      e.g. "he_normal:mode=fan_out"); `get_init(name)` gives this scheme back.
    formula: the distribution in one line (shown by `--help` and reports).
    kernel_init: ``(key, shape, dtype) -> Array`` for conv (HWIO) and dense kernels.
    bias_init: ``(key, shape, dtype, *, fan_in) -> Array``.
    variance: ``shape -> Var(W)`` by the formula (for tests and diagnostics).
    distribution: "uniform", "truncated_normal", "normal" or "orthogonal".
    data_dependent: True when the scheme must be finished on a batch of data
      after `model.init` (LSUV); the kernels here are only its starting point.
  """

  name: str
  formula: str
  kernel_init: Initializer
  bias_init: BiasInitializer
  variance: Callable[[tuple[int, ...]], float]
  distribution: str
  data_dependent: bool = False

  def bound(self, shape: tuple[int, ...]) -> float | None:
    """The largest |W| the distribution can draw (None when unbounded)."""
    sd = math.sqrt(self.variance(shape))
    if self.distribution == "uniform":
      return math.sqrt(3.0) * sd
    if self.distribution == "truncated_normal":
      return TRUNCATED_NORMAL_BOUND_SD * sd
    return None


def zeros_bias(key, shape, dtype=jnp.float32, *, fan_in: int) -> jax.Array:
  """Bias = 0 (every scheme except PyTorch's default)."""
  del key, fan_in
  return jnp.zeros(shape, dtype)


def torch_default_bias(key, shape, dtype=jnp.float32, *, fan_in: int) -> jax.Array:
  """PyTorch's Conv2d/Linear bias: U(+-1/sqrt(fan_in)), Var = 1/(3 fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
  """(fan_in, fan_out) of an HWIO conv kernel or an (in, out) dense kernel."""
  if len(shape) < 2:
    raise ValueError(f"a kernel has at least 2 dimensions, got shape {shape}")
  receptive_field = math.prod(shape[:-2])
  return shape[-2] * receptive_field, shape[-1] * receptive_field


def _fan(shape, mode: str) -> float:
  fan_in, fan_out = fans(shape)
  return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


# --- The scheme families: a builder and its parameters' defaults. ---

def _variance_scaling(scale: float, mode: str, distribution: str):
  """Var(W) = scale / n, n = fan_in, fan_out or (fan_in + fan_out)/2 (jax's variance_scaling)."""
  var = {"fan_in": f"{scale:g}/fan_in", "fan_out": f"{scale:g}/fan_out",
         "fan_avg": f"{2 * scale:g}/(fan_in+fan_out)"}[mode]
  drawn = {"uniform": "U(+-sqrt(3 Var(W)))", "truncated_normal": "truncated normal (+-2 sd)",
           "normal": "N(0, Var(W))"}[distribution]
  formula = f"W ~ {drawn}, Var(W) = {var}; b = 0"
  return dict(formula=formula, kernel_init=initializers.variance_scaling(scale, mode, distribution),
              variance=lambda shape: scale / _fan(shape, mode), distribution=distribution)


def _torch_default():
  """PyTorch's reset_parameters: kaiming_uniform_(a=sqrt(5)) = variance_scaling(1/3, fan_in, uniform)."""
  scheme = _variance_scaling(1.0 / 3.0, "fan_in", "uniform")
  scheme.update(formula="W ~ U(+-1/sqrt(fan_in)), Var(W) = 1/(3 fan_in); b ~ U(+-1/sqrt(fan_in)) "
                        "(PyTorch's reset_parameters)", bias_init=torch_default_bias)
  return scheme


def _normal(std: float):
  return dict(formula=f"W ~ N(0, {std:g}^2); b = 0", kernel_init=initializers.normal(std),
              variance=lambda shape: std ** 2, distribution="normal")


def _uniform(scale: float):
  def kernel_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return dict(formula=f"W ~ U(+-{scale:g}), Var(W) = {scale:g}^2/3; b = 0", kernel_init=kernel_init,
              variance=lambda shape: scale ** 2 / 3, distribution="uniform")


def _orthogonal(gain: float):
  # Orthonormal columns of length fan_in (or rows of length c_out) times the gain.
  shown = "sqrt(2)" if math.isclose(gain, math.sqrt(2.0)) else _format(gain)
  return dict(formula=f"W reshaped to (kh*kw*c_in, c_out) has orthonormal columns (or rows) "
                      f"times gain {shown}; Var(W) = {gain ** 2:.4g}/max(fan_in, c_out); b = 0",
              kernel_init=initializers.orthogonal(gain),
              variance=lambda shape: gain ** 2 / max(fans(shape)[0], shape[-1]),
              distribution="orthogonal")


def _lsuv():
  scheme = _orthogonal(1.0)
  scheme.update(formula="LSUV (Mishkin & Matas 2016): orthogonal (gain 1), then each layer's kernel "
                        "rescaled in depth order until its output variance on a data batch is 1; b = 0",
                data_dependent=True)
  return scheme


@dataclasses.dataclass(frozen=True)
class _Family:
  build: Callable[..., dict]
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


def _vs_family(scale, mode, distribution) -> _Family:
  return _Family(_variance_scaling, {"scale": scale, "mode": mode, "distribution": distribution})


_FAMILIES: dict[str, _Family] = {
    "glorot_uniform": _vs_family(1.0, "fan_avg", "uniform"),
    "glorot_normal": _vs_family(1.0, "fan_avg", "truncated_normal"),
    "he_normal": _vs_family(2.0, "fan_in", "truncated_normal"),
    "he_uniform": _vs_family(2.0, "fan_in", "uniform"),
    "lecun_normal": _vs_family(1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _vs_family(1.0, "fan_in", "uniform"),
    "variance_scaling": _vs_family(1.0, "fan_in", "truncated_normal"),
    "torch_default": _Family(_torch_default),
    "normal_0.01": _Family(lambda: _normal(0.01)),
    "normal": _Family(_normal, {"std": 0.01}),
    "uniform": _Family(_uniform, {"scale": 0.01}),
    "orthogonal": _Family(_orthogonal, {"gain": math.sqrt(2.0)}),
    "lsuv": _Family(_lsuv),
}
_CHOICES = {"mode": MODES, "distribution": DISTRIBUTIONS}

_ALIASES = {
    "glorot": "glorot_uniform", "xavier": "glorot_uniform", "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming": "he_normal", "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
    "flax_default": "lecun_normal",
    "pytorch": "torch_default",
}


def list_inits() -> list[str]:
  """The canonical scheme names (aliases resolve to these)."""
  return sorted(_FAMILIES)


def _describe_parameters(family: _Family) -> str:
  if not family.defaults:
    return "no parameters"
  return ", ".join(f"{key}={'|'.join(_CHOICES[key]) if key in _CHOICES else 'float > 0'} "
                   f"(default {_format(value)})" for key, value in family.defaults.items())


def describe_inits() -> str:
  """One line per scheme with its aliases, formula and parameters (for --help)."""
  lines = []
  for name in list_inits():
    aliases = sorted(a for a, target in _ALIASES.items() if target == name)
    also = f" (also: {', '.join(aliases)})" if aliases else ""
    family = _FAMILIES[name]
    params = f" [{_describe_parameters(family)}]" if family.defaults else ""
    lines.append(f"{name}{also}: {get_init(name).formula}{params}")
  return "\n".join(lines)


def _format(value) -> str:
  """Shortest text that parses back to the same value: 2.0 -> "2", 0.02 -> "0.02"."""
  if not isinstance(value, float):
    return str(value)
  text = repr(value)
  return text[:-2] if text.endswith(".0") else text


def _parse_parameter(spec: str, family_name: str, family: _Family, item: str) -> tuple[str, Any]:
  def fail(problem):
    raise ValueError(f"init {spec!r}: {problem}; {family_name} takes {_describe_parameters(family)}")

  key, sep, text = (part.strip() for part in item.partition("="))
  if not sep or not key:
    fail(f"expected key=value, got {item!r}")
  if key not in family.defaults:
    fail(f"unknown parameter {key!r}")
  if key in _CHOICES:
    if text not in _CHOICES[key]:
      fail(f"bad value {text!r} for {key}")
    return key, text
  try:
    value = float(text)
  except ValueError:
    fail(f"{key} must be a number, got {text!r}")
  if not (math.isfinite(value) and value > 0):
    fail(f"{key} must be a finite number > 0, got {text!r}")
  return key, value


def get_init(name: str | InitScheme) -> InitScheme:
  """Returns the scheme named by a spec: a name (case-insensitive, aliases allowed),
  optionally followed by ":key=value,..." parameters.

  Raises:
    ValueError: for an unknown name, or an unknown or malformed parameter; the
      message lists the valid choices.
  """
  if isinstance(name, InitScheme):
    return name
  spec = str(name).strip()
  base, colon, param_text = spec.partition(":")
  key = base.strip().lower()
  key = _ALIASES.get(key, key)
  if key not in _FAMILIES:
    raise ValueError(f"unknown init scheme {base.strip()!r}; valid choices: "
                     f"{', '.join(list_inits())} (aliases: {', '.join(sorted(_ALIASES))})")
  family = _FAMILIES[key]
  params = dict(family.defaults)
  given = [item for item in param_text.split(",") if item.strip()]
  if colon and not given:
    raise ValueError(f"init {spec!r}: nothing after ':'; {key} takes {_describe_parameters(family)}")
  for item in given:
    k, v = _parse_parameter(spec, key, family, item)
    params[k] = v
  changed = [f"{k}={_format(v)}" for k, v in params.items() if v != family.defaults[k]]
  canonical = f"{key}:{','.join(changed)}" if changed else key
  return InitScheme(name=canonical, **{"bias_init": zeros_bias, **family.build(**params)})


def split_specs(text: str) -> list[str]:
  """Splits a comma-separated list of specs whose own parameters are comma-separated too:
  "normal:std=0.01,variance_scaling:scale=2,mode=fan_avg,he_normal" -> 3 specs
  (a piece with "=" and no ":" continues the previous spec)."""
  specs: list[str] = []
  for piece in (p.strip() for p in text.split(",")):
    if not piece:
      continue
    if specs and "=" in piece and ":" not in piece:
      specs[-1] += "," + piece
    else:
      specs.append(piece)
  return specs


def slug(name: str) -> str:
  """A file-name-safe form of a scheme's canonical name ("he_normal:mode=fan_out" -> "he_normal-mode=fan_out")."""
  return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", name)


def kernel_variance(scheme: InitScheme | str, shape: tuple[int, ...]) -> float:
  """The variance `scheme` gives a kernel of `shape` by its formula (for tests and diagnostics)."""
  return get_init(scheme).variance(tuple(shape))
