"""Data parallelism with a 1-D `Mesh` over every device and `NamedSharding`.

The batch is split on the "data" axis and the train state is replicated;
`jax.jit` then inserts the gradient all-reduce itself.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(f"batch size {batch_size} must be a multiple of the device count {mesh.size}")


def put_batch(batch, mesh: Mesh):
  """Places a host batch (a tuple of numpy arrays) on the mesh, split on the batch axis."""
  return jax.device_put(batch, batch_sharded(mesh))


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
