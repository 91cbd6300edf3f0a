"""The init sweep: a tiny two-scheme run's report, skipping finished schemes, resuming one."""

import csv
import json
import shutil

import pytest

from googlenet_jax import cli, sweep, training
from googlenet_jax.sweep import SchemeResult

TINY_FLAGS = ["--dataset", "synthetic", "--variant", "tiny", "--image-size", "32", "--batch-size", "16",
              "--steps", "4", "--lr", "0.01", "--log-every", "2", "--config.eval_batch_size=256",
              "--config.checkpoint_every_steps=2", "--inits", "kaiming,glorot"]
SCHEMES = ["he_normal", "glorot_uniform"]  # what the aliases above resolve to


def run_sweep_cli(out, *flags):
  return sweep.main(TINY_FLAGS + ["--out", str(out), *flags])


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep")
  assert run_sweep_cli(out) == 0
  return out


def copy_of(finished_sweep, tmp_path):
  out = tmp_path / "sweep"
  shutil.copytree(finished_sweep, out)
  return out


def test_sweep_writes_tables_and_plots(finished_sweep):
  with open(finished_sweep / sweep.TABLE_CSV) as f:
    rows = list(csv.DictReader(f))
  assert [r["scheme"] for r in rows] == SCHEMES
  assert all(r["batch norm"] == "off" and 0 <= float(r["test accuracy"]) <= 1 for r in rows)
  markdown = (finished_sweep / sweep.TABLE_MD).read_text()
  assert markdown.startswith("# Init sweep:") and "BatchNorm off" in markdown
  assert all(markdown.count(f"| {s} |") == 1 for s in SCHEMES)
  for plot in (sweep.LOSS_PLOT, sweep.ACCURACY_PLOT):
    assert (finished_sweep / plot).read_bytes()[:4] == b"\x89PNG"
  configs = [json.loads((finished_sweep / s / "config.json").read_text()) for s in SCHEMES]
  assert [c.pop("init") for c in configs] == SCHEMES and configs[0] == configs[1]
  assert configs[0]["log_every_steps"] == 2
  for s in SCHEMES:
    assert json.loads((finished_sweep / s / "summary.json").read_text())["step"] == 4


def test_rerun_skips_finished_schemes(finished_sweep, tmp_path, monkeypatch):
  out = copy_of(finished_sweep, tmp_path)
  metrics = {s: (out / s / "metrics.jsonl").read_bytes() for s in SCHEMES}
  (out / sweep.TABLE_MD).unlink()

  def must_not_train(*args):
    raise AssertionError("a finished scheme was trained again")

  monkeypatch.setattr(training, "train_and_evaluate", must_not_train)
  assert run_sweep_cli(out) == 0
  assert (out / sweep.TABLE_MD).is_file()
  assert {s: (out / s / "metrics.jsonl").read_bytes() for s in SCHEMES} == metrics
  with pytest.raises(cli.UserError, match="holds a run with another config: model.batch_norm"):
    run_sweep_cli(out, "--batch-norm", "--steps", "6")


def test_interrupted_scheme_resumes_from_its_checkpoint(finished_sweep, tmp_path, monkeypatch,
                                                         capsys):
  out = copy_of(finished_sweep, tmp_path)
  workdir = out / "glorot_uniform"
  (workdir / "summary.json").unlink()  # Killed after the checkpoint at step 2:
  shutil.rmtree(workdir / "checkpoints" / "4")
  logged = len(read_jsonl(workdir / "metrics.jsonl"))
  trained, real = [], training.train_and_evaluate

  def spy(config, workdir, reporter):
    trained.append(config.init)
    return real(config, workdir, reporter)

  monkeypatch.setattr(training, "train_and_evaluate", spy)
  assert run_sweep_cli(out) == 0
  assert trained == ["glorot_uniform"]
  assert "resumed from the checkpoint at step 2" in capsys.readouterr().err
  new = read_jsonl(workdir / "metrics.jsonl")[logged:]
  assert [r["step"] for r in new if r["split"] == "train"] == [4]  # not step 2 again
  assert json.loads((workdir / "summary.json").read_text())["step"] == 4


@pytest.mark.parametrize("flags,message", [
    (["--inits", "he_normal,glorious"], "unknown init scheme 'glorious'; valid choices: "),
    (["--init", "he_normal"], "--inits a,b,c instead of --init"),
    (["--config.init=he_normal"], "--inits a,b,c instead of --init"),
    (["--inits", ","], "--inits names no scheme"),
    (["--log-every", "0"], "--log-every must be positive"),
    (["--activations", "relu,swish"], "--activations: unknown activation 'swish'"),
    (["--inits", "he_normal:mode=sideways"], "bad value 'sideways' for mode"),
])
def test_bad_input_exits_2_before_any_work(flags, message, tmp_path, run_main):
  out = tmp_path / "out"
  result = run_main(sweep.main, ["--out", str(out), *flags])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert message in lines[0] and not out.exists()


def train_records(losses, every=10):
  return [{"split": "train", "step": every * (i + 1), "loss": loss, "accuracy": 0.0}
          for i, loss in enumerate(losses)]


def test_build_table_on_hand_written_metrics():
  results = [
      SchemeResult("he_normal", train_records([2.31, 2.0, 1.97, 1.2]),
                   {"step": 40, "test_accuracy": 0.71}),
      SchemeResult("torch_default", train_records([2.3031, 2.3027, 2.3020]),
                   {"step": 30, "test_accuracy": 0.10}),
      SchemeResult("near_chance_but_learning", train_records([2.301]),
                   {"step": 10, "test_accuracy": 0.20}),
      SchemeResult("detector_says_no", train_records([2.3026]),
                   {"step": 10, "test_accuracy": 0.10, "stalled": False}),
      SchemeResult("diverged", train_records([2.2, 1.9]), None,
                   {"error": "TrainingDiverged", "message": "loss became NaN at step 30"}),
  ]
  rows = sweep.build_table(results, num_classes=10)
  assert [r["steps_to_threshold"] for r in rows] == [30, None, None, None, 20]
  assert [r["stalled"] for r in rows] == [False, True, False, False, None]
  assert rows[0]["final_train_loss"] == 1.2 and rows[4]["test_accuracy"] is None
  assert sweep.cells(rows[1]) == ["torch_default", "2.3020", "0.1000", "never", "yes"]
  assert sweep.cells(rows[4])[2:] == ["-", "20", "-"]
  markdown = sweep.format_markdown(rows, "Init sweep: t, BatchNorm on", "details", 10)
  assert "| steps to loss < 2 |" in markdown and "ln 10 = 2.3026" in markdown
  assert "- diverged: stopped: loss became NaN at step 30" in markdown


def test_resumed_metrics_keep_the_latest_record_per_step(tmp_path):
  lines = train_records([2.3, 2.2, 2.1]) + train_records([2.3, 1.5])  # resumed from step 10
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (tmp_path / "summary.json").write_text(json.dumps({"step": 20, "test_accuracy": 0.5}))
  result = sweep.load_result(tmp_path, "he_normal", total_steps=20)
  assert [(r["step"], r["loss"]) for r in result.records] == [(10, 2.3), (20, 1.5)]
  assert result.finished and not sweep.load_result(tmp_path, "he_normal", total_steps=30).finished


def test_an_unfinished_run_shows_no_figures():
  half_run = SchemeResult("he_normal", train_records([2.31, 2.0]), finished=False)
  row = sweep.table_row(half_run, num_classes=10)
  assert sweep.cells(row) == ["he_normal", "-", "-", "-", "-"]
  assert row["note"] == "unfinished (trained to step 20)" and sweep.grid_cell(row) == "unfinished"


def test_report_only_trains_nothing_and_marks_unfinished_runs(finished_sweep, tmp_path, monkeypatch):
  out = copy_of(finished_sweep, tmp_path)
  (out / "glorot_uniform" / "summary.json").unlink()  # as if still training

  def must_not_train(*args):
    raise AssertionError("--report-only trained")

  monkeypatch.setattr(training, "train_and_evaluate", must_not_train)
  assert run_sweep_cli(out, "--report-only") == 0
  markdown = (out / sweep.TABLE_MD).read_text()
  assert "- glorot_uniform: unfinished (trained to step 4)" in markdown
  assert "| glorot_uniform | - | - | - | - |" in markdown
  assert "| he_normal | - |" not in markdown  # the finished run keeps its figures


def test_grid_of_inits_and_activations(tmp_path):
  out = tmp_path / "grid"
  flags = [f for f in TINY_FLAGS if f not in ("--inits", "kaiming,glorot")]
  assert sweep.main(flags + ["--steps", "2", "--inits", "kaiming,normal:std=0.02",
                             "--activations", "relu,tanh", "--out", str(out)]) == 0
  with open(out / sweep.GRID_CSV) as f:
    rows = list(csv.DictReader(f))
  assert [(r["scheme"], r["activation"]) for r in rows] == [
      ("he_normal", "relu"), ("he_normal", "tanh"), ("normal:std=0.02", "relu"),
      ("normal:std=0.02", "tanh")]
  markdown = (out / sweep.GRID_MD).read_text()
  assert "| scheme | relu | tanh |" in markdown and "| normal:std=0.02 |" in markdown
  assert (out / sweep.GRID_PLOT).read_bytes()[:4] == b"\x89PNG"
  config = json.loads((out / "tanh" / "normal-std=0.02" / "config.json").read_text())
  assert config["init"] == "normal:std=0.02" and config["model"]["activation"] == "tanh"
  assert (out / "relu" / sweep.TABLE_MD).is_file()  # each activation's own sweep report

  shutil.rmtree(out / "tanh")  # a column not started yet: --report-only draws it, trains nothing
  assert sweep.main(flags + ["--steps", "2", "--inits", "kaiming,normal:std=0.02", "--activations",
                             "relu,tanh", "--out", str(out), "--report-only"]) == 0
  relu_cell = sweep.grid_cell({**rows[2], "test_accuracy": float(rows[2]["test accuracy"]),
                               "stalled": rows[2]["stalled"] == "True", "finished": True})
  assert f"| normal:std=0.02 | {relu_cell} | unfinished |" in (out / sweep.GRID_MD).read_text()
  assert sorted(p.name for p in (out / "tanh").iterdir()) == sorted(
      [sweep.TABLE_MD, sweep.TABLE_CSV, sweep.LOSS_PLOT, sweep.ACCURACY_PLOT])


def test_grid_cells_say_stalled_and_diverged():
  row = {"test_accuracy": 0.1, "stalled": True, "note": "", "finished": True}
  assert sweep.grid_cell(row) == "0.1000 (stalled)"
  assert sweep.grid_cell({**row, "stalled": False}) == "0.1000"
  assert sweep.grid_cell({"test_accuracy": None, "stalled": None, "finished": True,
                          "note": "stopped: the loss ... became NaN/Inf at step 3"}) == "diverged"
