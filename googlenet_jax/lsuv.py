"""LSUV, layer-sequential unit-variance init (Mishkin & Matas 2016, "All you need is a good init").

1. Every conv/dense kernel starts orthonormal: the `lsuv` init scheme draws
   W ~ orthogonal over (kh*kw*c_in, c_out), b = 0.
2. Layer by layer in depth order (each Inception branch's 1x1 reduce before its
   3x3/5x5, the order the forward pass runs them), forward one batch of real data
   and measure Var(y) of the layer's output before its activation; while
   |Var(y) - 1| >= tol and fewer than `max_iters` tries: W <- W / sqrt(Var(y)).

The batch is the one the network trains on, preprocessed the same way (pixels in
[0, 1], resized on the device): the first layer's rescale is what scales the
input to unit variance, for the data the network will actually see.

Deterministic given the batch (and the parameters it starts from).
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from googlenet_jax import input_pipeline, sharding

PREACT = "preact"


@dataclasses.dataclass
class LayerFit:
  """How LSUV left one layer: its output variance before and after, and the rescales it took."""
  layer: str
  initial_variance: float
  final_variance: float
  rescales: int


def layer_paths(intermediates) -> list[tuple[str, ...]]:
  """The module paths of every conv/dense layer, in the order the forward pass ran them."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates))
  return [path[:-1] for path in flat if path[-1] == PREACT]


def depth_order(model, variables, images) -> list[tuple[str, ...]]:
  """The conv/dense layer paths in the order the forward pass runs them.

  Read while tracing: a jitted function's dict output comes back with sorted
  keys, which would put "classifier" first and each 5x5 before its reduce.
  """
  order = []

  def forward(v, x):
    _, state = model.apply(v, x, train=False, mutable=["intermediates"])
    order.extend(layer_paths(state["intermediates"]))

  jax.eval_shape(forward, variables, images)
  return order


def kernel_path(params, layer: tuple[str, ...]) -> tuple[str, ...]:
  """The params path of a layer's kernel: a ConvBlock keeps it in its `conv`, a Dense in itself."""
  node = params
  for key in layer:
    node = node[key]
  return (*layer, "conv", "kernel") if "conv" in node else (*layer, "kernel")


def _preact_variances(model, images):
  """A jitted params -> {layer path: Var(pre-activation)} over the fixed batch."""
  def variances(variables):
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]))
    return {path[:-1]: jnp.var(value[0].astype(jnp.float32))
            for path, value in flat.items() if path[-1] == PREACT}
  return jax.jit(variances)


def lsuv_init(model, variables: dict, images: jax.Array, *, tol: float = 0.1,
              max_iters: int = 10) -> tuple[dict, list[LayerFit]]:
  """Rescales the kernels in `variables` (from the `lsuv` scheme) to unit output variance.

  `images`: one batch as the model takes it (float, NHWC, model resolution).
  Returns the new variables and one LayerFit per layer in depth order. One
  forward pass per rescale: each pass measures every layer, and the first layer
  (in depth order) outside the band is the one rescaled next.
  """
  if not 0 < tol < 1:
    raise ValueError(f"LSUV tolerance must be in (0, 1), got {tol}")
  measure = _preact_variances(model, images)
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  nested = variables["params"]

  def current():
    return {**variables, "params": flax.traverse_util.unflatten_dict(params)}

  order = depth_order(model, variables, images)
  variances = jax.device_get(measure(current()))
  initial = dict(variances)
  rescales = dict.fromkeys(order, 0)
  for layer in order:
    path = kernel_path(nested, layer)
    while abs(variances[layer] - 1.0) >= tol and rescales[layer] < max_iters:
      if not np.isfinite(variances[layer]) or variances[layer] <= 0:
        raise FloatingPointError(f"LSUV: layer {'/'.join(layer)} has output variance "
                                 f"{variances[layer]} on the batch; cannot rescale it")
      params[path] = params[path] / jnp.sqrt(variances[layer]).astype(params[path].dtype)
      rescales[layer] += 1
      variances = jax.device_get(measure(current()))
  fits = [LayerFit("/".join(layer), float(initial[layer]), float(variances[layer]), rescales[layer])
          for layer in order]
  return current(), fits


def first_batch(dataset, config) -> jax.Array:
  """The first training batch of epoch 0 (the run's own data order), preprocessed."""
  images, _ = next(input_pipeline.train_batches(dataset.train_images, dataset.train_labels,
                                                config.batch_size, config.seed, 0, 0))
  return input_pipeline.preprocess(jnp.asarray(images), config.image_size)


def apply_to_state(model, state, dataset, config, mesh, reporter=None):
  """LSUV on a fresh TrainState's params (before any step), keeping them replicated on `mesh`."""
  variables = {"params": jax.device_get(state.params)}
  if state.batch_stats:
    variables["batch_stats"] = jax.device_get(state.batch_stats)
  variables, fits = lsuv_init(model, variables, first_batch(dataset, config))
  worst = max(abs(f.final_variance - 1.0) for f in fits)
  if reporter is not None:
    reporter.message(f"LSUV: {len(fits)} layers rescaled to unit output variance on "
                     f"{config.batch_size} training images (largest |Var - 1| left: {worst:.3f})")
  params = sharding.put_replicated(variables["params"], mesh)
  return state.replace(params=params)  # The optimizer state (zeros) does not depend on them.
