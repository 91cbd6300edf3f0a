#!/usr/bin/env python
"""Train GoogLeNet: `python train.py --init glorot` runs d2l.ai's Fashion-MNIST recipe.

Re-running the same command with the same --workdir resumes from its latest checkpoint.

Several processes (multi-host TPU/GPU, or CPU processes for testing): start one per
host with --coordinator-address HOST:PORT --num-processes N --process-id I, or
--distributed where JAX detects the cluster itself (Cloud TPU, Slurm). Every
process reads its own rows of each global batch; process 0 writes the logs.
"""

import argparse
import pathlib
import sys

from googlenet_jax import cli, inits


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("several processes (jax.distributed)")
  group.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() and let JAX detect the cluster")
  group.add_argument("--coordinator-address", help="HOST:PORT of process 0")
  group.add_argument("--num-processes", type=int, help="how many processes take part")
  group.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")


def start_distributed(args) -> None:
  explicit = (args.coordinator_address, args.num_processes, args.process_id)
  if not args.distributed and all(v is None for v in explicit):
    return
  if not args.distributed and any(v is None for v in explicit):
    raise cli.UserError("--coordinator-address, --num-processes and --process-id go together "
                        "(or use --distributed to let JAX detect the cluster)")
  if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
    raise cli.UserError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
  from googlenet_jax import sharding
  sharding.initialize_distributed(*explicit)


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__, epilog=cli.CONFIG_HELP,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_config_flags(parser)
  parser.add_argument("--workdir", help="checkpoints, metrics and plots "
                      "(default: runs/<config name>_<init>)")
  add_distributed_flags(parser)
  args, extra = parser.parse_known_args(argv)
  config = cli.build_config(args, extra)
  start_distributed(args)  # before anything else touches JAX's backend
  workdir = cli.prepare_workdir(
      args.workdir or pathlib.Path("runs") / f"{pathlib.Path(args.config).stem}_{inits.slug(config.init)}")

  from googlenet_jax import reporting, sharding, training  # JAX starts here, after the flags are checked.
  sharding.one_cpu_device_per_core(config.batch_size, processes=args.num_processes or 1)
  reporter = reporting.Reporter(workdir) if sharding.is_main_process() else reporting.QuietReporter()
  training.train_and_evaluate(config, str(workdir), reporter)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
