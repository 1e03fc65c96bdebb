"""VGG-16 (batch norm) on CIFAR-10 with Drop Pruning to 91 %: the paper's 11.1x.

The usual CIFAR recipe: SGD 0.1 with momentum 0.9 and weight decay 5e-4 for 160
epochs, learning rate x0.1 at epochs 80 and 120, random crops and flips. Pruning
runs from epoch 10 to 90, once per epoch (390 steps at batch 128).
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = "cifar10"
  config.augment = True
  config.model = "vgg16"
  config.width_multiplier = 1.0
  config.num_epochs = 160
  config.batch_size = 128
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.lr_schedule = "step"
  config.lr_step_fractions = (0.5, 0.75)  # epochs 80 and 120
  config.lr_step_factor = 0.1
  config.method = "drop"
  config.target_sparsity = 0.91
  config.prune_begin_epoch = 10.0
  config.prune_end_epoch = 90.0
  config.update_every = 390
  return config
