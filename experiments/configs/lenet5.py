"""LeNet-5 (Caffe variant) on MNIST: the project's recipe at 99.2 % sparsity (107.1x
compression).

Chosen on validation error in the study ``lenet5_fmnist_methods`` (Fashion-MNIST, the last
10,000 training images held out, 3 seeds; docs/results.md): gradual magnitude pruning
(Zhu & Gupta's cubic schedule) with one global pool over the four kernels, at 99.2 % of the
kernel weights; the global pool was compared with per-layer targets on test error only
(``lenet5_fmnist_global``). It had the lowest validation error of the study's methods there
(the importance-weighted drop was 0.27 ± 0.19 points behind on validation with
p 0.25 -> 1, q 0.2 -> 0, within noise, but 0.33 ± 0.10 behind on test, beyond two standard
errors; and 0.99 ± 0.15 behind on validation with the settings of the LeNet-300-100
recipe; ± is the standard error of the difference). This config is that study cell with
MNIST as the dataset: 20 epochs of SGD (momentum 0.9, learning rate 0.05 with cosine decay,
weight decay 1e-4, batch 128), masks updated every 100 steps from epoch 1 to 14, then 6
epochs with frozen masks. With MNIST's 60,000 training images, the last 10,000 are the
validation split.

431,080 parameters, of which 580 biases stay dense: 99.2 % of the 430,500 kernel weights
pruned leaves 4,024 nonzero parameters, 107.1x compression. The global pool keeps the small
layers denser than the 400,000-weight first dense layer.

Offline, pass the IDX files: ``--config.idx_dir=DIR`` (see ``experiments/data.py``).
"""

import ml_collections

from experiments.configs import lenet5_base


def get_config() -> ml_collections.ConfigDict:
  config = lenet5_base.get_config()  # LeNet-5 on MNIST, SGD, weight decay 1e-4
  config.num_epochs = 20
  config.prune_begin_epoch = 1.0
  config.prune_end_epoch = 14.0
  config.update_every = 100
  config.method = "gradual"
  config.target_sparsity = 0.992
  config.sparsity_distribution = "global"
  return config
