"""No lost training: kill -9 and resume is bitwise identical, SIGTERM checkpoints, corrupt
checkpoints are caught, divergence stops the run (tiny GoogLeNet on synthetic data)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from googlenet_jax import checkpointing, sharding, stall, training
from tests.conftest import REPO_ROOT, SilentReporter, tiny_config

STEPS = 24
RUN_FLAGS = ["--dataset", "synthetic", "--variant", "tiny", "--image-size", "32", "--batch-size", "16",
             "--steps", str(STEPS), "--lr", "0.01", "--init", "he_normal",
             "--config.checkpoint_every_steps=3", "--config.log_every_steps=1",
             "--config.eval_batch_size=512"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Subprocess environment with a shared persistent compilation cache (each run compiles once)."""
  cache = tmp_path_factory.mktemp("jax_cache")
  return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "PYTHONPATH": str(REPO_ROOT)}


def start(workdir, env):
  return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *RUN_FLAGS,
                           "--workdir", str(workdir)], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(workdir, env) -> subprocess.CompletedProcess:
  proc = start(workdir, env)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def last_logged_step(workdir: pathlib.Path) -> int:
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return 0
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
  return max(steps, default=0)


def checkpoint_being_written(workdir: pathlib.Path) -> bool:
  """Orbax writes into <step>.orbax-checkpoint-tmp* and renames it when the save is complete."""
  directory = workdir / "checkpoints"
  return directory.is_dir() and any("tmp" in p.name for p in directory.iterdir())


def stop_at(workdir, env, step: int | str, signum: int) -> tuple[int, subprocess.Popen]:
  """Starts a run and sends `signum` once it has logged `step` (or, for step="during save",
  while a checkpoint is half-written); returns (the last step logged then, the process)."""
  proc = start(workdir, env)
  deadline = time.monotonic() + 300
  reached = ((lambda: checkpoint_being_written(workdir)) if step == "during save"
             else (lambda: last_logged_step(workdir) >= step))
  while not reached():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.monotonic() < deadline, "the run did not reach the kill point in time"
    time.sleep(0.001)
  logged = last_logged_step(workdir)
  proc.send_signal(signum)
  proc.wait(timeout=300)
  return logged, proc


def final_fingerprint(workdir: pathlib.Path) -> str:
  manager = ocp.CheckpointManager(workdir.absolute() / "checkpoints")
  meta = manager.restore(STEPS, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  manager.close()
  return meta["fingerprint"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  workdir = tmp_path_factory.mktemp("reference")
  run = finish(workdir, env)
  # Like a user's, these runs split the batch over one CPU device per core that divides it.
  assert f"devices {sharding.cpu_devices_for(16)} x cpu" in run.stderr
  return final_fingerprint(workdir)


@pytest.mark.parametrize("kill_step", [2, "during save", 10, 19])
def test_kill_9_then_resume_is_bitwise_identical(kill_step, reference, env, tmp_path):
  workdir = tmp_path / "run"
  logged, proc = stop_at(workdir, env, kill_step, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  assert logged < STEPS, "the run finished before the kill"
  complete = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  resumed = finish(workdir, env)
  if complete:
    assert f"resumed from the checkpoint at step {max(complete)}" in resumed.stderr, resumed.stderr[-2000:]
  assert final_fingerprint(workdir) == reference  # params, optimizer state, step and RNG


def test_sigterm_checkpoints_the_current_step_and_resumes(reference, env, tmp_path):
  workdir = tmp_path / "run"
  _, proc = stop_at(workdir, env, 5, signal.SIGTERM)
  err = proc.stderr.read()
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  message = err.strip().splitlines()[-1]
  assert message.startswith("stopped by SIGTERM at step ") and "run the same command" in message
  stopped_at = int(message.split("at step ")[1].split(":")[0])
  assert (workdir / "checkpoints" / str(stopped_at)).is_dir()
  assert "Traceback" not in err
  resumed = finish(workdir, env)
  assert f"resumed from the checkpoint at step {stopped_at}" in resumed.stderr
  assert final_fingerprint(workdir) == reference


def _checkpointed_run(workdir, steps=4):
  training.train_and_evaluate(tiny_config(steps=steps), str(workdir), SilentReporter())


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["garble", "truncate"])
def test_corrupt_checkpoint_falls_back_to_the_previous_one(damage, tmp_path):
  workdir = tmp_path / "run"
  _checkpointed_run(workdir)  # checkpoints 2 and 4
  victim = _largest_file(workdir / "checkpoints" / "4")
  data = bytearray(victim.read_bytes())
  if damage == "garble":
    for i in range(len(data) // 3, len(data) // 3 + 64):
      data[i] ^= 0xFF
  else:
    data = data[:len(data) // 2]
  victim.write_bytes(bytes(data))
  reporter = SilentReporter()
  summary = training.train_and_evaluate(tiny_config(steps=6), str(workdir), reporter)
  warnings = [m for m in reporter.messages if "checkpoint 4" in m]
  assert len(warnings) == 1 and ("corrupt" in warnings[0] or "cannot be restored" in warnings[0])
  assert reporter.start_step == 2 and summary["step"] == 6
  assert (workdir / checkpointing.CORRUPT_DIR / "4").is_dir()


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
  workdir = tmp_path / "run"
  _checkpointed_run(workdir, steps=2)
  victim = _largest_file(workdir / "checkpoints" / "2")
  victim.write_bytes(victim.read_bytes()[:10])
  with pytest.raises(checkpointing.CheckpointError, match="none of the checkpoints"):
    training.train_and_evaluate(tiny_config(steps=4), str(workdir), SilentReporter())


def test_fingerprint_sees_a_single_changed_value():
  state = {"w": np.zeros((3, 3), np.float32), "rng": jax.random.key(0)}
  changed = {"w": state["w"].copy(), "rng": state["rng"]}
  changed["w"][1, 1] = 1e-30
  assert checkpointing.fingerprint(state) == checkpointing.fingerprint(
      {"w": state["w"].copy(), "rng": jax.random.key(0)})
  assert checkpointing.fingerprint(state) != checkpointing.fingerprint(changed)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  config = tiny_config(steps=12, log_every_steps=1, checkpoint_every_steps=1,
                       **{"optimizer.lr": 50.0})
  with pytest.raises(stall.TrainingDiverged, match=r"NaN/Inf at step \d+ .*last finite loss.*--lr"):
    training.train_and_evaluate(config, str(workdir), SilentReporter())
  checkpointer = checkpointing.Checkpointer(workdir)
  step = checkpointer.latest_step()
  assert step is not None
  run = training.setup_run(config, training.input_pipeline.load_dataset("synthetic"),
                           training.sharding.make_mesh())
  chex.assert_tree_all_finite(checkpointer.restore(step, run.state).params)
  checkpointer.close()
