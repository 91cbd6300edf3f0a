"""Per-op timings of GoogLeNet's kxk convolutions on XLA (forward, input grad, kernel grad).

Compares XLA's own conv gradients with alternative formulations (im2col kernel
gradient, per-tap accumulation). Shapes: d2l GoogLeNet at --image-size, --batch-size.

  python benchmarks/op_bench.py --batch-size 128 --image-size 96
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np
from jax import lax

DN = ("NHWC", "HWIO", "NHWC")


def d2l_convs(size: int):
  """(name, spatial_in, c_in, c_out, k, stride, pad) of every kxk conv (k>1) of d2l GoogLeNet."""
  from googlenet_jax.models import INCEPTION_BLOCKS, pool_after
  s = size
  out = [("conv1 7x7/2", s, 1, 64, 7, 2, 3)]
  s = (s + 6 - 7) // 2 + 1
  s = (s + 2 - 3) // 2 + 1
  out.append(("conv2 3x3", s, 64, 192, 3, 1, 1))
  s = (s + 2 - 3) // 2 + 1
  for name, c1, c2, c3, c4 in INCEPTION_BLOCKS:
    out.append((f"{name} 3x3", s, c2[0], c2[1], 3, 1, 1))
    out.append((f"{name} 5x5", s, c3[0], c3[1], 5, 1, 2))
    if name in pool_after(INCEPTION_BLOCKS):
      s = (s + 2 - 3) // 2 + 1
  return out


def timeit(fn, *args, reps=5):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def conv(x, w, s, p):
  return lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=DN)


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch-size", type=int, default=128)
  ap.add_argument("--image-size", type=int, default=96)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--only", default="", help="substring filter on op names")
  args = ap.parse_args(argv)
  from googlenet_jax import layers
  n = args.batch_size
  rows = []
  print(f"{'op':14s} {'GF':>6s} | {'fwd':>14s} {'dx xla':>14s} {'dx ours':>14s} "
        f"{'dw xla':>14s} {'dw ours':>14s}")
  for name, s, ci, co, k, st, p in d2l_convs(args.image_size):
    if args.only and args.only not in name:
      continue
    so = (s + 2 * p - k) // st + 1
    gflop = 2 * n * so * so * k * k * ci * co / 1e9
    kx, kw_, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, s, s, ci))
    w = jax.random.normal(kw_, (k, k, ci, co)) * 0.05
    g = jax.random.normal(kg, (n, so, so, co))

    def mk(f):
      fwd = jax.jit(lambda x, w: f(x, w, st, p))
      dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: f(x, w, st, p), x)[1](g)[0])
      dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: f(x, w, st, p), w)[1](g)[0])
      return fwd, dx, dw

    ref = mk(conv)
    ours = mk(layers.conv2d)
    t = [timeit(ref[0], x, w, reps=args.reps),
         timeit(ref[1], x, w, g, reps=args.reps), timeit(ours[1], x, w, g, reps=args.reps),
         timeit(ref[2], x, w, g, reps=args.reps), timeit(ours[2], x, w, g, reps=args.reps)]
    fmt = lambda v: f"{v * 1e3:6.1f}ms {gflop / v:5.0f}"
    print(f"{name:14s} {gflop:6.2f} | " + " ".join(fmt(v) for v in t), flush=True)
    rows.append((name, gflop, t))
  tot = np.sum([r[2] for r in rows], axis=0)
  gf = sum(r[1] for r in rows)
  print(f"{'total':14s} {gf:6.2f} | " + " ".join(f"{v * 1e3:6.1f}ms {gf / v:5.0f}" for v in tot))
  return 0


if __name__ == "__main__":
  sys.exit(main())
