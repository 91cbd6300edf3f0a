"""Data parallelism with a 1-D `Mesh` over every device and `NamedSharding`.

The batch is split on the "data" axis and the train state is replicated;
`jax.jit` then inserts the gradient all-reduce itself. Under several processes
(`initialize_distributed`, JAX's own multi-process runtime) the mesh spans the
devices of every process; each process puts only its own rows of a global batch
on its devices (`put_batch`, through `jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize` before any other JAX call.

  Without arguments JAX detects the cluster (Cloud TPU, Slurm, ...). CPU
  processes exchange gradients through gloo.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def cpu_devices_for(batch_size: int, processes: int = 1, cores: int | None = None) -> int:
  """The most devices per process, at most one per core (this machine's by default), that
  split `batch_size` evenly over `processes` x devices."""
  if cores is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  return max(d for d in range(1, cores + 1) if batch_size % (processes * d) == 0)


def one_cpu_device_per_core(batch_size: int, processes: int = 1, cores: int | None = None) -> int | None:
  """Gives the CPU backend one JAX device per core: as many as split `batch_size` evenly
  over `processes` x devices.

  XLA:CPU runs each device's share of the batch on a thread of its own, so each core
  runs whole kernels rather than every op being split over the cores and waiting for
  the slowest: the d2l train step at 96x96, batch 128, is 1.08-1.13x faster on a
  2-core machine (benchmarks/benchmark_step.py times both); at 32x32 it is even. The
  mesh spans them like any other devices. GPU and TPU devices are unaffected (only
  the CPU backend reads this).

  Must run before JAX's backend starts. Leaves alone a device count set by the user
  (JAX_NUM_CPU_DEVICES, or --xla_force_host_platform_device_count in XLA_FLAGS) and a
  backend already started (a notebook, the tests). Returns the count it set, or None.
  """
  if jax.config.jax_num_cpu_devices >= 0 or re.search(
      r"--xla_force_host_platform_device_count\b", os.environ.get("XLA_FLAGS", "")):
    return None
  count = cpu_devices_for(batch_size, processes, cores)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # the backend has started: its devices stay as they are
    return None
  return count


def is_main_process() -> bool:
  """Process 0 writes logs, plots and the progress bar."""
  return jax.process_index() == 0


def sync(name: str, timeout_s: int = 3600) -> None:
  """Waits until every process gets here (nothing to wait for with one).

  Through JAX's coordination service rather than a collective: the first
  collective over a set of CPU devices sets up a gloo context, which fails when
  the processes arrive more than 30 s apart (one still compiling, say).
  """
  if jax.process_count() > 1:
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(name, timeout_s * 1000)


def make_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


class ShardingError(ValueError):
  """A setting that does not fit the devices (a user error: one line, exit code 2)."""


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ShardingError(f"batch size {batch_size} must be a multiple of the device count "
                        f"{mesh.size} (the batch is split over every device)")


def local_rows(global_rows: int, mesh: Mesh) -> slice:
  """The rows of a global batch that live on this process's devices (one block of the data axis)."""
  indices = batch_sharded(mesh).addressable_devices_indices_map((global_rows,))
  starts = [index[0].start or 0 for index in indices.values()]
  stops = [global_rows if index[0].stop is None else index[0].stop for index in indices.values()]
  return slice(min(starts), max(stops))


def put_batch(batch, mesh: Mesh):
  """Places a global host batch (a tuple of numpy arrays, all processes holding the same
  one) on the mesh, split on the batch axis: each process transfers only its own rows."""
  sharding = batch_sharded(mesh)
  rows = local_rows(len(batch[0]), mesh)
  return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(x)[rows], x.shape)
               for x in batch)


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
