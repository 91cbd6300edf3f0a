"""Train one config under several init schemes and compare them: a table and two plots.

  python -m googlenet_jax.sweep --config configs/quick.py \\
      --inits torch_default,lecun_normal,glorot_uniform,he_normal,lsuv [--batch-norm] [--out DIR]

Every scheme trains with the same config, data order and seed; only `init`
differs. Each trains in its own workdir <out>/<scheme>/ (checkpoints,
metrics.jsonl, summary.json, as train.py leaves them). Then the sweep writes
<out>/sweep.md and <out>/sweep.csv (final train loss, test accuracy, steps until
the train loss first drops below 2.0, whether the run stalled at chance) and
<out>/train_loss.png and <out>/test_accuracy.png, each overlaying every scheme.
The default <out> is runs/sweep_<config name>, with _bn appended under --batch-norm.

Re-running the same command with the same --out skips the finished schemes,
resumes an interrupted one from its latest checkpoint, and rewrites the tables
and plots. With --report-only it trains nothing and writes the tables and plots
of what <out> holds so far (a long sweep can be looked at while it runs); a run
not finished yet shows as "unfinished". The train loss is logged every 10 steps
(or every log_every_steps of the config where that is smaller; --log-every N
chooses), which is the resolution of the steps-to-2.0 column.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pathlib
import sys
from typing import Callable

import ml_collections

from googlenet_jax import checkpointing, cli, configuration, inits, input_pipeline, sharding
from googlenet_jax.layers import ACTIVATIONS
from googlenet_jax.reporting import METRICS_FILE

DEFAULT_INITS = "torch_default,lecun_normal,glorot_uniform,he_normal,lsuv"
LOSS_THRESHOLD = 2.0
LOG_EVERY_STEPS = 10
# Where summary.json has no "stalled" key: stalled = the final train loss within
# STALL_LOSS_BAND of ln(num_classes) and a test accuracy of at most STALL_MAX_ACCURACY.
STALL_LOSS_BAND = 0.01
STALL_MAX_ACCURACY = 0.15

SUMMARY_FILE = "summary.json"
STOPPED_FILE = "sweep_stopped.json"  # a scheme whose training stopped early (NaN/Inf, stall)
TABLE_MD, TABLE_CSV = "sweep.md", "sweep.csv"
LOSS_PLOT, ACCURACY_PLOT = "train_loss.png", "test_accuracy.png"
GRID_MD, GRID_CSV, GRID_PLOT = "grid.md", "grid.csv", "grid.png"


def scheme_config(config: ml_collections.ConfigDict, scheme: str) -> ml_collections.ConfigDict:
  """`config` with only its init replaced."""
  copy = config.copy_and_resolve_references()
  copy.init = scheme
  return copy


def dataset_facts(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(num_classes, total_steps) of a run of `config`; loading the data checks it before any work."""
  dataset = input_pipeline.load_dataset(config.dataset, config.data_dir or None)
  per_epoch = input_pipeline.steps_per_epoch(len(dataset.train_images), config.batch_size)
  if per_epoch == 0:
    raise configuration.ConfigError(f"batch_size {config.batch_size} exceeds the "
                                    f"{len(dataset.train_images)} training examples")
  return dataset.num_classes, config.steps or config.epochs * per_epoch


def scheme_dir(out: pathlib.Path, scheme: str) -> pathlib.Path:
  """<out>/<scheme>, with a parametrized spec made file-name safe."""
  return out / inits.slug(scheme)


def check_workdirs(out: pathlib.Path, configs: dict[str, ml_collections.ConfigDict]) -> None:
  """Refuses, before any training, a <out>/<scheme> that holds a run of another config."""
  for scheme, config in configs.items():
    workdir = scheme_dir(out, scheme)
    saved = checkpointing.load_config(workdir)
    diffs = configuration.incompatible_fields(saved, config.to_dict()) if saved else []
    if diffs:
      raise cli.UserError(f"{workdir} holds a run with another config: {'; '.join(diffs)}. "
                          "Use another --out, or the same settings to resume.")


def read_json(path: pathlib.Path) -> dict | None:
  return json.loads(path.read_text()) if path.is_file() else None


def is_done(workdir: pathlib.Path, total_steps: int) -> bool:
  """Finished (summary.json at the last step) or stopped early at this length; the config was checked."""
  summary = read_json(workdir / SUMMARY_FILE)
  stopped = read_json(workdir / STOPPED_FILE)
  return bool((summary and summary.get("step") == total_steps)
              or (stopped and stopped.get("total_steps") == total_steps))


def stopping_errors() -> tuple[type[Exception], ...]:
  """What ends one scheme's training but not the sweep: NaN/Inf, a stall under fail_on_stall."""
  from googlenet_jax import stall, training
  return tuple({stall.TrainingStopped, getattr(training, "TrainingDiverged", stall.TrainingStopped)})


def train_scheme(config, workdir: pathlib.Path, total_steps: int, make_reporter) -> None:
  """Trains (or resumes) one scheme; an early stop is recorded in STOPPED_FILE, not raised."""
  from googlenet_jax import training  # JAX's heavy imports start here.
  (workdir / STOPPED_FILE).unlink(missing_ok=True)
  try:
    training.train_and_evaluate(config, str(workdir), make_reporter(workdir))
  except stopping_errors() as e:
    record = {"total_steps": total_steps, "error": type(e).__name__, "message": str(e)}
    (workdir / STOPPED_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{config.init}: training stopped: {e}", file=sys.stderr)


@dataclasses.dataclass
class SchemeResult:
  """What one scheme's workdir holds: metrics records (one per split and step), summary, early stop."""
  scheme: str
  records: list[dict]
  summary: dict | None = None
  stopped: dict | None = None  # {"error": class name, "message": ...} when training stopped early
  finished: bool = True  # False: trained (if at all) short of its total steps, not stopped early

  def split(self, name: str) -> list[dict]:
    return [r for r in self.records if r["split"] == name]


def read_records(path: pathlib.Path) -> list[dict]:
  """metrics.jsonl sorted by step; of a step logged twice (a resumed run), the later record."""
  if not path.is_file():
    return []
  latest = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      latest[(record["split"], record["step"])] = record
  return sorted(latest.values(), key=lambda r: r["step"])


def load_result(workdir: pathlib.Path, scheme: str, total_steps: int) -> SchemeResult:
  summary = read_json(workdir / SUMMARY_FILE)
  records = read_records(workdir / METRICS_FILE)
  if summary:  # Records past the final step belong to an older, longer run.
    records = [r for r in records if r["step"] <= summary["step"]]
  return SchemeResult(scheme, records, summary, read_json(workdir / STOPPED_FILE),
                      finished=is_done(workdir, total_steps))


def steps_to_loss(train_records: list[dict], threshold: float = LOSS_THRESHOLD) -> int | None:
  """The first logged step whose train loss is below `threshold`; None if none is."""
  return next((r["step"] for r in train_records if r["loss"] < threshold), None)


def is_stalled(result: SchemeResult, final_loss: float | None, test_accuracy: float | None,
               num_classes: int) -> bool | None:
  """summary.json's "stalled" where present; else loss at ln(num_classes) and accuracy near chance."""
  if result.summary and isinstance(result.summary.get("stalled"), bool):
    return result.summary["stalled"]
  if result.stopped and result.stopped.get("error") == "TrainingStalled":
    return True
  if final_loss is None or test_accuracy is None:
    return None
  return (abs(final_loss - math.log(num_classes)) <= STALL_LOSS_BAND
          and test_accuracy <= STALL_MAX_ACCURACY)


def table_row(result: SchemeResult, num_classes: int, threshold: float = LOSS_THRESHOLD) -> dict:
  train = result.split("train")
  if not result.finished:  # Half a run's figures would read as a result: none are shown.
    last_step = train[-1]["step"] if train else 0
    return {"scheme": result.scheme, "final_train_loss": None, "test_accuracy": None,
            "steps_to_threshold": None, "stalled": None, "finished": False,
            "note": f"unfinished (trained to step {last_step})"}
  final_loss = train[-1]["loss"] if train else None
  accuracy = result.summary.get("test_accuracy") if result.summary else None
  note = f"stopped: {result.stopped['message']}" if result.stopped else ""
  return {"scheme": result.scheme, "final_train_loss": final_loss, "test_accuracy": accuracy,
          "steps_to_threshold": steps_to_loss(train, threshold),
          "stalled": is_stalled(result, final_loss, accuracy, num_classes), "finished": True,
          "note": note}


def build_table(results: list[SchemeResult], num_classes: int,
                threshold: float = LOSS_THRESHOLD) -> list[dict]:
  """One row per scheme: final train loss, test accuracy, steps to loss < threshold, stalled."""
  return [table_row(r, num_classes, threshold) for r in results]


def header(threshold: float = LOSS_THRESHOLD) -> list[str]:
  return ["scheme", "final train loss", "test accuracy", f"steps to loss < {threshold:g}", "stalled"]


def cells(row: dict) -> list[str]:
  def number(x):
    return "-" if x is None else f"{x:.4f}"

  steps = row["steps_to_threshold"]
  reached = "-" if row["final_train_loss"] is None else "never" if steps is None else str(steps)
  return [row["scheme"], number(row["final_train_loss"]), number(row["test_accuracy"]), reached,
          {True: "yes", False: "no", None: "-"}[row["stalled"]]]


def format_markdown(rows: list[dict], title: str, details: str, num_classes: int,
                    threshold: float = LOSS_THRESHOLD) -> str:
  lines = [f"# {title}", "", details, "", "| " + " | ".join(header(threshold)) + " |",
           "|---|---:|---:|---:|---|"]
  lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
  lines += ["", f"Chance level: loss ln {num_classes} = {math.log(num_classes):.4f}, accuracy "
            f"{1 / num_classes:.2f}. Final train loss: the mean over the last logged interval. "
            "Stalled: the training loop's stall detector (summary.json), else a final loss within "
            f"{STALL_LOSS_BAND} of ln {num_classes} with test accuracy <= {STALL_MAX_ACCURACY}."]
  lines += [f"- {row['scheme']}: {row['note']}" for row in rows if row["note"]]
  return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: pathlib.Path, batch_norm: bool,
              threshold: float = LOSS_THRESHOLD) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header(threshold) + ["batch norm", "note"])
    for row in rows:
      writer.writerow(cells(row) + ["on" if batch_norm else "off", row["note"]])


def describe(config: ml_collections.ConfigDict, config_name: str, total_steps: int) -> tuple[str, str]:
  """(a tag for titles: config and BatchNorm on/off, one line of the settings all schemes share)."""
  tag = f"{config_name}, BatchNorm {'on' if config.model.batch_norm else 'off'}"
  o = config.optimizer
  details = (f"GoogLeNet ({config.model.variant}, {config.model.activation}) on {config.dataset} at "
             f"{config.image_size}x{config.image_size}; {o.name} lr {o.lr:g} ({o.schedule}), batch "
             f"{config.batch_size}, {total_steps} steps, seed {config.seed}, train loss logged every "
             f"{config.log_every_steps} steps. Same config, data order and seed for every scheme.")
  return tag, details


def write_report(out: pathlib.Path, config: ml_collections.ConfigDict, schemes: list[str],
                 config_name: str, num_classes: int, total_steps: int,
                 threshold: float = LOSS_THRESHOLD) -> str:
  """Writes the Markdown and CSV tables and the two plots from the workdirs; returns
  (the Markdown, the table's rows)."""
  from googlenet_jax import plots  # matplotlib only here.
  results = [load_result(scheme_dir(out, s), s, total_steps) for s in schemes]
  rows = build_table(results, num_classes, threshold)
  tag, details = describe(config, config_name, total_steps)
  markdown = format_markdown(rows, f"Init sweep: {tag}", details, num_classes, threshold)
  out.mkdir(parents=True, exist_ok=True)  # --report-only on a grid column not started yet
  (out / TABLE_MD).write_text(markdown)
  write_csv(rows, out / TABLE_CSV, config.model.batch_norm, threshold)
  records = {r.scheme: r.records for r in results}
  plots.plot_sweep_loss(records, out / LOSS_PLOT, num_classes,
                        title=f"Train loss by init scheme ({tag})")
  plots.plot_sweep_accuracy(records, out / ACCURACY_PLOT, num_classes,
                            title=f"Test accuracy by init scheme ({tag})")
  return markdown, rows


def default_reporter(workdir: pathlib.Path):
  from googlenet_jax import reporting
  return reporting.Reporter(workdir)


def train_schemes(configs: dict[str, ml_collections.ConfigDict], out: pathlib.Path,
                  total_steps: int, make_reporter: Callable, label: str = "") -> None:
  """Trains every scheme of `configs` not yet done in <out>/<scheme>/."""
  for i, (scheme, scheme_cfg) in enumerate(configs.items(), 1):
    workdir = cli.prepare_workdir(scheme_dir(out, scheme))
    name = f"{label}{scheme}"
    if is_done(workdir, total_steps):
      print(f"[{i}/{len(configs)}] {name}: done in {workdir}, skipped", file=sys.stderr)
      continue
    print(f"[{i}/{len(configs)}] {name}: training in {workdir}", file=sys.stderr)
    train_scheme(scheme_cfg, workdir, total_steps, make_reporter)


def run_sweep(config: ml_collections.ConfigDict, schemes: list[str], out: str | pathlib.Path,
              config_name: str = "config", make_reporter: Callable = default_reporter,
              threshold: float = LOSS_THRESHOLD, train: bool = True) -> str:
  """Trains every scheme not yet done in <out>/<scheme>/ (unless `train` is False), then
  writes the report; returns its Markdown."""
  from googlenet_jax import training
  out = pathlib.Path(out)
  training.resolve_dtype(config)  # as train_and_evaluate saves it, for check_workdirs
  num_classes, total_steps = dataset_facts(config)
  configs = {s: scheme_config(config, s) for s in schemes}
  check_workdirs(out, configs)
  if train:
    train_schemes(configs, out, total_steps, make_reporter)
  return write_report(out, config, schemes, config_name, num_classes, total_steps, threshold)[0]


def activation_config(config: ml_collections.ConfigDict, activation: str) -> ml_collections.ConfigDict:
  copy = config.copy_and_resolve_references()
  copy.model.activation = activation
  configuration.validate(copy)
  return copy


def grid_cell(row: dict) -> str:
  """A grid cell: the test accuracy, and whether the run stalled or diverged."""
  if not row["finished"]:
    return "unfinished"
  if row["note"] and "NaN/Inf" in row["note"]:
    return "diverged"
  accuracy = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
  return f"{accuracy} (stalled)" if row["stalled"] else accuracy


def format_grid(grid: dict[str, dict[str, dict]], activations: list[str], title: str,
                details: str) -> str:
  lines = [f"# {title}", "", details, "", "| scheme | " + " | ".join(activations) + " |",
           "|---|" + "---:|" * len(activations)]
  lines += [f"| {scheme} | " + " | ".join(grid_cell(row[a]) for a in activations) + " |"
            for scheme, row in grid.items()]
  lines += ["", "Cells: test accuracy after the full run; (stalled): the loss sat at chance "
            "(see each activation's sweep.md); diverged: NaN/Inf stopped the run; unfinished: "
            "not trained to the end yet (a --report-only look at a grid in progress). Per-activation "
            "tables and curves: <activation>/sweep.md, train_loss.png, test_accuracy.png."]
  return "\n".join(lines) + "\n"


def run_grid(config: ml_collections.ConfigDict, schemes: list[str], activations: list[str],
             out: str | pathlib.Path, config_name: str = "config",
             make_reporter: Callable = default_reporter, train: bool = True) -> str:
  """The init x activation grid: a sweep per activation in <out>/<activation>/, then
  <out>/grid.md, grid.csv and the heat map grid.png; returns the Markdown."""
  from googlenet_jax import plots, training  # matplotlib only here.
  out = pathlib.Path(out)
  training.resolve_dtype(config)  # as train_and_evaluate saves it, for check_workdirs
  num_classes, total_steps = dataset_facts(config)
  per_activation = {a: activation_config(config, a) for a in activations}
  cells = {a: {s: scheme_config(c, s) for s in schemes} for a, c in per_activation.items()}
  for activation, configs in cells.items():  # every refusal before any training
    check_workdirs(out / activation, configs)
  for activation, configs in cells.items():
    if train:
      train_schemes(configs, out / activation, total_steps, make_reporter, f"{activation} ")
  grid: dict[str, dict[str, dict]] = {s: {} for s in schemes}
  for activation, cfg in per_activation.items():
    _, rows = write_report(out / activation, cfg, schemes, config_name, num_classes, total_steps)
    for row in rows:
      grid[row["scheme"]][activation] = row
  tag, details = describe(config, config_name, total_steps)
  details = details.replace(f", {config.model.activation})", ")")
  markdown = format_grid(grid, activations, f"Init x activation grid: {tag}", details)
  (out / GRID_MD).write_text(markdown)
  with open(out / GRID_CSV, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["scheme", "activation", "test accuracy", "final train loss", "stalled", "note"])
    for scheme, row in grid.items():
      for a in activations:
        r = row[a]
        writer.writerow([scheme, a, r["test_accuracy"], r["final_train_loss"], r["stalled"], r["note"]])
  accuracy = [[row[a]["test_accuracy"] for a in activations] for row in grid.values()]
  labels = [[grid_cell(row[a]) for a in activations] for row in grid.values()]
  plots.plot_grid_heatmap(accuracy, labels, schemes, activations, out / GRID_PLOT, num_classes,
                          title=f"Test accuracy, init x activation ({tag})")
  return markdown


def make_parser() -> argparse.ArgumentParser:
  parser = cli.Parser(prog="python -m googlenet_jax.sweep", description=__doc__,
                      epilog=cli.CONFIG_HELP, conflict_handler="resolve",
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_config_flags(parser)
  parser.add_argument("--init", dest="single_init", help=argparse.SUPPRESS)  # refused in main
  parser.add_argument("--inits", default=DEFAULT_INITS,
                      help=f"comma-separated init schemes (default: {DEFAULT_INITS})")
  parser.add_argument("--activations", help="comma-separated activations: run the init x "
                      "activation grid (relu, tanh, sigmoid, gelu, leaky_relu)")
  parser.add_argument("--out", help="folder of the per-scheme workdirs, tables and plots "
                      "(default: runs/sweep_<config name>[_bn], runs/grid_<config name>[_bn] "
                      "with --activations)")
  parser.add_argument("--report-only", action="store_true", help="train nothing: write the "
                      "tables and plots of the runs --out holds so far (unfinished runs say so)")
  parser.add_argument("--log-every", type=int, help="log the train loss every N steps: the "
                      f"resolution of steps-to-{LOSS_THRESHOLD:g} (default: the config's "
                      f"log_every_steps, at most {LOG_EVERY_STEPS})")
  return parser


def main(argv=None) -> int:
  args, extra = make_parser().parse_known_args(argv)
  if args.single_init is not None or any(e.startswith("--config.init=") for e in extra):
    raise cli.UserError("the sweep sets the init of each run: list the schemes with "
                        "--inits a,b,c instead of --init")
  schemes = cli.parse_init_list(args.inits, "--inits")
  config = cli.build_config(args, extra)
  sharding.one_cpu_device_per_core(config.batch_size)
  if args.log_every is not None and args.log_every <= 0:
    raise cli.UserError(f"--log-every must be positive, got {args.log_every}")
  config.log_every_steps = args.log_every or min(config.log_every_steps, LOG_EVERY_STEPS)
  config_name = pathlib.Path(args.config).stem
  activations = parse_activations(args.activations) if args.activations else None
  kind = "grid" if activations else "sweep"
  out = cli.prepare_workdir(args.out or pathlib.Path("runs") / (
      f"{kind}_{config_name}" + ("_bn" if config.model.batch_norm else "")))
  if activations:
    print(run_grid(config, schemes, activations, out, args.config, train=not args.report_only))
    print(f"grid: {out / GRID_MD}, {out / GRID_CSV}; heat map: {out / GRID_PLOT}")
    return 0
  markdown = run_sweep(config, schemes, out, args.config, train=not args.report_only)
  print(markdown)
  print(f"tables: {out / TABLE_MD}, {out / TABLE_CSV}; plots: {out / LOSS_PLOT}, {out / ACCURACY_PLOT}")
  return 0


def parse_activations(text: str) -> list[str]:
  names = list(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
  unknown = [a for a in names if a not in ACTIVATIONS]
  if unknown or not names:
    raise cli.UserError(f"--activations: unknown activation {', '.join(map(repr, unknown)) or 'none'}; "
                        f"valid choices: {', '.join(ACTIVATIONS)}")
  return names


if __name__ == "__main__":
  sys.exit(cli.run(main))
