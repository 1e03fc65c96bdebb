"""LeNet-5 (Caffe variant) on MNIST with Drop Pruning to 93 % (14.03x, near the paper's
14.3x): the base of the LeNet-5 studies (the recipe a user runs first is ``lenet5.py``).

431,080 parameters of which 580 are biases that stay dense, so 93.0 % sparsity of the
430,500 kernel weights leaves 30,715 nonzero parameters, 14.03x compression; the paper's
14.3x would take 93.13 %.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()  # SGD momentum 0.9, lr 0.05 cosine, batch 128, drop
  config.dataset = "mnist"
  config.model = "lenet5"
  config.num_epochs = 30
  config.weight_decay = 1e-4
  config.target_sparsity = 0.93
  config.prune_begin_epoch = 2.0
  config.prune_end_epoch = 20.0
  return config
