"""d2l.ai's recipe: d2l GoogLeNet on Fashion-MNIST at 96x96, batch 128, plain SGD lr 0.1, 10 epochs."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"  # fashion_mnist, mnist, synthetic or tfds:<name>
  config.data_dir = ""  # empty: look in the standard places
  config.image_size = 96
  config.init = "glorot_uniform"

  config.model = ml_collections.ConfigDict()
  config.model.variant = "d2l"
  config.model.batch_norm = False
  config.model.aux_logits = False
  config.model.dropout_rate = 0.0
  config.model.lrn = False
  config.model.activation = "relu"
  config.model.dtype = "auto"  # bfloat16 on TPU/GPU, float32 on CPU (parameters stay float32)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # sgd, momentum, nesterov, adam, adamw
  config.optimizer.lr = 0.1
  config.optimizer.momentum = 0.9  # used by momentum and nesterov only
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"  # constant, cosine, step
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.decay_rate = 0.96  # step schedule: lr *= decay_rate ...
  config.optimizer.decay_every_epochs = 8.0  # ... every this many epochs
  config.optimizer.label_smoothing = 0.0
  config.optimizer.aux_loss_weight = 0.3

  config.batch_size = 128
  config.eval_batch_size = 500
  config.epochs = 10
  config.steps = 0  # > 0: stop after this many steps in all (overrides epochs)
  config.seed = 0
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 3
  # Stall detector: from this step on, warn when the loss sits within stall_loss_band of
  # ln(num_classes) while the logits barely vary across the batch (std < stall_logit_std).
  config.stall_check_steps = 200
  config.stall_loss_band = 0.02
  config.stall_logit_std = 1e-3
  config.fail_on_stall = False  # True: stop with exit code 3 instead of warning
  return config
