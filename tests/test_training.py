"""The jitted train step, data parallelism, checkpoints and the training loop (tiny settings)."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import checkpointing, input_pipeline, sharding, training
from tests.conftest import REPO_ROOT, SilentReporter, tiny_config


@pytest.fixture(scope="module")
def tiny_run():
  config = tiny_config()
  dataset = input_pipeline.load_dataset("synthetic")
  mesh = sharding.make_mesh()
  return config, dataset, mesh, training.setup_run(config, dataset, mesh)


def test_train_step_lowers_the_loss_on_a_batch(tiny_run):
  config, dataset, mesh, run = tiny_run
  step = training.make_train_step(run.model, run.tx, config.image_size)
  images, labels = sharding.put_batch((dataset.train_images[:16], dataset.train_labels[:16]), mesh)
  state = jax.tree.map(jnp.copy, run.state)  # The step donates its input.
  losses = []
  for _ in range(6):
    state, metrics = step(state, images, labels)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 0.05, losses
  assert int(state.step) == 6
  chex.assert_tree_all_finite(state.params)


def test_eval_counts_every_example_once(tiny_run):
  config, dataset, mesh, run = tiny_run
  eval_step = training.make_eval_step(run.model, config.image_size)
  n = 300  # Not a multiple of the batch size: the last batch is padded and masked.
  metrics, counts = training.evaluate(eval_step, run.state, dataset.test_images[:n],
                                      dataset.test_labels[:n], 256, mesh)
  logits = run.model.apply({"params": run.state.params}, input_pipeline.preprocess(
      jnp.asarray(dataset.test_images[:n]), config.image_size), train=False)
  predictions = np.asarray(jnp.argmax(logits, -1))
  expected = np.zeros((10, 10), np.int64)
  np.add.at(expected, (dataset.test_labels[:n], predictions), 1)
  assert metrics["count"] == n and counts.sum() == n  # the padding is not counted
  np.testing.assert_array_equal(counts, expected)
  assert metrics["accuracy"] == pytest.approx(np.trace(counts) / n)


def test_checkpoint_round_trip(tiny_run, tmp_path):
  _, _, _, run = tiny_run
  checkpointer = checkpointing.Checkpointer(tmp_path, max_to_keep=2)
  checkpointer.save(7, run.state)
  checkpointer.close()
  restored = checkpointing.Checkpointer(tmp_path).restore(7, run.state)
  chex.assert_trees_all_equal(restored, run.state)
  assert jax.tree.leaves(restored)[0].sharding == jax.tree.leaves(run.state)[0].sharding


def test_train_resume_and_refuse_another_config(tmp_path):
  workdir = str(tmp_path / "run")
  first = SilentReporter()
  training.train_and_evaluate(tiny_config(steps=2), workdir, first)
  assert [r["step"] for r in first.train] == [2] and first.eval[-1]["count"] == 512
  assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 2

  second = SilentReporter()
  summary = training.train_and_evaluate(tiny_config(steps=4), workdir, second)
  assert second.start_step == 2 and summary["step"] == 4
  assert any("resumed" in m for m in second.messages)

  with pytest.raises(training.configuration.ConfigError, match="model.batch_norm"):
    training.train_and_evaluate(tiny_config(steps=6, **{"model.batch_norm": True}), workdir,
                                SilentReporter())


def test_lr_schedules():
  config = tiny_config()
  opt = config.optimizer
  opt.warmup_epochs, opt.schedule = 1.0, "cosine"
  schedule = training.make_schedule(opt, steps_per_epoch=10, total_steps=50)
  assert schedule(0) == 0.0 and schedule(10) == pytest.approx(opt.lr)
  assert schedule(49) < 0.01 * opt.lr
  opt.warmup_epochs, opt.schedule = 0.0, "step"
  opt.decay_every_epochs, opt.decay_rate = 2.0, 0.5
  schedule = training.make_schedule(opt, steps_per_epoch=10, total_steps=50)
  assert [float(schedule(s)) for s in (0, 19, 20, 40)] == pytest.approx(
      [opt.lr, opt.lr, opt.lr / 2, opt.lr / 4])


EQUIVALENCE_SCRIPT = textwrap.dedent("""
  import json, jax
  from googlenet_jax import input_pipeline, sharding, training
  from tests.conftest import tiny_config
  assert jax.device_count() == 8, jax.devices()
  config = tiny_config()
  dataset = input_pipeline.load_dataset("synthetic")
  losses = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:n])
    run = training.setup_run(config, dataset, mesh)
    step = training.make_train_step(run.model, run.tx, config.image_size)
    state, out = run.state, []
    for images, labels in input_pipeline.train_batches(
        dataset.train_images, dataset.train_labels, 16, seed=0, epoch=0):
      state, metrics = step(state, *sharding.put_batch((images, labels), mesh))
      out.append(float(metrics["loss"]))
      if len(out) == 3:
        break
    losses[n] = out
  print(json.dumps(losses))
""")


def test_one_device_and_eight_devices_agree():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run([sys.executable, "-c", EQUIVALENCE_SCRIPT], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(losses["1"]) == 3
  np.testing.assert_allclose(losses["8"], losses["1"], rtol=1e-4)
