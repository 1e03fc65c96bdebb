"""LeNet-300-100 on MNIST: the project's recipe at 99 % sparsity (86.8x compression).

Chosen on validation error (Fashion-MNIST, the last 10,000 training images held out;
docs/results.md): in ``lenet300_fmnist_methods`` the importance-weighted drop had the lowest
validation error of the methods at 99 % (gradual, uniform and weighted drops, RigL, SET), and
``lenet300_fmnist_weighted_sweep`` then chose its settings (between two (p, q) starts,
(0.25, 0.2) and (0.5, 0.4), that came from the test-error sweep ``pq_sweep_lenet300``):
Drop Pruning with importance-weighted drops (``drop_away="importance"``: less important
pool members leave more often; ``drop_back="gradient"``: pruned weights of larger dense
gradient return more often; temperature 1), drop probabilities cosine-annealed from
p = 0.5 to 1 and from q = 0.4 to 0, and one global pool over the three kernels, at 99 % of
the kernel weights.
This config is that sweep cell with MNIST as the dataset: 20 epochs of SGD (momentum 0.9,
learning rate 0.05 with cosine decay, weight decay 1e-4, batch 128), masks updated every
100 steps from epoch 1 to 14, then 6 epochs with frozen masks. With MNIST's 60,000 training
images, the last 10,000 are the validation split.

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
  config.drop_away_prob = 0.5
  config.drop_back_prob = 0.4
  config.drop_anneal = "cosine"
  config.drop_away = "importance"
  config.drop_back = "gradient"
  config.temperature = 1.0
  return config
