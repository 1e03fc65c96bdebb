"""The demo: LeNet-300-100 with Drop Pruning on real Fashion-MNIST, in a few minutes on a CPU.

``make demo`` runs it with the IDX files of the Debian package
``dataset-fashion-mnist`` (``--config.idx_dir=...``).
"""

import ml_collections

from experiments.configs import lenet300


def get_config() -> ml_collections.ConfigDict:
  config = lenet300.get_config()
  config.dataset = "fashion_mnist"
  config.weight_decay = 0.0
  config.target_sparsity = 0.97
  # 468 steps per epoch: pruning from epoch 2 to 20 at every 100th step gives 86
  # pruning steps; ten epochs of fine-tuning with frozen masks follow.
  return config
