"""Where one GoogLeNet training step spends its time, per XLA operation.

  python benchmarks/profile_step.py                     # d2l, batch 128, 96x96x1, fp32
  python benchmarks/profile_step.py --batch-size 16 --image-size 32 --top 20

Compiles the real train step (googlenet_jax.training.make_train_step), runs it
--warmup times, then records --steps steps with jax.profiler into a Perfetto
trace and sums each compiled HLO instruction's time. Prints the step's median
wall time, the time by kind of operation (library-backed fusions such as
YNNPACK's convolutions and matrix products, XLA's own loop fusions, copies,
concatenations) and the --top instructions with their output shapes.

XLA:CPU runs independent operations on both cores at once, so the per-op times
add up to more than the wall time; compare them with each other.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from googlenet_jax import sharding, training
from googlenet_jax.models import GoogLeNet

# "%name = f32[128,24,24,64]{3,2,1,0} fusion(...), kind=kCustom, calls=%fused_computation.187"
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w-]+)\(")


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Compiled HLO instruction name -> (kind, output shape)."""
  table = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      name, shape, opcode = match.groups()
      if opcode == "fusion":
        kind = re.search(r"kind=(\w+)", line)
        kind = kind.group(1) if kind else "?"
        # Library-backed fusions are named after their library (ynn_fusion, xnn_fusion, ...).
        opcode = f"fusion {kind}" + (f" ({name.split('.')[0]})" if kind == "kCustom" else "")
      table[name] = (opcode, shape)
  return table


def traced_op_times(trace_dir: pathlib.Path) -> collections.Counter:
  """Total microseconds per event name in the Perfetto trace jax.profiler wrote."""
  (path,) = trace_dir.rglob("perfetto_trace.json.gz")
  trace = json.loads(gzip.decompress(path.read_bytes()))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and "dur" in event:
      totals[event["name"]] += event["dur"]
  return totals


def compile_step(args):
  model = GoogLeNet(num_classes=10, variant=args.variant, init_scheme="glorot_uniform",
                    dtype=jnp.dtype(args.dtype))
  tx = optax.sgd(0.01)
  mesh = sharding.make_mesh()
  image_shape = (args.image_size, args.image_size, 1)
  state = training.create_train_state(model, tx, jax.random.key(0), image_shape, mesh)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch_size, 28, 28, 1)).astype(np.uint8)
  labels = rng.integers(0, 10, args.batch_size).astype(np.int32)
  images, labels = sharding.put_batch((images, labels), mesh)
  compiled = training.make_train_step(model, tx, args.image_size).lower(state, images, labels).compile()
  return compiled, state, images, labels


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--image-size", type=int, default=96)
  parser.add_argument("--variant", default="d2l", choices=("d2l", "paper"))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args(argv)
  sharding.one_cpu_device_per_core(args.batch_size)  # the devices train.py would use

  compiled, state, images, labels = compile_step(args)
  wall = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, images, labels)
    jax.block_until_ready(metrics)
    if i >= args.warmup:
      wall.append(time.perf_counter() - start)
  step_ms = 1e3 * float(np.median(wall))
  print(f"step: {step_ms:.0f} ms median of {args.steps} "
        f"({args.batch_size / step_ms * 1e3:.1f} images/s, "
        f"{jax.device_count()} x {jax.default_backend()})")

  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        state, metrics = compiled(state, images, labels)
        jax.block_until_ready(metrics)
    totals = traced_op_times(pathlib.Path(trace_dir))

  table = instructions(compiled.as_text())
  per_step = {name: us / 1e3 / args.steps for name, us in totals.items() if name in table}
  total = sum(per_step.values())
  print(f"\nper-op time summed over threads: {total:.0f} ms/step")
  by_kind = collections.Counter()
  for name, ms in per_step.items():
    by_kind[table[name][0]] += ms
  for kind, ms in by_kind.most_common():
    if ms < 0.005 * total:
      break
    print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f}%  {kind}")
  print(f"\ntop {args.top} operations:")
  for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]:
    kind, shape = table[name]
    print(f"  {ms:8.1f} ms  {kind:40s} {shape:32s} {name}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
