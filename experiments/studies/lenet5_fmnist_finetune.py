"""LeNet-5 on Fashion-MNIST at 99.5 % (158x): a 40- and a 60-epoch budget and
learning-rate rewinding, for gradual pruning and the Drop Pruning recipe.

The LeNet-5 counterpart of ``lenet300_fmnist_finetune`` at the LeNet-5 target the
recipes aim for (at least 150x). Cells, one global pool each: a dense 40-epoch run;
gradual pruning and ``drop_weighted_tuned`` at 40 epochs (``budget``: masks change from
epoch 2 to 28, then 12 epochs with frozen masks), plain and with learning-rate rewinding
(``lr_rewind_epoch=0``), and plain at 60 epochs (masks from epoch 3 to 42). The 20-epoch
point of the budget axis is ``lenet5_fmnist_targets`` at 99.5 % (the same protocol).
Seeds 0, 1, 2; the last 10,000 training images held out.

Distillation is not in this grid: with LeNet-5's learning rate (0.05, momentum 0.9) the
default distillation (weight 0.5, temperature 4) diverged at step 20-21 in a smoke run
(12,800 training images), dense and pruned alike, while temperature 1, weight 0 or a
learning rate of 0.01 trained; tuning it is left to a later grid.

Rule, fixed before the runs: rewinding is kept for a method when its mean validation
error is lower than the plain cell's with a paired difference over the shared seeds
larger than its standard error; 2 methods x 3 variants = 6 settings tried. A run takes
minutes on a GPU and about half an hour on the 2-core CPU, so this grid is run on a GPU
(``--shard I/N`` processes side by side).
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, METHOD_SERIES, budget


def get_study() -> dict:
  cells = [{"name": "dense_e40", "method": "dense", **budget(40)}]
  for series in ("gradual", "drop_weighted_tuned"):
    common = {"target_sparsity": 0.995, **METHOD_SERIES[series]}
    cells.append({"name": f"{series}_plain_t0.995", **common, **budget(40)})
    cells.append(
      {"name": f"{series}_rewind_t0.995", **common, **budget(40), "lr_rewind_epoch": 0.0}
    )
  for series in ("gradual", "drop_weighted_tuned"):
    common = {"target_sparsity": 0.995, **METHOD_SERIES[series]}
    cells.append({"name": f"{series}_plain_t0.995_e60", **common, **budget(60)})
  return {
    "name": "lenet5_fmnist_finetune",
    "config": "experiments/configs/lenet5_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    "cells": cells,
    "seeds": [0, 1, 2],
  }
