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


def _save(fig, axes, out_path) -> pathlib.Path:
  """Grid and legend on each of `axes`, then the figure as a PNG."""
  for ax in axes:
    ax.grid(alpha=0.3, which="both")
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
  return _save(fig, [ax], out_path)


def plot_sweep_accuracy(records_by_name: dict[str, list[dict]], out_path, num_classes: int = 10,
                        title: str = "Test accuracy by init scheme") -> pathlib.Path:
  """One test-accuracy curve per run (metrics.jsonl records by name), chance marked."""
  fig, ax = plt.subplots(figsize=(8, 5))
  _overlay(records_by_name, "test", "accuracy", ax)
  ax.axhline(1 / num_classes, color="gray", ls="--", label=f"1/{num_classes} (chance)")
  ax.set(xlabel="step", ylabel="test accuracy", title=title, ylim=(0, 1))
  return _save(fig, [ax], out_path)


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
  return _save(fig, [ax_loss, ax_acc], out_path)


def plot_signal_propagation(layers_by_scheme: dict[str, list[tuple[str, float, float]]], out_path,
                            title: str) -> pathlib.Path:
  """Activation std and kernel-gradient std against depth (log scale), one line per scheme.

  `layers_by_scheme`: scheme -> [(layer name, activation std, gradient std)] in depth order.
  """
  fig, (ax_act, ax_grad) = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
  for scheme, layers in layers_by_scheme.items():
    depth = range(1, len(layers) + 1)
    ax_act.plot(depth, [max(a, 1e-30) for _, a, _ in layers], "o-", ms=3, label=scheme)
    ax_grad.plot(depth, [max(g, 1e-30) for _, _, g in layers], "o-", ms=3, label=scheme)
  ax_act.set(yscale="log", xlabel="conv/dense layer (depth order)",
             ylabel="std of the pre-activation output", title="Forward signal")
  ax_grad.set(yscale="log", xlabel="conv/dense layer (depth order)", ylabel="std of dL/dW",
              title="Kernel gradients")
  fig.suptitle(title)
  return _save(fig, [ax_act, ax_grad], out_path)


def plot_grid_heatmap(accuracy: list[list[float | None]], labels: list[list[str]], rows: list[str],
                      columns: list[str], out_path, num_classes: int = 10,
                      title: str = "Test accuracy, init x activation") -> pathlib.Path:
  """A heat map of test accuracy (rows: init schemes, columns: activations), each cell
  annotated with `labels` (accuracy, stalled/diverged); chance is the bottom of the scale."""
  values = [[math.nan if v is None else v for v in row] for row in accuracy]
  fig, ax = plt.subplots(figsize=(2.2 * len(columns) + 3, 0.6 * len(rows) + 2))
  no_accuracy = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")  # diverged, unfinished: grey
  image = ax.imshow(values, cmap=no_accuracy, vmin=1 / num_classes, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(columns)), columns)
  ax.set_yticks(range(len(rows)), rows)
  for i, row in enumerate(labels):
    for j, text in enumerate(row):
      dark = values[i][j] < 0.6  # NaN (grey) compares False: black text
      ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=9)
  ax.set(xlabel="activation", ylabel="init scheme", title=title)
  fig.colorbar(image, ax=ax, label=f"test accuracy (chance = {1 / num_classes:.2f})")
  fig.tight_layout()
  out_path = pathlib.Path(out_path)
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path
