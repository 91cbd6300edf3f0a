"""Matplotlib figures (no state; each function reads its inputs and writes one PNG)."""

from __future__ import annotations

import json
import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _overlay(records_by_name: dict[str, list[dict]], split: str, key: str, ax) -> None:
  for name, records in records_by_name.items():
    points = [(r["step"], r[key]) for r in records if r["split"] == split]
    if points:
      ax.plot(*zip(*points), "o-" if len(points) < 20 else "-", ms=3, label=name)


def _save(fig, ax, out_path) -> pathlib.Path:
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  out_path = pathlib.Path(out_path)
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path


def plot_sweep_loss(records_by_name: dict[str, list[dict]], out_path, num_classes: int = 10,
                    title: str = "Train loss by init scheme") -> pathlib.Path:
  """One train-loss curve per run (metrics.jsonl records by name), ln(num_classes) marked."""
  fig, ax = plt.subplots(figsize=(8, 5))
  _overlay(records_by_name, "train", "loss", ax)
  ax.axhline(math.log(num_classes), color="gray", ls="--", label=f"ln {num_classes} (chance)")
  ax.set(xlabel="step", ylabel="train cross-entropy", title=title)
  return _save(fig, ax, out_path)


def plot_sweep_accuracy(records_by_name: dict[str, list[dict]], out_path, num_classes: int = 10,
                        title: str = "Test accuracy by init scheme") -> pathlib.Path:
  """One test-accuracy curve per run (metrics.jsonl records by name), chance marked."""
  fig, ax = plt.subplots(figsize=(8, 5))
  _overlay(records_by_name, "test", "accuracy", ax)
  ax.axhline(1 / num_classes, color="gray", ls="--", label=f"1/{num_classes} (chance)")
  ax.set(xlabel="step", ylabel="test accuracy", title=title, ylim=(0, 1))
  return _save(fig, ax, out_path)


def plot_training_curves(metrics_path, out_path, num_classes: int = 10) -> pathlib.Path:
  """Train loss and train/test accuracy against step, with ln(num_classes) marked."""
  records = read_jsonl(metrics_path)
  train = [r for r in records if r["split"] == "train"]
  test = [r for r in records if r["split"] == "test"]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
  ax_loss.axhline(math.log(num_classes), color="gray", ls="--", label=f"ln {num_classes} (chance)")
  ax_loss.set(xlabel="step", ylabel="cross-entropy", title="Training loss")
  ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train")
  ax_acc.plot([r["step"] for r in test], [r["accuracy"] for r in test], "o-", label="test")
  ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  out_path = pathlib.Path(out_path)
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path
