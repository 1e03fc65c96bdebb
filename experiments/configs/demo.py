"""The demo: LeNet-300-100 with Drop Pruning on real Fashion-MNIST, in a few minutes on a CPU.

``make demo`` runs it with the IDX files of the Debian package
``dataset-fashion-mnist`` (``--config.idx_dir=...``).
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  # Every field is set here (not taken from lenet300.py, whose recipe may change), so
  # that the demo does not change when a recipe does.
  config = default.get_config()  # SGD momentum 0.9, lr 0.05 cosine, batch 128, drop
  config.dataset = "fashion_mnist"
  config.model = "lenet300"
  config.num_epochs = 30
  config.weight_decay = 0.0
  config.target_sparsity = 0.97
  config.prune_begin_epoch = 2.0
  config.prune_end_epoch = 20.0
  # 390 steps per epoch (batch 128 over the 50,000 training images left after the
  # validation split): pruning from epoch 2 to 20 at every 100th step gives 72 pruning
  # steps; ten epochs of fine-tuning with frozen masks follow.
  return config
