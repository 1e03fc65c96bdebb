"""LeNet-5 on Fashion-MNIST at 95 %, 98 % and 99.5 %: the methods of
``lenet5_fmnist_methods`` (which covers 99.2 %) at milder and harsher targets.

Same protocol (``FASHION_MNIST_PROTOCOL``: 20 epochs, masks changing every 100 steps until
epoch 14, frozen for the last 6), the last 10,000 training images held out as the
validation split, cells compared on validation error, seeds 0, 1, 2. 431,080 parameters,
580 biases stay dense: 95 % of the 430,500 kernel weights is 19.5x compression, 98 % is
46.9x, 99.5 % is 157.8x.

Cells: ``gradual`` (global pool), ``drop_cosine`` (annealed uniform drop, p 0.25 -> 1,
q 0.2 -> 0, global), ``drop_weighted`` (the same with importance-weighted drops, global),
``rigl_erk`` and ``set_erk`` (ERK per-layer targets, drop fraction 0.3 cosine-decayed).

A LeNet-5 run took 9-39 minutes on a 2-core CPU (790.2 min for the 45), so on one the grid
is best run in the order that answers the main question first, gradual against the weighted
drop, seed by seed, at the harshest target and then at 98 %:
``--cells=gradual_t0.995_seed0,drop_weighted_t0.995_seed0,gradual_t0.995_seed1,...``.
On an accelerator, ``--shard I/N`` runs the whole grid in N processes.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, method_cells

TARGETS = (0.95, 0.98, 0.995)


def get_study() -> dict:
  return {
    "name": "lenet5_fmnist_targets",
    "config": "experiments/configs/lenet5_base.py",
    "overrides": FASHION_MNIST_PROTOCOL,
    "cells": method_cells(
      ["gradual", "drop_cosine", "drop_weighted", "rigl_erk", "set_erk"], TARGETS
    ),
    "seeds": [0, 1, 2],
  }
