"""Times one GoogLeNet training step (forward, backward, SGD update) in JAX and PyTorch.

  python benchmarks/benchmark_step.py                      # d2l, batch 128, 96x96x1, fp32
  python benchmarks/benchmark_step.py --dtype bfloat16 --out /tmp/step.json

Each measurement runs in its own subprocess (clean peak memory, no shared thread
pools): JAX (googlenet_jax.GoogLeNet + optax.sgd, jitted step; compile time
reported separately), then PyTorch eager in NCHW and channels_last (skipped with
a note when torch is not installed, or with --no-torch). Reported per run: the
median step time over --steps steps after --warmup steps, images/s, model
GFLOP/s and its fraction of --peak-gflops (model FLOP utilisation on whatever
backend ran it), peak resident memory, and the ratio to PyTorch's best.

Model FLOPs are counted, not estimated: 2 x multiply-adds of every conv and
dense layer in the forward (with padding taps, the usual convention; d2l at
96x96: 276.7M MACs/image), and a training step counted as 3x the forward.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

DTYPES = ("float32", "bfloat16")
VARIANTS = ("d2l", "paper")
MIN_IMAGE_SIZE = 32


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # one clear line, exit code 2
    sys.stderr.write(f"benchmark_step.py: error: {message}\n")
    sys.exit(2)


def _positive(kind):
  def parse(text):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if value <= 0:
      raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
  return parse


def _non_negative_int(text):
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
  return value


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(description=__doc__.split("\n")[0])
  p.add_argument("--batch-size", type=_positive(int), default=128)
  p.add_argument("--image-size", type=_positive(int), default=96,
                 help=f"square image side, >= {MIN_IMAGE_SIZE}")
  p.add_argument("--dtype", choices=DTYPES, default="float32",
                 help="compute dtype; parameters stay float32 (JAX: GoogLeNet(dtype=...); "
                      "PyTorch: autocast)")
  p.add_argument("--variant", choices=VARIANTS, default="d2l",
                 help="model variant (the PyTorch twin exists for d2l only)")
  p.add_argument("--steps", type=_positive(int), default=5, help="timed steps (median)")
  p.add_argument("--warmup", type=_non_negative_int, default=2,
                 help="untimed steps after the first (compiling) one")
  p.add_argument("--peak-gflops", type=_positive(float), default=330.0,
                 help="the machine's peak GFLOP/s for --dtype, for the utilisation figure")
  p.add_argument("--cpu-devices", type=_positive(int), default=None,
                 help="JAX CPU devices the batch is split over (default: as train.py, one per "
                      "core that divides the batch; ignored on GPU/TPU)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch runs")
  p.add_argument("--out", default=None, help="write the results as JSON to this path")
  p.add_argument("--worker", choices=("jax", "jax_one_device", "torch_nchw", "torch_channels_last"),
                 help=argparse.SUPPRESS)
  return p


def parse_args(argv=None) -> argparse.Namespace:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.image_size < MIN_IMAGE_SIZE:
    parser.error(f"--image-size must be >= {MIN_IMAGE_SIZE} (five stride-2 stages), "
                 f"got {args.image_size}")
  return args


def _peak_rss_mib() -> float:
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def forward_macs(variant: str, image_size: int, in_channels: int = 1,
                 num_classes: int = 10) -> int:
  """Multiply-adds of every conv / dense layer of one image's forward (conv: per
  output element k*k*c_in, padding taps included; the paper variant's aux heads
  are off and LRN/pooling are not counted)."""
  import jax
  import jax.numpy as jnp
  from googlenet_jax import GoogLeNet

  model = GoogLeNet(variant=variant, num_classes=num_classes, init_scheme="glorot")
  x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  jaxpr = jax.make_jaxpr(lambda p, x: model.apply(p, x, train=False))(params, x)
  return _count_macs(jaxpr.jaxpr)


def _count_macs(jaxpr) -> int:
  import numpy as np
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      out = eqn.outvars[0].aval.shape
      rhs = eqn.invars[1].aval.shape
      dn = eqn.params["dimension_numbers"]
      window = int(np.prod([rhs[d] for d in dn.rhs_spec[2:]]))
      c_in = rhs[dn.rhs_spec[1]]
      total += int(np.prod(out)) * window * c_in // eqn.params["feature_group_count"]
    elif name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[d] for d in contract]))
    for sub in _sub_jaxprs(eqn):
      total += _count_macs(sub)
  return total


def _sub_jaxprs(eqn):
  from jax.extend import core
  for value in eqn.params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(item, core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, core.Jaxpr):
        yield item


def _time_steps(run_step, steps: int, warmup: int) -> dict:
  t0 = time.perf_counter()
  run_step()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    run_step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - t)
  times.sort()
  median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1:][:2]) / 2
  return {"first_step_s": first, "step_s_median": median, "step_s_min": times[0],
          "step_s_all": times}


def run_jax(args) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from googlenet_jax import GoogLeNet, sharding

  if args.cpu_devices:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  else:
    sharding.one_cpu_device_per_core(args.batch_size)
  mesh = sharding.make_mesh()
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  model = GoogLeNet(variant=args.variant, init_scheme="glorot", dtype=dtype)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 1), np.float32)
  y = rng.integers(0, 10, args.batch_size).astype(np.int32)
  params = model.init(jax.random.key(0), jnp.asarray(x[:1]), train=False)["params"]
  tx = optax.sgd(0.01)
  params, opt_state = sharding.put_replicated((params, tx.init(params)), mesh)
  x, y = sharding.put_batch((x, y), mesh)

  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  key = jax.random.key(1)
  t = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1), out_shardings=sharding.replicated(mesh)).lower(
      params, opt_state, x, y, key).compile()
  compile_s = time.perf_counter() - t
  state = {"params": params, "opt": opt_state}

  def run_step():
    p, o, loss = compiled(state["params"], state["opt"], x, y, key)
    loss.block_until_ready()
    state["params"], state["opt"] = p, o

  result = _time_steps(run_step, args.steps, args.warmup)
  result["compile_s"] = compile_s
  device = jax.devices()[0]
  result["backend"] = (f"jax {jax.__version__} {jax.default_backend()} ({device.device_kind}), "
                       f"{mesh.size} device{'s' if mesh.size > 1 else ''}")
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    result["device_peak_mib"] = stats["peak_bytes_in_use"] / (1 << 20)
  return result


def run_torch(args, channels_last: bool) -> dict:
  import torch
  from torch_googlenet import d2l_googlenet  # noqa: this file's directory is on sys.path

  torch.manual_seed(0)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = d2l_googlenet().to(memory_format=fmt)
  x = torch.randn(args.batch_size, 1, args.image_size, args.image_size).to(memory_format=fmt)
  y = torch.randint(0, 10, (args.batch_size,))
  opt = torch.optim.SGD(model.parameters(), lr=0.01)
  bf16 = args.dtype == "bfloat16"

  def run_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()

  result = _time_steps(run_step, args.steps, args.warmup)
  result["compile_s"] = 0.0
  result["backend"] = (f"torch {torch.__version__} cpu eager, {torch.get_num_threads()} threads, "
                       f"{'channels_last' if channels_last else 'NCHW'}")
  return result


def _worker(args) -> int:
  if args.worker.startswith("jax"):
    if args.worker == "jax_one_device":
      args.cpu_devices = 1
    result = run_jax(args)
  else:
    result = run_torch(args, channels_last=args.worker == "torch_channels_last")
  result["peak_rss_mib"] = _peak_rss_mib()
  print("RESULT " + json.dumps(result))
  return 0


def _spawn(name: str, argv: list[str]) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", name]
  env = dict(os.environ)
  here = os.path.dirname(os.path.abspath(__file__))
  env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
  return {"error": f"{name} failed (exit {proc.returncode}): {tail[0]}"}


def _torch_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("torch") is not None


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.worker:
    return _worker(args)

  passthrough = [a for a in argv if not a.startswith("--out")]
  if args.out:  # drop "--out PATH" pairs too
    passthrough = []
    skip = False
    for a in argv:
      if skip:
        skip = False
        continue
      if a == "--out":
        skip = True
        continue
      if a.startswith("--out="):
        continue
      passthrough.append(a)

  macs = forward_macs(args.variant, args.image_size)
  step_gflop = 3 * 2 * macs * args.batch_size / 1e9
  report = {
      "config": {k: getattr(args, k) for k in ("batch_size", "image_size", "dtype", "variant",
                                               "steps", "warmup", "peak_gflops")},
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpu_count": os.cpu_count()},
      "forward_macs_per_image": macs,
      "train_step_gflop": step_gflop,
      "runs": {},
      "notes": [],
  }
  names = ["jax"]
  from googlenet_jax import sharding
  if args.cpu_devices is None and sharding.cpu_devices_for(args.batch_size) > 1:
    names.append("jax_one_device")  # what splitting the batch over the cores gains
  if args.no_torch:
    report["notes"].append("PyTorch skipped (--no-torch)")
  elif not _torch_available():
    report["notes"].append("PyTorch skipped: torch is not installed")
  elif args.variant != "d2l":
    report["notes"].append("PyTorch skipped: the twin exists for the d2l variant only")
  else:
    names += ["torch_nchw", "torch_channels_last"]

  print(f"GoogLeNet {args.variant}, batch {args.batch_size}, {args.image_size}x{args.image_size}x1, "
        f"{args.dtype}; {macs / 1e6:.1f}M MACs/image forward, {step_gflop:.1f} GFLOP/step "
        f"(3x forward); peak {args.peak_gflops:g} GFLOP/s")
  for name in names:
    r = _spawn(name, passthrough)
    if "error" not in r:
      r["images_per_s"] = args.batch_size / r["step_s_median"]
      r["gflops"] = step_gflop / r["step_s_median"]
      r["mfu"] = r["gflops"] / args.peak_gflops
    report["runs"][name] = r
  torch_best = max((r["images_per_s"] for n, r in report["runs"].items()
                    if n.startswith("torch") and "images_per_s" in r), default=None)
  for name, r in report["runs"].items():
    if "error" in r:
      print(f"{name:20s} {r['error']}")
      continue
    if torch_best:
      r["ratio_to_torch_best"] = r["images_per_s"] / torch_best
    ratio = f" {r['ratio_to_torch_best']:.2f}x torch best" if torch_best else ""
    print(f"{name:20s} {r['images_per_s']:7.1f} img/s  {r['step_s_median'] * 1e3:7.0f} ms/step "
          f"(min {r['step_s_min'] * 1e3:.0f})  {r['gflops']:6.1f} GFLOP/s  MFU {r['mfu']:6.1%}  "
          f"compile {r['compile_s']:5.1f}s  peak RSS {r['peak_rss_mib']:6.0f} MiB{ratio}  "
          f"[{r['backend']}]")
  for note in report["notes"]:
    print("note:", note)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=2)
    print("wrote", args.out)
  return 0 if all("error" not in r for r in report["runs"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
