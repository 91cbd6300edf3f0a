"""train.py and evaluate answer bad input with one clear line and exit code 2, before any work.

The cases run each entry point's main() in this process (the `run_main` fixture);
`test_a_real_process_exits_2_with_one_line` checks every entry point once as its own process.
"""

import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import train
from googlenet_jax import evaluate
from tests.conftest import REPO_ROOT, run_subprocess, write_idx

BAD_TRAIN_ARGS = [
    (["--init", "glorious"], "unknown init scheme 'glorious'"),
    (["--init", "normal:std=abc"], "std must be a number, got 'abc'; normal takes std=float > 0"),
    (["--init", "he_normal:mode=sideways"], "bad value 'sideways' for mode"),
    (["--init", "orthogonal:gain=1,depth=2"], "unknown parameter 'depth'; orthogonal takes gain"),
    (["--dataset", "fashon_mnist"], "unknown dataset 'fashon_mnist'"),
    (["--variant", "resnet"], "unknown variant 'resnet'"),
    (["--activation", "swish"], "unknown activation 'swish'"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--lr", "0"], "learning rate must be positive"),
    (["--lr", "-0.1"], "learning rate must be positive"),
    (["--batch-size", "0"], "batch_size must be positive"),
    (["--batch-size", "-8"], "batch_size must be positive"),
    (["--image-size", "8"], "image_size 8 is too small"),
    (["--epochs", "-1"], "must not be negative"),
    (["--config.optimizer.name=lbfgs"], "unknown optimizer 'lbfgs'"),
    (["--config.optimizer.schedule=linear"], "unknown schedule 'linear'"),
    (["--config.optimizer.lr=fast"], "bad value for optimizer.lr"),
    (["--config.optimizer.momentum=1.5"], "momentum must be in"),
    (["--config.model.batch_norm=maybe"], "bad value for model.batch_norm"),
    (["--config.no_such_field=1"], "unknown config field 'no_such_field'"),
    (["--config.model.depth=3"], "unknown config field 'model.depth'"),
    (["--frobnicate"], "unrecognized argument '--frobnicate'"),
    (["--config", "configs/nope.py"], "config file configs/nope.py does not exist"),
    (["--epochs", "two"], "invalid int value"),
    (["--workdir", "/etc/passwd/run"], "is not writable"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], "does not hold the mnist IDX files"),
    (["--dataset", "tfds:not_a_dataset_xyz"], "TFDS has no dataset 'not_a_dataset_xyz'"),
]


def snapshot(directory: pathlib.Path) -> dict:
  return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,message", BAD_TRAIN_ARGS, ids=[" ".join(a) for a, _ in BAD_TRAIN_ARGS])
def test_bad_train_input(args, message, tmp_path, run_main):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("user data")
  before = snapshot(workdir)
  if "--workdir" not in args:
    args = args + ["--workdir", str(workdir)]
  result = run_main(train.main, args)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert message in lines[0]
  assert snapshot(workdir) == before


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated or corrupt"),
    ("magic", "not an IDX file"),
    ("missing", "no t10k-images-idx3-ubyte.gz"),
])
def test_bad_data_dir(tiny_idx_dir, tmp_path, damage, message, run_main):
  path = tiny_idx_dir / "t10k-images-idx3-ubyte.gz"
  if damage == "missing":
    path.unlink()
  elif damage == "magic":
    write_idx(path, np.zeros(20))  # a labels file where images belong: wrong magic
  else:
    path.write_bytes(path.read_bytes()[:100])
  result = run_main(train.main, ["--data-dir", str(tiny_idx_dir), "--workdir", str(tmp_path / "w")])
  assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


def test_evaluate_bad_workdir(tmp_path, run_main):
  result = run_main(evaluate.main, ["--workdir", str(tmp_path)])
  assert result.returncode == 2 and "not a train.py workdir" in result.stderr


def test_help_documents_flags_and_inits(run_main):
  result = run_main(train.main, ["--help"])
  assert result.returncode == 0
  for text in ("--init", "--config.optimizer.lr", "torch_default", "U(+-1/sqrt(fan_in))", "--batch-norm"):
    assert text in result.stdout


def _one_clear_line(result, message):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and "Traceback" not in result.stderr and message in lines[0], result.stderr[-2000:]


@pytest.mark.parametrize("kind,message", [
    ("other_config", "holds a run with another config: model.variant ('paper' in the checkpoint"),
    ("no_config", "holds checkpoints but no config.json"),
])
def test_workdir_of_another_run_is_refused_untouched(kind, message, tmp_path, run_main):
  from googlenet_jax import configuration
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "200").mkdir(parents=True)
  (workdir / "checkpoints" / "200" / "state").write_bytes(b"another run's weights")
  if kind == "other_config":
    other = configuration.load_config_file(REPO_ROOT / "configs" / "default.py")
    other.model.variant = "paper"
    other.model.dtype = "float32"  # as train.py saves it on the CPU ("auto" resolved)
    (workdir / "config.json").write_text(json.dumps(other.to_dict()))
  before = snapshot(workdir)
  _one_clear_line(run_main(train.main, ["--workdir", str(workdir)]), message)
  assert snapshot(workdir) == before


BAD_BENCHMARK_ARGS = [
    (["--batch-size", "0"], "must be > 0"),
    (["--image-size", "8"], "--image-size must be >= 32"),
    (["--dtype", "float8"], "invalid choice: 'float8'"),
    (["--steps", "x"], "is not a number"),
]


@pytest.mark.parametrize("args,message", BAD_BENCHMARK_ARGS, ids=[" ".join(a) for a, _ in BAD_BENCHMARK_ARGS])
def test_bad_benchmark_input(args, message):
  result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "benchmark_step.py"), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  _one_clear_line(result, message)


def test_evaluate_workdir_without_checkpoint(tmp_path, run_main):
  from googlenet_jax import configuration
  config = configuration.load_config_file(REPO_ROOT / "configs" / "default.py")
  config.dataset, config.image_size, config.model.variant = "synthetic", 32, "tiny"
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
  _one_clear_line(run_main(evaluate.main, ["--workdir", str(tmp_path)]), "has no checkpoint to evaluate")


@pytest.mark.parametrize("module,args,message", [
    (None, ["--init", "glorious", "--workdir", "{out}"], "unknown init scheme 'glorious'"),
    ("googlenet_jax.evaluate", ["--workdir", "{out}"], "not a train.py workdir"),
    ("googlenet_jax.diagnose", ["--variant", "resnet", "--out", "{out}"], "unknown variant 'resnet'"),
    ("googlenet_jax.sweep", ["--log-every", "0", "--out", "{out}"], "--log-every must be positive"),
])
def test_a_real_process_exits_2_with_one_line(module, args, message, tmp_path):
  """Each entry point's `__main__` turns a user error into exit code 2 and one line."""
  out = tmp_path / "out"
  _one_clear_line(run_subprocess([a.replace("{out}", str(out)) for a in args], module=module), message)
  assert not out.exists()
