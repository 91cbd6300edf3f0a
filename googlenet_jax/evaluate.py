"""Test accuracy and confusion matrix of a trained workdir.

  python -m googlenet_jax.evaluate --workdir runs/default_glorot_uniform
"""

from __future__ import annotations

import sys

import ml_collections
import numpy as np

from googlenet_jax import checkpointing, cli


def format_confusion(counts: np.ndarray, class_names: list[str]) -> str:
  width = max(7, max(len(n) for n in class_names) + 1)
  header = " " * width + "".join(f"{i:>7d}" for i in range(len(class_names)))
  rows = [f"{name:<{width}}" + "".join(f"{c:>7d}" for c in row) for name, row in zip(class_names, counts)]
  return "\n".join(["rows: true class, columns: predicted class", header] + rows)


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__)
  parser.add_argument("--workdir", required=True, help="a workdir written by train.py")
  parser.add_argument("--data-dir", help="directory holding the dataset's files")
  args = parser.parse_args(argv)
  saved = checkpointing.load_config(args.workdir)
  if saved is None:
    raise cli.UserError(f"{args.workdir} holds no {checkpointing.CONFIG_FILE}: not a train.py workdir")
  config = ml_collections.ConfigDict(saved)
  if args.data_dir:
    config.data_dir = args.data_dir

  from googlenet_jax import input_pipeline, sharding, training
  sharding.one_cpu_device_per_core(config.eval_batch_size)
  dataset = input_pipeline.load_dataset(config.dataset, config.data_dir or None)
  mesh = sharding.make_mesh()
  run = training.setup_run(config, dataset, mesh)
  checkpointer = checkpointing.Checkpointer(args.workdir, config.keep_checkpoints)
  step = checkpointer.latest_step()
  if step is None:
    raise cli.UserError(f"{args.workdir} has no checkpoint to evaluate")
  state = checkpointer.restore(step, run.state)
  checkpointer.close()
  metrics, counts = training.evaluate(training.make_eval_step(run.model, config.image_size), state,
                                      dataset.test_images, dataset.test_labels,
                                      config.eval_batch_size, mesh)
  print(f"{args.workdir} at step {step}: test accuracy {metrics['accuracy']:.4f}, "
        f"loss {metrics['loss']:.4f} on {metrics['count']} {dataset.name} test images")
  print(format_confusion(counts, dataset.class_names))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
