"""Python config files (`get_config()` -> ml_collections.ConfigDict), overrides, validation."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

from googlenet_jax import inits
from googlenet_jax.layers import ACTIVATIONS
from googlenet_jax.models import MIN_IMAGE_SIZE, VARIANTS

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
DTYPES = ("auto", "float32", "bfloat16")  # auto: bfloat16 on TPU/GPU, float32 on CPU

# Fields a resumed run may change; any other difference from the checkpoint's
# config means another run, and is refused.
RESUMABLE_FIELDS = ("epochs", "steps", "log_every_steps", "checkpoint_every_steps",
                    "keep_checkpoints", "eval_batch_size", "data_dir", "workdir", "fail_on_stall",
                    "stall_check_steps", "stall_loss_band", "stall_logit_std")


class ConfigError(ValueError):
  """A config file or value that cannot be used; the message names it."""


def load_config_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise ConfigError(f"config file {path} failed to load: {type(e).__name__}: {e}") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config() function")
  return module.get_config()


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true or false, got {text!r}")
  if isinstance(current, (int, float)):
    return type(current)(float(text) if isinstance(current, float) else int(text))
  return text


def override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets config.<dotted> from a command-line string, keeping the field's type."""
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"unknown config field {dotted!r}")
  if leaf not in node:
    raise ConfigError(f"unknown config field {dotted!r}; fields here: {', '.join(sorted(node.keys()))}")
  try:
    node[leaf] = _parse_value(text, node[leaf])
  except (ValueError, TypeError) as e:
    raise ConfigError(f"bad value for {dotted}: {e}") from None


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails with one ConfigError naming the first bad value."""
  def check(ok, message):
    if not ok:
      raise ConfigError(message)

  try:
    inits.get_init(config.init)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  m, o = config.model, config.optimizer
  check(m.variant in VARIANTS, f"unknown variant {m.variant!r}; valid choices: {', '.join(VARIANTS)}")
  check(m.activation in ACTIVATIONS,
        f"unknown activation {m.activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
  check(m.dtype in DTYPES, f"unknown dtype {m.dtype!r}; valid choices: {', '.join(DTYPES)}")
  check(0.0 <= m.dropout_rate < 1.0, f"dropout_rate must be in [0, 1), got {m.dropout_rate}")
  check(o.name in OPTIMIZERS, f"unknown optimizer {o.name!r}; valid choices: {', '.join(OPTIMIZERS)}")
  check(o.schedule in SCHEDULES, f"unknown schedule {o.schedule!r}; valid choices: {', '.join(SCHEDULES)}")
  check(o.lr > 0, f"learning rate must be positive, got {o.lr}")
  check(0.0 <= o.momentum < 1.0, f"momentum must be in [0, 1), got {o.momentum}")
  check(o.weight_decay >= 0, f"weight_decay must be >= 0, got {o.weight_decay}")
  check(0.0 <= o.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {o.label_smoothing}")
  check(o.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {o.warmup_epochs}")
  for field in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints", "stall_check_steps", "stall_loss_band", "stall_logit_std"):
    check(config[field] > 0, f"{field} must be positive, got {config[field]}")
  check(config.epochs >= 0 and config.steps >= 0, "epochs and steps must not be negative")
  check(config.epochs > 0 or config.steps > 0, "epochs or steps must be positive")
  check(config.image_size >= MIN_IMAGE_SIZE,
        f"image_size {config.image_size} is too small: GoogLeNet halves it five times, so it "
        f"needs at least {MIN_IMAGE_SIZE}")
  if m.aux_logits:
    check(config.image_size >= 80, f"image_size {config.image_size} is too small for the aux "
          "heads (their 5x5 pool needs at least 80x80 input)")


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return config.to_dict()


def incompatible_fields(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """Dotted names of the fields that differ between two config dicts, except resumable ones."""
  diffs = []
  for key in sorted(set(saved) | set(current)):
    name = f"{prefix}{key}"
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += incompatible_fields(a, b, f"{name}.")
    elif a != b and name not in RESUMABLE_FIELDS:
      diffs.append(f"{name} ({a!r} in the checkpoint, {b!r} now)")
  return diffs
