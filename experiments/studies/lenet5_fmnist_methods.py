"""LeNet-5 on Fashion-MNIST at 99.2 % (107x compression): gradual, annealed and
importance-weighted Drop Pruning, RigL and SET, under the validation protocol.

The question of ``lenet300_fmnist_methods`` on the second network, at a target that gives
at least 100x compression: 431,080 parameters, 580 biases stay dense, 99.2 % of the 430,500
kernel weights pruned leaves 4,024 nonzero parameters (107.1x). Same budget for every
method, the shared LeNet protocol (``FASHION_MNIST_PROTOCOL``: 20 epochs, masks changing
every 100 steps until epoch 14, frozen for the last 6), the last 10,000 training images held
out as the validation split; cells are compared on validation error.

Cells (one global pool for gradual and the drops, which beat per-layer targets at 99 % on
test error in ``lenet5_fmnist_global``, the only comparison of the two pools on LeNet-5;
ERK per-layer targets for RigL, its published setting and its better one in
``lenet300_fmnist_methods``):

* ``gradual``: gradual magnitude pruning (Zhu & Gupta), the reference.
* ``drop_cosine``: the cosine-annealed uniform drop (p 0.25 -> 1, q 0.2 -> 0).
* ``drop_weighted``: the same annealed p and q with importance-weighted drops
  (``drop_away="importance"``, ``drop_back="gradient"``, temperature 1).
* ``rigl_erk``: RigL, drop fraction 0.3 cosine-decayed to 0 at epoch 14, ERK targets.
* ``set_erk``: SET (random regrowth), the same drop fraction and ERK targets.
* ``drop_weighted_tuned``: the weighted drop with the settings chosen on LeNet-300-100
  (``lenet300_fmnist_weighted_sweep``: p 0.5 -> 1, q 0.4 -> 0), the drop of
  ``configs/lenet300.py``.

Seeds 0, 1, 2. A LeNet-5 run of this protocol took 11-15 minutes on a 2-core CPU, so
the grid (18 runs) is run in the order that answers the main question first:
``--cells='gradual*,drop_weighted_t0*,drop_cosine*,rigl_erk*,set_erk*,drop_weighted_tuned*'``.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, method_cells

TARGET = 0.992


def get_study() -> dict:
  return {
    "name": "lenet5_fmnist_methods",
    "config": "experiments/configs/lenet5_base.py",
    "overrides": FASHION_MNIST_PROTOCOL,
    "cells": method_cells(
      ["gradual", "drop_cosine", "drop_weighted", "rigl_erk", "set_erk", "drop_weighted_tuned"],
      (TARGET,),
    ),
    "seeds": [0, 1, 2],
  }
