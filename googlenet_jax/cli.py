"""Command-line plumbing shared by train.py, evaluate, diagnose and sweep.

A user's mistake ends the program with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import ml_collections

from googlenet_jax import checkpointing, configuration, inits, input_pipeline, sharding, stall
from googlenet_jax.interrupts import TrainingInterrupted

USAGE_ERROR = 2
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.py"


class UserError(Exception):
  """Wrong input from the user: printed as one line, exit code 2."""


USER_ERRORS = (UserError, configuration.ConfigError, input_pipeline.DataError,
               checkpointing.CheckpointError, sharding.ShardingError)


def run(main) -> int:
  """Calls main(); a user error becomes one line on stderr and exit code 2, a run that
  had to stop (NaN/Inf, a stall with --fail-on-stall) one line and exit code 3, a run
  stopped by SIGINT/SIGTERM (after its checkpoint) one line and 128 + the signal number."""
  try:
    return main() or 0
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_ERROR
  except stall.TrainingStopped as e:
    print(f"error: {e}", file=sys.stderr)
    return stall.STOPPED_EXIT_CODE
  except TrainingInterrupted as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


class Parser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(USAGE_ERROR, f"error: {message} (see --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
  """The flags that override a config file's fields (shared by train.py and sweep)."""
  parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                      help="Python file with get_config() (default: configs/default.py)")
  parser.add_argument("--init", help="init scheme (see the list below)")
  parser.add_argument("--dataset", help="fashion_mnist, mnist, synthetic or tfds:<name>")
  parser.add_argument("--data-dir", help="directory holding the dataset's files")
  parser.add_argument("--epochs", type=int)
  parser.add_argument("--steps", type=int, help="stop after this many steps (overrides --epochs)")
  parser.add_argument("--batch-size", type=int)
  parser.add_argument("--lr", type=float, help="learning rate (config.optimizer.lr)")
  parser.add_argument("--image-size", type=int, help="images are resized to this square size")
  parser.add_argument("--seed", type=int)
  parser.add_argument("--variant", help="d2l, paper, or tiny (d2l with one Inception block per "
                      "stage, for smoke tests)")
  parser.add_argument("--batch-norm", action="store_true", default=None,
                      help="conv + BatchNorm + ReLU everywhere")
  parser.add_argument("--activation", help="relu, tanh, sigmoid, gelu or leaky_relu")
  parser.add_argument("--dtype", help="computation dtype: float32, bfloat16 or auto (the "
                      "default: bfloat16 on TPU/GPU, float32 on CPU)")
  parser.add_argument("--fail-on-stall", action="store_true", default=None,
                      help="stop with exit code 3 when training stalls at chance")


FLAG_FIELDS = {
    "init": "init", "dataset": "dataset", "data_dir": "data_dir", "epochs": "epochs",
    "steps": "steps", "batch_size": "batch_size", "lr": "optimizer.lr",
    "image_size": "image_size", "seed": "seed", "variant": "model.variant",
    "batch_norm": "model.batch_norm", "activation": "model.activation", "dtype": "model.dtype",
    "fail_on_stall": "fail_on_stall",
}

CONFIG_HELP = ("Any config field can be set with --config.<field>=<value>, for example "
               "--config.optimizer.lr=0.05 or --config.optimizer.name=nesterov.\n\n"
               "Init schemes:\n" + inits.describe_inits())


def build_config(args: argparse.Namespace, extra: list[str]) -> ml_collections.ConfigDict:
  """The config file, then --config.x.y=v overrides, then the named flags; validated."""
  config = configuration.load_config_file(args.config)
  for item in extra:
    if not item.startswith("--config.") or "=" not in item:
      raise UserError(f"unrecognized argument {item!r} (see --help)")
    dotted, value = item[len("--config."):].split("=", 1)
    configuration.override(config, dotted, value)
  for flag, field in FLAG_FIELDS.items():
    value = getattr(args, flag, None)
    if value is not None:
      configuration.override(config, field, str(value))
  configuration.validate(config)
  config.init = inits.get_init(config.init).name
  return config


def parse_init_list(text: str, flag: str) -> list[str]:
  """Canonical scheme specs from "a,b:k=v,c" (aliases and parameters allowed, repeats
  dropped); UserError if unknown or malformed."""
  schemes = []
  for name in inits.split_specs(text):
    try:
      scheme = inits.get_init(name).name
    except ValueError as e:
      raise UserError(f"{flag}: {e}") from None
    if scheme not in schemes:
      schemes.append(scheme)
  if not schemes:
    raise UserError(f"{flag} names no scheme; valid choices: {', '.join(inits.list_inits())}")
  return schemes


def prepare_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test_{os.getpid()}"  # one per process: several may share it
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UserError(f"workdir {workdir} is not writable: {e.strerror}") from None
  return workdir
