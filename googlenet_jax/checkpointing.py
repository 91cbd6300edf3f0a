"""Orbax checkpoints of the train state in <workdir>/checkpoints, the config beside them.

Each checkpoint carries a SHA-256 fingerprint of the state it holds. A restore
recomputes it, so a truncated or garbled checkpoint is never trained from
silently: `restore_latest` moves it to <workdir>/corrupt_checkpoints/ and falls
back to the newest good one. Orbax writes each checkpoint to a temporary folder
and renames it when complete, so a run killed mid-write leaves no checkpoint
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from googlenet_jax import sharding

CONFIG_FILE = "config.json"
CORRUPT_DIR = "corrupt_checkpoints"


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected; the message says what to do."""


def fingerprint(state) -> str:
  """SHA-256 over every leaf's bytes, shape and dtype (PRNG keys by their key data)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    array = np.asarray(jax.device_get(leaf))
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


class Checkpointer:
  """Keeps the last `max_to_keep` checkpoints; saves are asynchronous."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 3):
    self.workdir = pathlib.Path(workdir).absolute()
    self.directory = self.workdir / "checkpoints"
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    """Starts writing `state` as checkpoint `step` (a no-op if that step is already saved)."""
    if step in self._manager.all_steps():
      return
    meta = {"step": int(step), "fingerprint": fingerprint(state)}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, target):
    """Restores `step` into the structure, dtypes and shardings of `target`; verified.

    Raises CheckpointError when the checkpoint cannot be read, does not fit
    `target` (another architecture), or its contents differ from what was saved.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax/tensorstore raise many types for unreadable or mismatched data
      raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be restored into "
                            f"this model: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if restored.meta.get("fingerprint") != fingerprint(restored.state):
      raise CheckpointError(f"checkpoint {step} in {self.directory} is corrupt: its contents do "
                            "not match the fingerprint written with it")
    return restored.state

  def restore_latest(self, target, warn=print):
    """(step, state) of the newest checkpoint that restores and verifies; (None, target) if none.

    A bad checkpoint is moved to <workdir>/corrupt_checkpoints/<step> (kept for
    inspection, out of the way of new saves) and the previous one is tried;
    CheckpointError when there were checkpoints and none was good.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      try:
        return step, self.restore(step, target)
      except CheckpointError as e:
        quarantine = self.workdir / CORRUPT_DIR / str(step)
        if jax.process_index() == 0:  # one process moves it; the others wait for the move
          quarantine.parent.mkdir(exist_ok=True)
          shutil.move(str(self.directory / str(step)), str(quarantine))
        sharding.sync(f"quarantine_{step}")
        self._manager.reload()
        warn(f"warning: {e}; moved it to {quarantine} and trying the previous checkpoint")
    if steps:
      raise CheckpointError(f"none of the checkpoints in {self.directory} ({', '.join(map(str, steps))}) "
                            f"could be restored; they are in {self.workdir / CORRUPT_DIR}. Run again "
                            "to start from scratch, or use another --workdir")
    return None, target

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def save_config(workdir: str | pathlib.Path, config: dict) -> None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_config(workdir: str | pathlib.Path) -> dict | None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  return json.loads(path.read_text()) if path.is_file() else None
