"""VGG-16 (batch norm) on CIFAR-10 with Drop Pruning to 91 % (11.04x, near the paper's 11.1x).

14,986,698 parameters, of which 14,977,728 are prunable kernel weights and 8,970 (batch-norm
scales and biases, dense biases) stay dense: 91 % of the kernels pruned per layer leaves
1,356,968 nonzero parameters, 11.04x compression; the paper's 11.1x would take 91.05 %.

The usual CIFAR recipe: SGD 0.1 with momentum 0.9 and weight decay 5e-4 for 160
epochs, learning rate x0.1 at epochs 80 and 120, random crops and flips. An epoch is
312 steps at batch 128 (the 40,000 training images left after the validation split);
pruning runs from epoch 10 to 90 (steps 3,120 to 28,080) every 390 steps, 65 pruning
steps.
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
