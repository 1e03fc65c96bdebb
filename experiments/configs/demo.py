"""The demo: LeNet-300-100 with Drop Pruning on real Fashion-MNIST, in a few minutes on a CPU.

``make demo`` runs it with the IDX files of the Debian package
``dataset-fashion-mnist`` (``--config.idx_dir=...``).
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.model = "lenet300"
  config.num_epochs = 30
  config.batch_size = 128
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.momentum = 0.9
  config.lr_schedule = "cosine"
  config.method = "drop"
  config.target_sparsity = 0.97
  # 468 steps per epoch: pruning from epoch 2 to 20 at every 100th step gives 86
  # pruning steps; ten epochs of fine-tuning with frozen masks follow.
  config.prune_begin_epoch = 2.0
  config.prune_end_epoch = 20.0
  config.update_every = 100
  return config
