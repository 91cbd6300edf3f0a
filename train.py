#!/usr/bin/env python
"""Train GoogLeNet: `python train.py --init glorot` runs d2l.ai's Fashion-MNIST recipe.

Re-running the same command with the same --workdir resumes from its latest checkpoint.
"""

import argparse
import pathlib
import sys

from googlenet_jax import cli


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__, epilog=cli.CONFIG_HELP,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_config_flags(parser)
  parser.add_argument("--workdir", help="checkpoints, metrics and plots "
                      "(default: runs/<config name>_<init>)")
  args, extra = parser.parse_known_args(argv)
  config = cli.build_config(args, extra)
  workdir = cli.prepare_workdir(
      args.workdir or pathlib.Path("runs") / f"{pathlib.Path(args.config).stem}_{config.init}")

  from googlenet_jax import reporting, training  # JAX starts here, after the flags are checked.
  training.train_and_evaluate(config, str(workdir), reporting.Reporter(workdir))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
