"""Several processes through jax.distributed: 2 processes x 2 CPU devices (gloo) train like
1 process x 4 devices, and resume from their checkpoint."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT

RUN_FLAGS = ["--dataset", "synthetic", "--variant", "tiny", "--image-size", "32", "--batch-size", "16",
             "--lr", "0.01", "--init", "he_normal", "--config.log_every_steps=1",
             "--config.checkpoint_every_steps=2", "--config.eval_batch_size=256"]


def env_with_devices(n: int, cache_dir) -> dict:
  # A compilation cache of this test's own: the two processes find the same programs
  # in it (none the first time, all of them when resuming), so neither reaches a
  # collective long after the other because it compiled what the other loaded.
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
          "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO_ROOT),
          "JAX_COMPILATION_CACHE_DIR": str(cache_dir)}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train(workdir, steps: int, extra=(), devices: int = 4) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, str(REPO_ROOT / "train.py"), *RUN_FLAGS, "--steps", str(steps),
       "--workdir", str(workdir), *extra], cwd=REPO_ROOT,
      env=env_with_devices(devices, workdir.parent / "jax_cache"),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_two_processes(workdir, steps: int) -> list[str]:
  """Runs processes 0 and 1 (2 devices each) to the end; returns their stderr."""
  port = free_port()
  procs = [train(workdir, steps, ["--coordinator-address", f"127.0.0.1:{port}",
                                  "--num-processes", "2", "--process-id", str(i)], devices=2)
           for i in range(2)]
  errs = [p.communicate(timeout=600)[1] for p in procs]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  return errs


def records(workdir, split: str) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == split]


def test_two_processes_match_one_and_resume(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  proc = train(single, 4)
  err = proc.communicate(timeout=600)[1]
  assert proc.returncode == 0, err[-3000:]
  errs = train_two_processes(multi, 4)
  assert "devices 4 x cpu in 2 processes" in errs[0] and errs[1].strip() == ""  # only 0 reports

  one, two = records(single, "train"), records(multi, "train")
  assert [r["step"] for r in two] == [1, 2, 3, 4]  # written once, by process 0
  np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-4)
  (test_one,), (test_two,) = records(single, "test"), records(multi, "test")
  assert test_two["count"] == test_one["count"] == 512  # every test example once
  assert abs(test_two["accuracy"] - test_one["accuracy"]) <= 1 / 512

  errs = train_two_processes(multi, 6)  # the same run, longer: resumes from step 4
  assert "resumed from the checkpoint at step 4" in errs[0]
  assert [r["step"] for r in records(multi, "train")][-2:] == [5, 6]
  assert json.loads((multi / "summary.json").read_text())["step"] == 6
