"""Szegedy et al. 2015 on ImageNet (tfds:imagenet2012, prepared offline): 224x224, aux heads,
dropout 0.4, SGD momentum 0.9, lr decreased 4% every 8 epochs. The paper does not state the
initial lr, batch size or weight decay: the values below are common choices."""

import pathlib
import runpy

get_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))["get_config"]


def get_config():
  config = get_default()
  config.dataset = "tfds:imagenet2012"
  config.image_size = 224
  config.model.variant = "paper"
  config.model.aux_logits = True
  config.model.dropout_rate = 0.4
  config.model.lrn = True
  config.optimizer.name = "momentum"
  config.optimizer.momentum = 0.9
  config.optimizer.lr = 0.01
  config.optimizer.weight_decay = 2e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_rate = 0.96
  config.optimizer.decay_every_epochs = 8.0
  config.batch_size = 256
  config.epochs = 250
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 100
  return config
