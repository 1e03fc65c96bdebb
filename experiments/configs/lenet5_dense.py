"""LeNet-5 (Caffe variant) on MNIST, not pruned, trained like the ``lenet5`` recipe: the
teacher of ``lenet5_distill.py`` and the dense model the recipes are measured against.

40 epochs of SGD (momentum 0.9, learning rate 0.05 with cosine decay, ramped up linearly over
the first epoch, weight decay 5e-4, batch 128). On Fashion-MNIST (the last 10,000 training
images held out, seeds 0-4) this is the study cell ``dense_wd5e-4_warmup1_e40`` of
``lenet5_fmnist_warmup`` with MNIST as the dataset: 8.54 ± 0.19 % validation, 8.66 ± 0.25 %
test error (mean ± SD; ``docs/studies/lenet5_fmnist_warmup.json``). About 12 minutes on a
2-core CPU. 431,080 parameters.

Offline, pass the IDX files: ``--config.idx_dir=DIR`` (see ``experiments/data.py``).
"""

import ml_collections

from experiments.configs import lenet5_base


def get_config() -> ml_collections.ConfigDict:
  config = lenet5_base.get_config()  # LeNet-5 on MNIST, SGD
  config.method = "dense"
  config.num_epochs = 40
  config.weight_decay = 5e-4
  config.warmup_epochs = 1.0
  # Not read by a dense run; the study cell's value, so that this config is that cell's.
  config.prune_end_epoch = 28.0
  return config
