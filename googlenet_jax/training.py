"""Train state, the jitted train/eval steps, and the training loop.

The steps are pure functions over `TrainState`, compiled once with `jax.jit`
(the state is donated). Data parallelism comes from the shardings of their
inputs: batches split on the mesh's "data" axis, the state replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from googlenet_jax import checkpointing, configuration, input_pipeline, sharding
from googlenet_jax.interrupts import StopOnSignal, TrainingInterrupted
from googlenet_jax.inits import get_init
from googlenet_jax.models import GoogLeNet
from googlenet_jax.stall import StallDetector, TrainingDiverged

LN_10 = math.log(10.0)


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def compute_dtype(name: str) -> str:
  """"auto" -> bfloat16 where the backend has fast bf16 units (TPU, GPU), else float32."""
  if name != "auto":
    return name
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def resolve_dtype(config: ml_collections.ConfigDict) -> None:
  """Replaces model.dtype "auto" by what it means here, before the config is saved, so a
  workdir records the dtype it trained in."""
  config.model.dtype = compute_dtype(config.model.dtype)


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> GoogLeNet:
  m = config.model
  return GoogLeNet(num_classes=num_classes, variant=m.variant, init_scheme=config.init,
                   batch_norm=m.batch_norm, aux_logits=m.aux_logits, dropout_rate=m.dropout_rate,
                   lrn=m.lrn, activation=m.activation, dtype=jnp.dtype(compute_dtype(m.dtype)))


def make_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
  warmup = int(opt.warmup_epochs * steps_per_epoch)
  if opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(opt.lr, max(total_steps - warmup, 1))
  elif opt.schedule == "step":  # The paper: lr x 0.96 every 8 epochs.
    main = optax.exponential_decay(opt.lr, int(opt.decay_every_epochs * steps_per_epoch),
                                   opt.decay_rate, staircase=True)
  else:
    main = optax.constant_schedule(opt.lr)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, opt.lr, warmup), main], [warmup])


def make_optimizer(opt: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
  if opt.name == "adamw":
    return optax.adamw(schedule, weight_decay=opt.weight_decay)
  if opt.name == "adam":
    tx = optax.adam(schedule)
  else:
    momentum = opt.momentum if opt.name in ("momentum", "nesterov") else None
    tx = optax.sgd(schedule, momentum=momentum, nesterov=opt.name == "nesterov")
  if opt.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
  return tx


def init_variables(model: GoogLeNet, rng: jax.Array, image_shape: tuple[int, ...]):
  """Parameters (and batch stats) for one image of `image_shape` (H, W, C)."""
  variables = model.init({"params": rng}, jnp.zeros((1,) + tuple(image_shape)), train=False)
  return variables["params"], variables.get("batch_stats", {})


def create_train_state(model, tx, rng, image_shape, mesh) -> TrainState:
  init_rng, train_rng = jax.random.split(rng)

  # Built replicated by jit itself: every process computes the same state on its devices.
  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def build():
    params, batch_stats = init_variables(model, init_rng, image_shape)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=train_rng)

  return build()


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float) -> jax.Array:
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def make_train_step(model: GoogLeNet, tx: optax.GradientTransformation, image_size: int,
                    label_smoothing: float = 0.0, aux_loss_weight: float = 0.3) -> Callable:
  """(state, uint8 images, labels) -> (state, metrics); jitted, state donated.

  Metrics stay on the device (fetching them every step would sync the host).
  """
  def loss_fn(params, state, x, labels, dropout_rng):
    outputs, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    logits, aux = outputs if isinstance(outputs, tuple) else (outputs, [])
    loss = cross_entropy(logits, labels, model.num_classes, label_smoothing)
    total = loss + aux_loss_weight * sum(
        cross_entropy(a, labels, model.num_classes, label_smoothing) for a in aux)
    return total, (loss, logits, updates.get("batch_stats", {}))

  def train_step(state: TrainState, images, labels):
    x = input_pipeline.preprocess(images, image_size)
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state.params, state, x, labels, dropout_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        # How much the logits depend on the image: ~0 when the init has collapsed.
        "logit_std": jnp.mean(jnp.std(logits, axis=0)),
        "grad_norm": optax.tree.norm(grads),
        # Finite loss and gradients can still step to Inf parameters: checked before a save.
        "param_norm": optax.tree.norm(params),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              batch_stats=batch_stats)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model: GoogLeNet, image_size: int) -> Callable:
  """(state, images, labels, mask) -> sums of correct, loss, count and the confusion matrix.

  Everything it returns is summed over the batch, so it comes back replicated and
  any process can read it (the per-example predictions stay sharded on the devices).
  """
  def eval_step(state: TrainState, images, labels, mask):
    x = input_pipeline.preprocess(images, image_size)
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    predictions = jnp.argmax(logits, -1)
    confusion = jnp.zeros((model.num_classes,) * 2, jnp.int32).at[labels, predictions].add(mask)
    return {"correct": jnp.sum((predictions == labels) & mask), "loss": jnp.sum(losses * mask),
            "count": jnp.sum(mask), "confusion": confusion}

  return jax.jit(eval_step)


def evaluate(eval_step, state, images, labels, batch_size, mesh) -> tuple[dict, np.ndarray]:
  """(accuracy, mean loss and count over every example once; confusion[true, predicted])."""
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  totals = None
  for x, y, mask in input_pipeline.prefetch(
      input_pipeline.eval_batches(images, labels, batch_size), lambda b: sharding.put_batch(b, mesh)):
    sums = eval_step(state, x, y, mask)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)  # one host sync for the whole test set
  count = int(totals["count"])
  return ({"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss"]) / count,
           "count": count},
          np.asarray(totals["confusion"], np.int64))


def check_resumable(workdir, config_dict: dict) -> None:
  saved = checkpointing.load_config(workdir)
  if saved is None:
    if any((pathlib.Path(workdir) / "checkpoints").glob("[0-9]*")):
      raise checkpointing.CheckpointError(
          f"workdir {workdir} holds checkpoints but no {checkpointing.CONFIG_FILE}, so they cannot "
          "be checked against this config; use another --workdir")
    return
  diffs = configuration.incompatible_fields(saved, config_dict)
  if diffs:
    raise configuration.ConfigError(
        f"workdir {workdir} holds a run with another config: {'; '.join(diffs)}. "
        "Use another --workdir, or the same settings to resume.")


@dataclasses.dataclass
class Run:
  """What a config and a dataset make: the model, optimizer and fresh train state."""
  model: GoogLeNet
  tx: optax.GradientTransformation
  schedule: Callable
  state: TrainState
  steps_per_epoch: int
  total_steps: int


def setup_run(config: ml_collections.ConfigDict, dataset, mesh) -> Run:
  steps_per_epoch = input_pipeline.steps_per_epoch(len(dataset.train_images), config.batch_size)
  if steps_per_epoch == 0:
    raise configuration.ConfigError(
        f"batch_size {config.batch_size} exceeds the {len(dataset.train_images)} training examples")
  total_steps = config.steps or config.epochs * steps_per_epoch
  schedule = make_schedule(config.optimizer, steps_per_epoch, total_steps)
  tx = make_optimizer(config.optimizer, schedule)
  model = create_model(config, dataset.num_classes)
  image_shape = (config.image_size, config.image_size, dataset.image_shape[2])
  state = create_train_state(model, tx, jax.random.key(config.seed), image_shape, mesh)
  return Run(model, tx, schedule, state, steps_per_epoch, total_steps)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, reporter) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`) and evaluates each epoch."""
  resolve_dtype(config)
  config_dict = config.to_dict()
  check_resumable(workdir, config_dict)
  dataset = input_pipeline.load_dataset(config.dataset, config.data_dir or None)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)

  run = setup_run(config, dataset, mesh)
  model, schedule, state = run.model, run.schedule, run.state
  steps_per_epoch, total_steps = run.steps_per_epoch, run.total_steps
  sharding.sync("checkpoint_manager")  # orbax's own barrier is a collective (see sync)
  checkpointer = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  if sharding.is_main_process():
    checkpointing.save_config(workdir, config_dict)
  start_step, state = checkpointer.restore_latest(state, reporter.message)
  if start_step:
    reporter.message(f"resumed from the checkpoint at step {start_step} in {checkpointer.directory}")
  else:
    start_step = 0
  if start_step == 0 and get_init(config.init).data_dependent:
    from googlenet_jax import lsuv  # Only LSUV runs need it.
    state = lsuv.apply_to_state(model, state, dataset, config, mesh, reporter)

  train_step = make_train_step(model, run.tx, config.image_size, config.optimizer.label_smoothing,
                               config.optimizer.aux_loss_weight)
  eval_step = make_eval_step(model, config.image_size)
  reporter.start(start_step, total_steps, steps_per_epoch, describe_run(config, dataset, mesh))

  stall_detector = StallDetector.from_config(config, dataset.num_classes)
  step, pending, last_eval, last_finite, compiled_step = start_step, [], {}, None, None
  interval_start, interval_images = time.perf_counter(), 0
  try:
    with StopOnSignal() as stop:
      while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        batches = input_pipeline.train_batches(dataset.train_images, dataset.train_labels,
                                               config.batch_size, config.seed, epoch, first)
        for images, labels in input_pipeline.prefetch(batches, lambda b: sharding.put_batch(b, mesh)):
          if compiled_step is None:  # compile before the first collective, then line up
            compiled_step = train_step.lower(state, images, labels).compile()
            sharding.sync("train_step_compiled")
          state, metrics = compiled_step(state, images, labels)
          step += 1
          pending.append(metrics)
          interval_images += config.batch_size
          epoch_end = step % steps_per_epoch == 0
          if step % config.log_every_steps == 0 or epoch_end or step == total_steps:
            last_finite = check_finite(pending, step, last_finite)
            averaged = average_metrics(pending)
            elapsed = time.perf_counter() - interval_start
            reporter.log_train(step, epoch + 1, averaged, float(schedule(step - 1)),
                               interval_images / elapsed)
            warning = stall_detector.check(step, averaged["loss"], averaged["logit_std"])
            if warning:
              reporter.message(warning)
            pending, interval_images, interval_start = [], 0, time.perf_counter()
          if step % config.checkpoint_every_steps == 0 or epoch_end or step == total_steps:
            last_finite = check_finite(pending, step, last_finite)  # Never save a NaN state.
            checkpointer.save(step, state)
          if epoch_end or step == total_steps:
            last_eval, _ = evaluate(eval_step, state, dataset.test_images, dataset.test_labels,
                                    config.eval_batch_size, mesh)
            reporter.log_eval(step, epoch + 1, last_eval)
            interval_start = time.perf_counter()
          if stop.signum:  # SIGINT/SIGTERM: checkpoint this step, then stop.
            check_finite(pending, step, last_finite)
            checkpointer.save(step, state)
            raise TrainingInterrupted(
                f"stopped by {stop.name} at step {step}: checkpoint saved in "
                f"{checkpointer.directory}; run the same command to resume", stop.signum)
          if step == total_steps:
            break
  finally:
    checkpointer.close()
  if not last_eval:  # Resumed a finished run: evaluate what is there.
    last_eval, _ = evaluate(eval_step, state, dataset.test_images, dataset.test_labels,
                            config.eval_batch_size, mesh)
  return reporter.finish(step, last_eval, stall_detector.summary())


def average_metrics(pending: list[dict]) -> dict:
  """Fetches the pending per-step metrics (one host sync) and averages them."""
  values = jax.device_get(pending)
  return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


def check_finite(pending: list[dict], step: int,
                 last_finite: tuple[int, float] | None = None) -> tuple[int, float] | None:
  """Raises TrainingDiverged at the first pending step whose loss, gradients or updated
  parameters are NaN/Inf; else returns the last (step, loss), for the next call's message.

  `pending`: the metrics of the steps up to `step`; `last_finite`: what the previous call returned.
  """
  values = jax.device_get(pending)
  first_step = step - len(values) + 1
  for offset, metrics in enumerate(values):
    if not all(math.isfinite(float(metrics[k])) for k in ("loss", "grad_norm", "param_norm")):
      last = "none" if last_finite is None else f"{last_finite[1]:.4f} at step {last_finite[0]}"
      raise TrainingDiverged(
          f"the loss, gradients or parameters became NaN/Inf at step {first_step + offset} (last "
          f"finite loss: {last}); training stopped, the last good checkpoint is kept. Try a lower "
          "learning rate (--lr) or another init (--init glorot, --init lsuv)")
    last_finite = (first_step + offset, float(metrics["loss"]))
  return last_finite


def describe_run(config, dataset, mesh) -> str:
  devices = f"{mesh.size} x {mesh.devices.flat[0].platform}"
  if jax.process_count() > 1:
    devices += f" in {jax.process_count()} processes"
  return (f"GoogLeNet ({config.model.variant}) init={config.init} on {dataset.name} "
          f"({len(dataset.train_images)} train / {len(dataset.test_images)} test) at "
          f"{config.image_size}x{config.image_size}, batch {config.batch_size}, "
          f"{config.optimizer.name} lr {config.optimizer.lr}, devices {devices}")
