"""Why an init fails, before training: signal propagation through GoogLeNet at initialization.

  python -m googlenet_jax.diagnose --init torch_default
  python -m googlenet_jax.diagnose --init glorot,he_normal,torch_default,lecun_normal,lsuv

One forward and backward pass per scheme on the first training batch of a real
dataset (Fashion-MNIST by default, preprocessed as train.py does), with fresh
parameters. For every conv and dense layer in depth order it prints the
pre-activation mean and std, the share of dead ReLUs, std(dL/dW) and its ratio
to std(W), and the std the variance-propagation theory predicts,
Var(y) = r * fan_in * Var(W) * E[x^2] + Var(b) (googlenet_jax.diagnostics says
where E[x^2] comes from). Then the logits' std across the batch and a verdict:
healthy, vanishing or exploding, with the first layer that left the band.

Writes <out>/diagnose.json (every figure) and <out>/signal_propagation.png
(activation and gradient std against depth, one line per scheme); the default
<out> is runs/diagnose.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from googlenet_jax import cli, configuration, inits, input_pipeline
from googlenet_jax.layers import ACTIVATIONS
from googlenet_jax.models import MIN_IMAGE_SIZE, VARIANTS

DEFAULT_INITS = "glorot_uniform,he_normal,torch_default,lecun_normal,lsuv"
REPORT_FILE = "diagnose.json"
PLOT_FILE = "signal_propagation.png"


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be positive, got {value}")
  return value


def make_parser() -> argparse.ArgumentParser:
  parser = cli.Parser(prog="python -m googlenet_jax.diagnose", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog="Init schemes:\n" + inits.describe_inits())
  parser.add_argument("--init", default=DEFAULT_INITS,
                      help=f"one scheme or a comma-separated list (default: {DEFAULT_INITS})")
  parser.add_argument("--dataset", default="fashion_mnist",
                      help="fashion_mnist, mnist, synthetic or tfds:<name>")
  parser.add_argument("--data-dir", help="directory holding the dataset's files")
  parser.add_argument("--image-size", type=_positive_int, default=96,
                      help=f"images are resized to this square size (>= {MIN_IMAGE_SIZE})")
  parser.add_argument("--batch-size", type=_positive_int, default=128)
  parser.add_argument("--variant", default="d2l", help=", ".join(VARIANTS))
  parser.add_argument("--batch-norm", action="store_true",
                      help="conv + BatchNorm + activation everywhere")
  parser.add_argument("--activation", default="relu",
                      help=f"the nonlinearity after every conv: {', '.join(ACTIVATIONS)} (default relu)")
  parser.add_argument("--seed", type=int, default=0, help="parameter init and data order")
  parser.add_argument("--out", default="runs/diagnose", help="folder for the JSON and the PNG")
  return parser


def check_args(args) -> None:
  if args.variant not in VARIANTS:
    raise cli.UserError(f"unknown variant {args.variant!r}; valid choices: {', '.join(VARIANTS)}")
  if args.activation not in ACTIVATIONS:
    raise cli.UserError(f"unknown activation {args.activation!r}; valid choices: "
                        f"{', '.join(ACTIVATIONS)}")
  if args.image_size < MIN_IMAGE_SIZE:
    raise cli.UserError(f"--image-size {args.image_size} is too small: GoogLeNet halves it five "
                        f"times, so it needs at least {MIN_IMAGE_SIZE}")


def first_batch(dataset, batch_size: int, seed: int, image_size: int):
  """The first training batch in the run's data order, preprocessed as the train step does."""
  import jax.numpy as jnp
  if batch_size > len(dataset.train_images):
    raise configuration.ConfigError(f"--batch-size {batch_size} exceeds the "
                                    f"{len(dataset.train_images)} training examples")
  images, labels = next(input_pipeline.train_batches(
      dataset.train_images, dataset.train_labels, batch_size, seed, epoch=0))
  return input_pipeline.preprocess(jnp.asarray(images), image_size), jnp.asarray(labels)


def _number(x, digits: int = 3) -> str:
  return "-" if x is None else f"{x:.{digits}g}"


def format_report(report) -> str:
  """One scheme's per-layer table, its logit spread and verdict, as terminal text."""
  lines = [f"== {report.scheme}: {report.formula}",
           f"{'layer':32s} {'fan_in':>6s} {'mean':>9s} {'std':>9s} {'pred std':>9s} {'meas/pred':>9s} "
           f"{'dead':>5s} {'grad std':>9s} {'grad/W':>9s}  E[x^2] from"]
  for s in report.layers:
    dead = "-" if s.dead_fraction is None else f"{s.dead_fraction:.0%}"
    lines.append(f"{s.layer:32s} {s.fan_in:6d} {s.mean:9.2e} {s.std:9.2e} {_number(s.predicted_std):>9s} "
                 f"{_number(s.ratio):>9s} {dead:>5s} {s.grad_std:9.2e} {s.grad_to_weight:9.2e}  "
                 f"{s.prediction or '-'}")
  where = f" (first at {report.first_unhealthy})" if report.first_unhealthy else ""
  lines.append(f"loss {report.loss:.4f}; logit std across the batch {report.logits_std:.3e}; "
               f"verdict: {report.verdict.upper()}{where}: {report.reason}")
  return "\n".join(lines)


def format_summary(reports) -> str:
  lines = ["", f"{'scheme':16s} {'first conv std':>14s} {'last conv std':>13s} {'logit std':>10s}  verdict"]
  for r in reports:
    convs = [s for s in r.layers if s.dead_fraction is not None]
    where = f" at {r.first_unhealthy}" if r.first_unhealthy else ""
    lines.append(f"{r.scheme:16s} {convs[0].std:14.2e} {convs[-1].std:13.2e} {r.logits_std:10.2e}  "
                 f"{r.verdict}{where}")
  return "\n".join(lines)


def write_outputs(reports, out: pathlib.Path, settings: dict) -> tuple[pathlib.Path, pathlib.Path]:
  from googlenet_jax import plots  # matplotlib only here.
  report_path = out / REPORT_FILE
  report_path.write_text(json.dumps({"settings": settings,
                                     "schemes": [r.to_dict() for r in reports]}, indent=2) + "\n")
  title = (f"GoogLeNet ({settings['variant']}, {settings['activation']}"
           f"{', BatchNorm' if settings['batch_norm'] else ''}) at init, "
           f"{settings['dataset']} {settings['image_size']}x{settings['image_size']}, "
           f"batch {settings['batch_size']}")
  plot_path = plots.plot_signal_propagation(
      {r.scheme: [(s.layer, s.std, s.grad_std) for s in r.layers] for r in reports},
      out / PLOT_FILE, title)
  return report_path, plot_path


def main(argv=None) -> int:
  args = make_parser().parse_args(argv)
  check_args(args)
  schemes = cli.parse_init_list(args.init, "--init")
  dataset = input_pipeline.load_dataset(args.dataset, args.data_dir)
  out = cli.prepare_workdir(args.out)

  from googlenet_jax import diagnostics  # JAX's heavy work starts here, after the checks.
  images, labels = first_batch(dataset, args.batch_size, args.seed, args.image_size)
  reports = []
  for scheme in schemes:
    print(f"diagnosing {scheme} ...", file=sys.stderr, flush=True)
    report = diagnostics.diagnose_scheme(scheme, images, labels, dataset.num_classes,
                                         variant=args.variant, batch_norm=args.batch_norm,
                                         activation=args.activation, seed=args.seed)
    print(format_report(report) + "\n", flush=True)
    reports.append(report)
  print(format_summary(reports))
  settings = {"dataset": dataset.name, "image_size": args.image_size, "batch_size": args.batch_size,
              "variant": args.variant, "batch_norm": args.batch_norm,
              "activation": args.activation, "seed": args.seed}
  report_path, plot_path = write_outputs(reports, out, settings)
  print(f"\nreport: {report_path}; plot: {plot_path}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
