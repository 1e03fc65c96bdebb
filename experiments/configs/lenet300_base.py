"""LeNet-300-100 with Drop Pruning's defaults to 95 %: the base that the LeNet-300-100
studies (experiments/studies/) override.

The recipe a user runs first is experiments/configs/lenet300.py.

Offline, pass the IDX files: ``--config.idx_dir=DIR`` (see ``experiments/data.py``).
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()  # SGD momentum 0.9, lr 0.05 cosine, batch 128, drop
  config.dataset = "mnist"
  config.model = "lenet300"
  config.num_epochs = 30
  config.weight_decay = 1e-4
  config.target_sparsity = 0.95
  # 390 steps per epoch (batch 128 over the 50,000 training images left after the
  # validation split): epochs 2-20, every 100 steps, give 72 pruning steps (steps 780 to
  # 7,780 and the exact last step at 7,800).
  config.prune_begin_epoch = 2.0
  config.prune_end_epoch = 20.0
  return config
