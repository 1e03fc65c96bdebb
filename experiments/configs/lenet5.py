"""LeNet-5 (Caffe variant) on MNIST: the project's recipe at 99.5 % sparsity (157.8x
compression).

Chosen on validation error in the study ``lenet5_fmnist_targets`` at 99.5 % (Fashion-MNIST,
the last 10,000 training images held out, 3 seeds; docs/results.md), the LeNet-5 target of
at least 150x: gradual magnitude pruning (Zhu & Gupta's cubic schedule) with one global pool
over the four kernels had the lowest mean validation error of the five methods there,
11.28 ± 0.36 % (test 11.49 ± 0.36 %; ± SD over seeds), level with the importance-weighted
drop (11.28 ± 0.05 %, test 11.71 ± 0.04 %) and the uniform annealed drop (11.36 %); RigL and
SET with ERK targets were 2.7 and 6.0 points behind. Gradual pruning also had the lowest
validation error at 99.2 % (``lenet5_fmnist_methods``). The global pool was compared with
per-layer targets on test error only (``lenet5_fmnist_global``), and the drops' (p, q)
starts come from a test-error sweep (``pq_sweep_lenet300``). This config is that study cell
with MNIST as the dataset: 20 epochs of SGD (momentum 0.9, learning rate 0.05 with cosine
decay, weight decay 1e-4, batch 128), masks updated every 100 steps from epoch 1 to 14, then
6 epochs with frozen masks; about 15 min on a 2-core CPU. With MNIST's 60,000 training
images, the last 10,000 are the validation split. Longer LeNet-5 budgets
(``lenet5_fmnist_finetune``: 40 and 60 epochs, learning-rate rewinding) are defined but not
run (about half an hour per run on the 2-core CPU).

431,080 parameters, of which 580 biases stay dense: 99.5 % of the 430,500 kernel weights
pruned leaves 2,732 nonzero parameters, 157.8x compression. The global pool keeps the small
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
  config.target_sparsity = 0.995
  config.sparsity_distribution = "global"
  return config
