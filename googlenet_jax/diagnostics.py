"""Signal propagation at initialization, layer by layer.

One forward and one backward pass (of the mean cross-entropy) on one real batch,
with freshly initialized parameters, the pass the first training step makes
(train=True). For every conv and dense layer, in the order the forward pass runs
them, it measures on the layer's output y before the activation:

  mean and std of y (over batch, space and channels);
  dead fraction P(y <= 0): the share of its ReLU outputs that pass neither signal
    nor gradient (conv layers only: the dense classifier has no ReLU);
  std(dL/dW) of the kernel's gradient, and std(dL/dW) / std(W), the relative
    change one SGD step of unit learning rate makes to the kernel;

and the std the variance-propagation theory predicts,

  Var(y) = r * fan_in * Var(W) * E[x^2] + Var(b),

with fan_in = kh*kw*c_in (dense: the input width), Var(W) and Var(b) the actual
variances of the layer's kernel and bias (np.var), E[x^2] the second moment of
its input, and r the share of the kernel's taps that land inside the image
rather than on zero padding (1 for 1x1 convs and dense layers; a 5x5 conv with
padding 2 on a 3x3 map sees only 9 of its 25 taps, r = 0.36).

E[x^2] comes from the theory where a layer is fed by a single conv through its
activation f (`SINGLE_FEEDERS`: conv2 <- conv2_reduce, each inception's b2_3x3 <-
b2_reduce and b3_5x5 <- b3_reduce): E[x^2] = g * E[z^2], z the feeder's measured
output and g the activation's second-moment gain. For ReLU g = 1/2 in closed form
(z symmetric about 0: E[relu(z)^2] = E[z^2] / 2); for the others (tanh, sigmoid,
gelu, leaky_relu) g = E[f(z)^2] / E[z^2] for z ~ N(mean, std^2) with the feeder's
measured mean and std, by Gauss-Hermite quadrature (tanh and sigmoid are not
homogeneous, so their gain depends on the scale: tanh's g -> 1 for small z,
sigmoid's E[f(z)^2] -> 1/4 however small z is). Each report names its gain. Everywhere else the input is
the image or has gone through max-pooling, concatenation or average pooling,
which no halving rule describes (max-pool keeps the largest of 9 values); there
the prediction takes the measured E[x^2] of the input ("measured input" in the
reports) and only checks the linear step, so it is a looser test of the theory.
With BatchNorm the recorded y is normalized and no prediction is made.

Verdict, per scheme: the signal is healthy while every layer's activation std
stays within a factor `BAND` = 10 of the first layer's, [std_1 / 10, std_1 * 10],
and the logits still vary across the batch: the mean over classes of the std
over the batch is at least `LOGIT_STD_FLOOR` = 1e-3 (below that the logits of
any two images differ by less than 1e-3, so the softmax outputs differ by under
0.1%: the output ignores the input). The first layer below the band (or the
logits, when only they fail) makes the scheme "vanishing"; the first layer
above it, or a non-finite value, "exploding".
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from googlenet_jax import lsuv
from googlenet_jax.inits import fans, get_init
from googlenet_jax.layers import Conv, get_activation
from googlenet_jax.models import GoogLeNet

BAND = 10.0
LOGIT_STD_FLOOR = 1e-3
# Layer name -> the conv in the same module whose ReLU output is its whole input.
SINGLE_FEEDERS = {"conv2": "conv2_reduce", "b2_3x3": "b2_reduce", "b3_5x5": "b3_reduce"}
MEASURED_INPUT = "measured input"
# Parameters are given to apply, so the compiled pass is the same for every
# scheme; the model that runs it carries this (unused) scheme name.
_APPLY_SCHEME = "glorot_uniform"


@dataclasses.dataclass
class LayerStats:
  """One conv or dense layer at initialization (std = standard deviation).

  `predicted_std` is None with BatchNorm; `prediction` says where its E[x^2]
  came from: "feeder <name>" (half the feeder's E[y^2]) or "measured input".
  `dead_fraction` is None for dense layers (no ReLU).
  """
  layer: str
  fan_in: int
  weight_std: float
  bias_std: float
  input_ms: float
  tap_fraction: float
  mean: float
  std: float
  dead_fraction: float | None
  grad_std: float
  grad_to_weight: float
  predicted_std: float | None
  prediction: str | None

  @property
  def ratio(self) -> float | None:
    """Measured std / predicted std."""
    if self.predicted_std is None or self.predicted_std == 0:
      return None
    return self.std / self.predicted_std


@dataclasses.dataclass
class SchemeReport:
  """All layers of one init scheme, the logits' spread, and the verdict."""
  scheme: str
  formula: str
  loss: float
  logits_std: float  # mean over classes of the std over the batch
  layers: list[LayerStats]
  verdict: str  # healthy, vanishing or exploding
  first_unhealthy: str | None  # layer name, "logits", or None when healthy
  reason: str

  def single_feeder_ratios(self) -> dict[str, float]:
    """Measured / predicted std of the layers predicted from their feeder."""
    return {s.layer: s.ratio for s in self.layers
            if s.prediction and s.prediction != MEASURED_INPUT and s.ratio is not None}

  def to_dict(self) -> dict:
    layers = []
    for s in self.layers:
      layers.append({**dataclasses.asdict(s), "ratio": s.ratio})
    out = dataclasses.asdict(self)
    out["layers"] = layers
    return out


def valid_tap_fraction(size: int, kernel: int, stride: int, padding: int) -> float:
  """Along one axis: the share of (output position, tap) pairs that read the input, not padding.

  Output position o's tap t reads input index o*stride - padding + t.
  """
  out = (size + 2 * padding - kernel) // stride + 1
  valid = sum(1 for o in range(out) for t in range(kernel)
              if 0 <= o * stride - padding + t < size)
  return valid / (out * kernel)


def predicted_variance(fan_in: int, weight_var: float, input_ms: float, bias_var: float,
                       tap_fraction: float = 1.0) -> float:
  """Var(y) = r * fan_in * Var(W) * E[x^2] + Var(b), for W, b independent of x and of each other."""
  return tap_fraction * fan_in * weight_var * input_ms + bias_var


def _layer_name(path: tuple[str, ...]) -> str:
  return "/".join(path)


def trace_layers(model, variables, images) -> tuple[list[tuple[str, ...]], dict]:
  """(layer paths in depth order, {layer path: tap fraction r}), from shapes only.

  The order is read while tracing, before a jit output would sort the keys. A
  conv's r comes from its input size, kernel, stride and padding; layers not
  listed (1x1 convs run as one fused product, dense layers) have r = 1.
  """
  order, fractions = [], {}

  def record_conv(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, Conv) and context.method_name == "__call__":
      height, width = args[0].shape[1:3]
      k, s, p = module.kernel_size, module.strides, module.padding
      fractions[tuple(module.path[:-1])] = (valid_tap_fraction(height, k, s, p)
                                            * valid_tap_fraction(width, k, s, p))
    return next_fun(*args, **kwargs)

  def forward(v, x):
    with nn.intercept_methods(record_conv):
      _, state = model.apply(v, x, train=False, mutable=["intermediates"])
    order.extend(lsuv.layer_paths(state["intermediates"]))

  jax.eval_shape(forward, variables, images)
  return order, fractions


def _preact_summary(intermediates) -> dict:
  """{layer path: {mean, std, dead = P(y <= 0), input_ms}} from the sown values."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates))
  summary = {}
  for path, value in flat.items():
    layer, kind = path[:-1], path[-1]
    if kind == lsuv.PREACT:
      y = value[0].astype(jnp.float32)
      summary.setdefault(layer, {}).update(mean=jnp.mean(y), std=jnp.std(y), dead=jnp.mean(y <= 0))
    elif kind == "input_ms":
      summary.setdefault(layer, {})["input_ms"] = value[0]
  return summary


@functools.lru_cache(maxsize=8)
def _forward_backward(num_classes: int, variant: str, batch_norm: bool, activation: str):
  """A jitted (variables, images, labels, rng) -> (loss, logits, summary, grads).

  Cached per architecture, so every scheme (and every call in one process)
  reuses one compiled program.
  """
  model = GoogLeNet(num_classes=num_classes, variant=variant, batch_norm=batch_norm,
                    activation=activation, init_scheme=_APPLY_SCHEME)

  def loss_fn(params, others, images, labels, rng):
    outputs, state = model.apply({"params": params, **others}, images, train=True,
                                 rngs={"dropout": rng}, mutable=["intermediates", "batch_stats"])
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, _preact_summary(state["intermediates"]))

  @jax.jit
  def run(variables, images, labels, rng):
    others = {k: v for k, v in variables.items() if k != "params"}
    (loss, (logits, summary)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"], others, images, labels, rng)
    return loss, logits, summary, grads

  return run


def init_variables(model: GoogLeNet, images: jax.Array, seed: int) -> dict:
  """model.init from jax.random.key(seed); LSUV schemes then rescaled on `images`."""
  shape = (1,) + tuple(images.shape[1:])
  variables = jax.jit(lambda key: model.init({"params": key}, jnp.zeros(shape), train=False))(
      jax.random.key(seed))
  if get_init(model.init_scheme).data_dependent:
    variables, _ = lsuv.lsuv_init(model, variables, images)
  return variables


def _lookup(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _layer_stats(path, params, grads, summary, fraction, batch_norm) -> LayerStats:
  """Measured and predicted statistics of the layer at `path` (prediction from the measured input)."""
  kpath = lsuv.kernel_path(params, path)
  kernel = np.asarray(_lookup(params, kpath), np.float64)
  bias_node = _lookup(params, kpath[:-1])
  bias = np.asarray(bias_node["bias"], np.float64) if "bias" in bias_node else np.zeros(1)
  grad = np.asarray(_lookup(grads, kpath), np.float64)
  m = {k: float(v) for k, v in summary[path].items()}
  fan_in = fans(kernel.shape)[0]
  weight_std = float(np.std(kernel))
  predicted = None
  if not batch_norm:
    predicted = math.sqrt(predicted_variance(fan_in, weight_std ** 2, m["input_ms"],
                                             float(np.var(bias)), fraction))
  is_conv = kernel.ndim == 4
  return LayerStats(
      layer=_layer_name(path), fan_in=fan_in, weight_std=weight_std, bias_std=float(np.std(bias)),
      input_ms=m["input_ms"], tap_fraction=fraction, mean=m["mean"], std=m["std"],
      dead_fraction=m["dead"] if is_conv else None, grad_std=float(np.std(grad)),
      grad_to_weight=float(np.std(grad)) / weight_std if weight_std else math.inf,
      predicted_std=predicted, prediction=None if batch_norm else MEASURED_INPUT)


_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)


def activation_second_moment(activation: str, mean: float, std: float) -> tuple[float, str]:
  """(E[f(z)^2] for z ~ N(mean, std^2), how it was computed).

  ReLU: E[z^2] / 2, the closed form for z symmetric about 0 (the theory's halving).
  Others: 64-point Gauss-Hermite quadrature of f(z)^2 under the normal density.
  """
  if activation == "relu":
    return (mean ** 2 + std ** 2) / 2, "relu: E[z^2]/2"
  f = get_activation(activation)
  z = mean + std * _HERMITE_NODES
  values = np.square(np.asarray(f(jnp.asarray(z, jnp.float32)), np.float64))
  moment = float(np.sum(_HERMITE_WEIGHTS * values) / math.sqrt(2 * math.pi))
  gain = moment / (mean ** 2 + std ** 2) if mean or std else math.nan
  return moment, f"{activation}: E[f(z)^2] = {gain:.3g} E[z^2] (Gauss-Hermite, z ~ N(mean, std^2))"


def _predict_from_feeders(stats: list[LayerStats], activation: str = "relu") -> None:
  """Re-predicts single-feeder layers with E[x^2] = E[f(y_feeder)^2] (`activation_second_moment`)."""
  by_name = {s.layer: s for s in stats}
  for s in stats:
    parent, _, name = s.layer.rpartition("/")
    if s.predicted_std is None or name not in SINGLE_FEEDERS:
      continue
    feeder = by_name.get(f"{parent}/{SINGLE_FEEDERS[name]}" if parent else SINGLE_FEEDERS[name])
    if feeder is None:
      continue
    input_ms, gain = activation_second_moment(activation, feeder.mean, feeder.std)
    s.predicted_std = math.sqrt(predicted_variance(s.fan_in, s.weight_std ** 2, input_ms,
                                                   s.bias_std ** 2, s.tap_fraction))
    s.prediction = f"feeder {feeder.layer} ({gain})"


def verdict(layers: list[LayerStats], logits_std: float, band: float = BAND,
            logit_floor: float = LOGIT_STD_FLOOR) -> tuple[str, str | None, str]:
  """(healthy | vanishing | exploding, first layer out of the band or "logits", reason).

  Band: activation std in [std_1 / band, std_1 * band], std_1 the first layer's.
  """
  first = layers[0].std
  low, high = first / band, first * band
  for s in layers:
    if not math.isfinite(s.std):
      return "exploding", s.layer, f"activation std is {s.std}"
    if s.std < low:
      return "vanishing", s.layer, (f"activation std {s.std:.3g} < {low:.3g} "
                                    f"({layers[0].layer}'s {first:.3g} / {band:g})")
    if s.std > high:
      return "exploding", s.layer, (f"activation std {s.std:.3g} > {high:.3g} "
                                    f"({layers[0].layer}'s {first:.3g} x {band:g})")
  if not math.isfinite(logits_std):
    return "exploding", "logits", f"logit std across the batch is {logits_std}"
  if logits_std < logit_floor:
    return "vanishing", "logits", (f"logit std across the batch {logits_std:.3g} < {logit_floor:g}: "
                                   "the output no longer depends on the input")
  return "healthy", None, (f"every activation std within {band:g}x of {layers[0].layer}'s "
                           f"and logit std across the batch {logits_std:.3g} >= {logit_floor:g}")


def diagnose_scheme(scheme: str, images: jax.Array, labels: jax.Array, num_classes: int, *,
                    variant: str = "d2l", batch_norm: bool = False, activation: str = "relu",
                    seed: int = 0) -> SchemeReport:
  """Initializes GoogLeNet with `scheme` and measures one forward/backward pass on the batch.

  `images`: float NHWC at the model's resolution (`input_pipeline.preprocess`);
  `labels`: int (N,). Deterministic given the batch and `seed`.
  """
  scheme = get_init(scheme)
  model = GoogLeNet(num_classes=num_classes, variant=variant, batch_norm=batch_norm,
                    activation=activation, init_scheme=scheme.name)
  variables = init_variables(model, images, seed)
  order, fractions = trace_layers(model, variables, images)
  run = _forward_backward(num_classes, variant, batch_norm, activation)
  loss, logits, summary, grads = jax.device_get(
      run(variables, images, labels, jax.random.fold_in(jax.random.key(seed), 1)))
  params = jax.device_get(variables["params"])
  stats = [_layer_stats(path, params, grads, summary, fractions.get(path, 1.0), batch_norm)
           for path in order]
  _predict_from_feeders(stats, activation)
  logits_std = float(np.mean(np.std(np.asarray(logits, np.float64), axis=0)))
  kind, where, reason = verdict(stats, logits_std)
  return SchemeReport(scheme.name, scheme.formula, float(loss), logits_std, stats, kind, where, reason)


def diagnose(schemes, images, labels, num_classes: int, **kwargs) -> list[SchemeReport]:
  """`diagnose_scheme` for each scheme name, on the same batch."""
  return [diagnose_scheme(s, images, labels, num_classes, **kwargs) for s in schemes]
