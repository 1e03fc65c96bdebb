"""LeNet-300-100 on Fashion-MNIST at 95 % and 99.5 %: the methods of
``lenet300_fmnist_methods`` (which covers 98 % and 99 %) at a milder and a harsher target.

Same protocol (``FASHION_MNIST_PROTOCOL``: 20 epochs, masks changing every 100 steps until
epoch 14, frozen for the last 6), the last 10,000 training images held out as the
validation split, cells compared on validation error, seeds 0, 1, 2. 266,610 parameters,
410 biases stay dense: 95 % of the 266,200 kernel weights is 19.4x compression, 99.5 % is
153x.

Cells: ``gradual`` (global pool), ``drop_cosine`` (annealed uniform drop, p 0.25 -> 1,
q 0.2 -> 0, global), ``drop_weighted`` (the same with importance-weighted drops, global),
``rigl_erk`` (RigL with ERK per-layer targets, its better setting in
``lenet300_fmnist_methods``), and ``drop_weighted_tuned`` (the weighted drop with the
settings that ``lenet300_fmnist_weighted_sweep`` chose at 99 %, p 0.5 -> 1, q 0.4 -> 0:
does the recipe's choice carry to the other targets?). 25-51 s per run on the CPU of
docs/results.md (17.8 min for the 30).
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, method_cells

TARGETS = (0.95, 0.995)


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_targets",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": FASHION_MNIST_PROTOCOL,
    "cells": method_cells(
      ["gradual", "drop_cosine", "drop_weighted", "rigl_erk", "drop_weighted_tuned"], TARGETS
    ),
    "seeds": [0, 1, 2],
  }
