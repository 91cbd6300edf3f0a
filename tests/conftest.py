"""Shared fixtures: kernel shapes of the d2l and paper variants, tiny IDX datasets, short runs.

Compiling GoogLeNet (mostly the "tiny" variant at 32x32) dominates most tests, and many compile the same
program: a persistent compilation cache (shared with the train.py subprocesses
the tests start, through the environment) compiles each program once per machine,
and XLA's cheapest optimization level (jax_disable_most_optimizations) compiles
it faster than the less optimized code loses on these tiny shapes (test_stall.py:
108 -> 66 CPU seconds). Neither changes what the programs compute, beyond float
rounding.
"""

import functools
import gzip
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "googlenet_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import GoogLeNet

# One CPU device in pytest's own processes (unless XLA_FLAGS asks for more), whichever
# test first runs an entry point's main() in-process: train.main would otherwise give this
# process one device per core (sharding.one_cpu_device_per_core) and every later test in
# it would run on those. The train.py processes the tests start choose as a user's would.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 1)


def abstract_variables(model, image_shape, train=False):
  """Variables of `model` for one image, as shapes only (no compute)."""
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                           jnp.zeros((1,) + image_shape), train=train))


@functools.cache
def initial_variables(image_size: int = 32, **model_fields):
  """GoogLeNet(**model_fields).init for one image with key 0, compiled once (eager init,
  op by op, is slower than compiling it); the same arrays for every test that asks."""
  model = GoogLeNet(**model_fields)
  x = jnp.zeros((1, image_size, image_size, 1))
  return jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()


def kernel_shapes(params) -> set[tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return {tuple(x.shape) for path, x in leaves if jax.tree_util.keystr(path).endswith("['kernel']")}


@pytest.fixture(scope="session")
def all_kernel_shapes():
  """Every distinct conv/dense kernel shape of the d2l and paper (with aux heads) variants."""
  d2l = abstract_variables(GoogLeNet(num_classes=10), (96, 96, 1))
  paper = abstract_variables(GoogLeNet(num_classes=1000, variant="paper", aux_logits=True),
                             (224, 224, 3))
  return sorted(kernel_shapes(d2l["params"]) | kernel_shapes(paper["params"]))


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  magic = {1: 0x801, 3: 0x803}[array.ndim]
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_idx_dir(tmp_path):
  """A Fashion-MNIST-shaped IDX dataset: 64 train and 20 test 28x28 images."""
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 64), ("t10k", 20)):
    write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
  return tmp_path


REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_subprocess(args, cwd=REPO_ROOT, module=None) -> subprocess.CompletedProcess:
  """`python train.py args` (or `python -m module args`) in a process of its own."""
  command = [sys.executable] + (["-m", module] if module else [str(REPO_ROOT / "train.py")]) + args
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def run_main(capfd, monkeypatch):
  """Runs an entry point's `main(argv)` the way its `__main__` does (through cli.run, from
  the repository root) in this process, and returns what a subprocess run would give:
  CompletedProcess(argv, exit code, stdout, stderr). A Python process per call costs
  ~2 s of imports; tests/test_cli.py checks once per entry point that a real process
  exits the same way."""
  from googlenet_jax import cli
  monkeypatch.chdir(REPO_ROOT)

  def run(main, argv):
    capfd.readouterr()  # only this call's output
    try:
      code = cli.run(lambda: main(argv))
    except SystemExit as e:  # argparse: --help and usage errors
      code = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)
  return run


def tiny_config(**overrides):
  """configs/default.py shrunk for tests of the training loop: synthetic data, 32x32,
  batch 16, the "tiny" GoogLeNet (one Inception block per stage, compiles 2-3x faster)."""
  from googlenet_jax import configuration
  config = configuration.load_config_file(REPO_ROOT / "configs" / "default.py")
  config.dataset = "synthetic"
  config.image_size = 32
  config.model.variant = "tiny"
  config.batch_size = 16
  config.eval_batch_size = 256
  config.steps = 4
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.init = "he_normal"
  config.optimizer.lr = 0.01
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  configuration.validate(config)
  return config


class SilentReporter:
  """A Reporter that remembers what it was told instead of printing it."""

  def __init__(self):
    self.train, self.eval, self.messages = [], [], []

  def message(self, text):
    self.messages.append(text)

  def start(self, step, total_steps, steps_per_epoch, description):
    self.start_step = step

  def log_train(self, step, epoch, metrics, lr, images_per_sec):
    self.train.append({"step": step, **metrics})

  def log_eval(self, step, epoch, metrics):
    self.eval.append({"step": step, **metrics})

  def finish(self, step, test_metrics, extra=None):
    return {"step": step, **test_metrics, **(extra or {})}


def train_short_d2l(init, tmp_path, **overrides):
  """12 steps of tiny_config (lr 0.01) on the full d2l GoogLeNet, stall check from step 8:
  the stall and LSUV tests show the lesson on the real network's depth. One config for
  all of them, so they share one compiled train step through the compilation cache.

  Returns (summary, the stall warnings printed, the logged train metrics).
  """
  from googlenet_jax.training import train_and_evaluate
  reporter = SilentReporter()
  config = tiny_config(**{"init": init, "steps": 12, "log_every_steps": 4, "stall_check_steps": 8,
                          "model.variant": "d2l", **overrides})
  summary = train_and_evaluate(config, str(tmp_path / init), reporter)
  return summary, [m for m in reporter.messages if "stalled" in m], reporter.train
