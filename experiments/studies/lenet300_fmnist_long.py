"""LeNet-300-100 on Fashion-MNIST at 99 % with twice the training budget: does a longer
run change the answer of ``lenet300_fmnist_methods`` (weighted drop against gradual)?

The shared protocol stretched by two (40 epochs, masks changing every 100 steps from
epoch 2 to 28, frozen for the last 12), the last 10,000 training images held out as the
validation split, cells compared on validation error, seeds 0, 1, 2. Cells: ``gradual``,
``drop_weighted`` (importance-weighted, cosine-annealed drops) and ``drop_weighted_tuned``
(the same with the settings ``lenet300_fmnist_weighted_sweep`` chose: the recipe of
``configs/lenet300.py``), all with one global pool. 48-62 s per run on the CPU of
docs/results.md.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, method_cells

LONG_BUDGET = {"num_epochs": 40, "prune_begin_epoch": 2.0, "prune_end_epoch": 28.0}


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_long",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": {**FASHION_MNIST_PROTOCOL, **LONG_BUDGET},
    "cells": method_cells(["gradual", "drop_weighted", "drop_weighted_tuned"], (0.99,)),
    "seeds": [0, 1, 2],
  }
