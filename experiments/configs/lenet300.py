"""LeNet-300-100 on MNIST: the project's recipe at 99 % sparsity (86.8x compression).

Chosen on validation error in the study ``lenet300_fmnist_methods`` (Fashion-MNIST, the last
10,000 training images held out, 3 seeds; docs/results.md): Drop Pruning with
importance-weighted drops (``drop_away="importance"``, ``drop_back="gradient"``), the
cosine-annealed drop probabilities (p from 0.25 to 1, q from 0.2 to 0) and one global pool
over the three kernels, at 99 % of the kernel weights. It had the lowest validation error
of the study's methods at 99 %. This config is that study cell with MNIST as the dataset:
20 epochs of SGD (momentum 0.9, learning rate 0.05 with cosine decay, weight decay 1e-4,
batch 128), masks updated every 100 steps from epoch 1 to 14, then 6 epochs with frozen
masks. With MNIST's 60,000 training images, the last 10,000 are the validation split.

266,610 parameters, of which 410 biases stay dense: 99 % of the 266,200 kernel weights
pruned leaves 3,072 nonzero parameters, 86.8x compression.

Offline, pass the IDX files: ``--config.idx_dir=DIR`` (see ``experiments/data.py``).
"""

import ml_collections

from experiments.configs import lenet300_base


def get_config() -> ml_collections.ConfigDict:
  config = lenet300_base.get_config()  # LeNet-300-100 on MNIST, SGD, Drop Pruning
  config.num_epochs = 20
  config.prune_begin_epoch = 1.0
  config.prune_end_epoch = 14.0
  config.update_every = 100
  config.target_sparsity = 0.99
  config.sparsity_distribution = "global"
  config.drop_away_prob = 0.25
  config.drop_back_prob = 0.2
  config.drop_anneal = "cosine"
  config.drop_away = "importance"
  config.drop_back = "gradient"
  return config
