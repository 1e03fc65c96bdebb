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

from experiments.studies import FASHION_MNIST_PROTOCOL, rewound_cells


def get_study() -> dict:
  series = ["drop_weighted_tuned", "gradual"]
  settings = {"_wd5e-4": {"weight_decay": 5e-4}}
  cells = rewound_cells(series, settings, (0.99, 0.985), 200, epochs_in_name=True)
  return {
    "name": "lenet300_fmnist_drop_wd",
    "root": "runs/studies/lenet300_fmnist_budget",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    "cells": cells,
    "seeds": [0, 1, 2, 3, 4],
  }
