"""d2l GoogLeNet on CIFAR-10 through TFDS (prepared array_record data), 96x96, SGD momentum."""

import pathlib
import runpy

get_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]


def get_config():
  config = get_default()
  config.dataset = "tfds:cifar10"
  config.image_size = 96
  config.optimizer.name = "nesterov"
  config.optimizer.lr = 0.05
  config.optimizer.schedule = "cosine"
  config.optimizer.weight_decay = 5e-4
  config.epochs = 30
  return config
