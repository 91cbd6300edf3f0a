"""A CPU recipe for a 2-core machine: the d2l GoogLeNet on Fashion-MNIST at 32x32, 5 epochs, SGD family.

Kept in the SGD family on purpose: adaptive optimizers (Adam) rescale vanishing
gradients and hide the failure of a bad init.
"""

import pathlib
import runpy

get_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]


def get_config():
  config = get_default()
  config.image_size = 32
  config.optimizer.name = "nesterov"
  config.optimizer.momentum = 0.9
  config.optimizer.lr = 0.02
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0.1
  config.epochs = 5
  config.eval_batch_size = 1000
  return config
