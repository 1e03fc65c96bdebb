"""LeNet-300-100 on Fashion-MNIST at 200 epochs, 5 seeds: the answer to "does the drop beat
gradual pruning?" redone with the recipe's training for both (rewinding, weight decay 5e-4).

The recipe took weight decay 5e-4 (``lenet300_fmnist_training``, ``lenet300_fmnist_wd``),
tuned on gradual pruning only. Here the importance-weighted drop (``drop_weighted_tuned``)
gets the same: learning-rate rewinding and weight decay 5e-4, 200 epochs, 98.5 % and 99 %,
seeds 0-4, beside gradual pruning's cells of ``lenet300_fmnist_wd`` (shared ``root``:
those runs are not rerun).

Rule, fixed before these runs: the answer is the paired difference over the 5 seeds of the
drop against gradual pruning, both rewound with weight decay 5e-4, at each target, on
validation, with the test difference beside it; beyond 2 SE counts as a difference. If the
drop is ahead beyond 2 SE at 99 %, ``configs/lenet300.py`` becomes it; otherwise it stays.
Settings tried: the one drop configuration the earlier studies chose, with the recipe's
training.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, METHOD_SERIES, budget


def get_study() -> dict:
  cells = [
    {
      "name": f"{series}_rewind_wd5e-4_t{target:g}_e200",
      "target_sparsity": target,
      **METHOD_SERIES[series],
      **budget(200),
      "lr_rewind_epoch": 0.0,
      "weight_decay": 5e-4,
    }
    for target in (0.99, 0.985)
    for series in ("drop_weighted_tuned", "gradual")
  ]
  return {
    "name": "lenet300_fmnist_drop_wd",
    "root": "runs/studies/lenet300_fmnist_budget",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    "cells": cells,
    "seeds": [0, 1, 2, 3, 4],
  }
