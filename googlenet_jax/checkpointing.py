"""Orbax checkpoints of the train state in <workdir>/checkpoints, the config beside them."""

from __future__ import annotations

import json
import pathlib

import jax
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


class Checkpointer:
  """Keeps the last `max_to_keep` checkpoints; saves are asynchronous."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 3):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, step: int, target):
    """Restores `step` into the structure, dtypes and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def save_config(workdir: str | pathlib.Path, config: dict) -> None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_config(workdir: str | pathlib.Path) -> dict | None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  return json.loads(path.read_text()) if path.is_file() else None
