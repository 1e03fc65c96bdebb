"""LeNet-300-100 on MNIST: the project's recipe at 99 % sparsity (86.8x compression), 200
epochs.

Chosen by the rule fixed in ``lenet300_fmnist_budget`` before that study ran (Fashion-MNIST,
the last 10,000 training images held out, seeds 0-2; docs/results.md):
1. budget: the validation error stops improving (the shortest budget within one standard
   error of the best) at 60 epochs for gradual pruning and at 200 for the importance-weighted
   drop at 99 %: 200 epochs;
2. method: at 200 epochs gradual pruning has the lower validation error at 98.5 % (11.26 %
   against 11.56 %) and the weighted drop at 99 % (11.50 % against 11.58 %): a tie in mean
   rank, which the rule gives to gradual pruning (no drop probabilities to set);
3. techniques: learning-rate rewinding and distillation were measured at 60 epochs only
   (``lenet300_fmnist_finetune``, where the rule kept neither), so none.
12 settings were tried (2 methods x 2 targets x 3 budgets). The global pool was compared with
per-layer targets on test error only (``lenet300_fmnist_global``).

This config is the study cell ``gradual_t0.99_e200`` with MNIST as the dataset: gradual
magnitude pruning (Zhu & Gupta's cubic schedule) with one global pool over the three kernels,
200 epochs of SGD (momentum 0.9, learning rate 0.05 with cosine decay to 0 over the 200
epochs, weight decay 1e-4, batch 128), masks updated every 100 steps from epoch 10 to 140,
then 60 epochs with frozen masks. On Fashion-MNIST it reached 11.58 ± 0.13 % validation and
11.89 ± 0.11 % test error (mean ± SD over 3 seeds; dense with the same budget: 10.07 ± 0.19 %
/ 10.13 ± 0.15 %). About 2 minutes on a 2-core CPU. With MNIST's 60,000 training images, the
last 10,000 are the validation split.

266,610 parameters, of which 410 biases stay dense: 99 % of the 266,200 kernel weights
pruned leaves 3,072 nonzero parameters, 86.8x compression.

Offline, pass the IDX files: ``--config.idx_dir=DIR`` (see ``experiments/data.py``).
"""

import ml_collections

from experiments.configs import lenet300_base


def get_config() -> ml_collections.ConfigDict:
  config = lenet300_base.get_config()  # LeNet-300-100 on MNIST, SGD, weight decay 1e-4
  config.num_epochs = 200
  config.prune_begin_epoch = 10.0
  config.prune_end_epoch = 140.0
  config.update_every = 100
  config.method = "gradual"
  config.target_sparsity = 0.99
  config.sparsity_distribution = "global"
  return config
