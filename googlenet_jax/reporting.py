"""What a run shows and leaves behind: progress bar or log lines, metrics.jsonl, summary, plot."""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"


def _seconds(value: float) -> str:
  return "-" if math.isnan(value) else f"{value:.0f}s"


class Reporter:
  """A tqdm bar on a terminal, plain periodic lines otherwise (CI, log files).

  Every record also goes to <workdir>/metrics.jsonl as one JSON object per line.
  """

  def __init__(self, workdir: str | pathlib.Path, stream=None, interactive: bool | None = None):
    self.workdir = pathlib.Path(workdir)
    self.stream = stream or sys.stderr
    self.interactive = self.stream.isatty() if interactive is None else interactive
    self._bar = None
    self._t0 = time.perf_counter()
    self._images_per_sec: list[float] = []

  def _write_record(self, record: dict) -> None:
    record = {**record, "wall_time": round(time.perf_counter() - self._t0, 3)}
    with open(self.workdir / METRICS_FILE, "a") as f:
      f.write(json.dumps(record) + "\n")

  def message(self, text: str) -> None:
    (self._bar.write if self._bar else lambda t: print(t, file=self.stream, flush=True))(text)

  def start(self, step: int, total_steps: int, steps_per_epoch: int, description: str) -> None:
    self._t0 = time.perf_counter()
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self._first_log = None  # (step, time) of the first train log line, for the ETA
    self.message(description)
    self.message(f"{total_steps} steps ({steps_per_epoch} per epoch), starting at step {step}; "
                 f"workdir {self.workdir.absolute()}; the first step compiles (~20 s)")
    if self.interactive:
      self._bar = tqdm(total=total_steps, initial=step, unit="step", file=self.stream,
                       dynamic_ncols=True)

  def log_train(self, step: int, epoch: int, metrics: dict, lr: float, images_per_sec: float) -> None:
    self._images_per_sec.append(images_per_sec)
    self._write_record({"split": "train", "step": step, "epoch": epoch, **metrics, "lr": lr,
                        "images_per_sec": images_per_sec})
    if self._bar:
      self._bar.set_postfix(epoch=epoch, loss=f"{metrics['loss']:.4f}",
                            acc=f"{metrics['accuracy']:.3f}", img_s=f"{images_per_sec:.0f}")
      self._bar.update(step - self._bar.n)
    else:
      elapsed = time.perf_counter() - self._t0
      self.message(f"step {step}/{self.total_steps} epoch {epoch} loss {metrics['loss']:.4f} "
                   f"acc {metrics['accuracy']:.3f} lr {lr:.4g} {images_per_sec:.0f} img/s "
                   f"elapsed {elapsed:.0f}s ETA {_seconds(self._eta(step))}")

  def _eta(self, step: int) -> float:
    """Seconds left at the steps/s since the first log line (so the first compile is left out)."""
    now = time.perf_counter()
    if self._first_log is None:
      self._first_log = (step, now)
      return float("nan")
    first_step, first_time = self._first_log
    rate = (step - first_step) / max(now - first_time, 1e-9)
    return (self.total_steps - step) / rate if rate > 0 else float("nan")

  def log_eval(self, step: int, epoch: int, metrics: dict) -> None:
    self._write_record({"split": "test", "step": step, "epoch": epoch, **metrics})
    self.message(f"epoch {epoch} (step {step}): test accuracy {metrics['accuracy']:.4f}, "
                 f"test loss {metrics['loss']:.4f} on {metrics['count']} images")

  def finish(self, step: int, test_metrics: dict, extra: dict | None = None) -> dict:
    if self._bar:
      self._bar.close()
      self._bar = None
    seconds = time.perf_counter() - self._t0
    throughput = sorted(self._images_per_sec)[len(self._images_per_sec) // 2] if self._images_per_sec else 0.0
    summary = {"step": step, "test_accuracy": test_metrics["accuracy"],
               "test_loss": test_metrics["loss"], "wall_time_s": seconds,
               "median_images_per_sec": throughput, **(extra or {})}
    (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from googlenet_jax import plots  # matplotlib only when a run ends.
    plot_path = plots.plot_training_curves(self.workdir / METRICS_FILE, self.workdir / CURVES_FILE)
    self.message(f"done: step {step}, test accuracy {test_metrics['accuracy']:.4f} "
                 f"({test_metrics['count']} images), {seconds / 60:.1f} min, "
                 f"{throughput:.0f} img/s (median); curves in {plot_path}")
    return summary


class QuietReporter:
  """What the processes other than 0 report: nothing (process 0 writes logs and plots)."""

  def message(self, text: str) -> None:
    pass

  def start(self, step, total_steps, steps_per_epoch, description) -> None:
    pass

  def log_train(self, step, epoch, metrics, lr, images_per_sec) -> None:
    pass

  def log_eval(self, step, epoch, metrics) -> None:
    pass

  def finish(self, step: int, test_metrics: dict, extra: dict | None = None) -> dict:
    return {"step": step, "test_accuracy": test_metrics["accuracy"],
            "test_loss": test_metrics["loss"], **(extra or {})}
