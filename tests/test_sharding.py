"""sharding.one_cpu_device_per_core: how many CPU devices it gives JAX, and when it leaves them be."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

# Prints what the call returned and the devices JAX then has, in a fresh process (the
# count can only be set before JAX's backend starts; `start_first` starts it before).
PROBE = """
import jax
from googlenet_jax import sharding
if {start_first}:
  jax.devices()
set_to = sharding.one_cpu_device_per_core({batch}, processes={processes}, cores={cores})
print(set_to, jax.device_count("cpu"))
"""


def start_probe(batch, cores, processes=1, start_first=False, **env):
  clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  return subprocess.Popen(
      [sys.executable, "-c", PROBE.format(batch=batch, processes=processes, cores=cores,
                                       start_first=start_first)],
      cwd=REPO_ROOT, env={**clean, "JAX_PLATFORMS": "cpu", **env}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def test_device_count_per_core_and_batch():
  cases = {  # what the probe prints: (count set, CPU devices JAX has)
      "every core": (start_probe(batch=128, cores=4), "4 4"),
      "a divisor of the batch": (start_probe(batch=6, cores=4), "3 3"),
      "one for an odd batch": (start_probe(batch=33, cores=2), "1 1"),
      "the batch split over processes too": (start_probe(batch=12, cores=4, processes=4), "3 3"),
      "XLA_FLAGS' count": (start_probe(batch=128, cores=4,
                                        XLA_FLAGS="--xla_force_host_platform_device_count=5"),
                           "None 5"),
      "JAX_NUM_CPU_DEVICES": (start_probe(batch=128, cores=4, JAX_NUM_CPU_DEVICES="3"), "None 3"),
      "a started backend": (start_probe(batch=128, cores=4, start_first=True), "None 1"),
  }
  for case, (proc, expected) in cases.items():
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == expected, f"{case}: {out.strip()!r} != {expected!r}"

