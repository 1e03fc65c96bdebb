"""LeNet-300-100 on Fashion-MNIST: gradual and Drop Pruning (uniform and importance-weighted
drops) against RigL and SET.

Every method gets the same training budget, the shared LeNet protocol
(``FASHION_MNIST_PROTOCOL``): 20 epochs of SGD, masks changing every 100 steps until
epoch 14 and frozen for the last 6. Gradual and the drops prune from epoch 1 to 14;
RigL and SET train sparse from the first step at the target and change their topology
every 100 steps until epoch 14 (their ``end_step``; ``prune_begin_epoch`` does not apply
to them). Runs hold out the last 10,000 training images as the validation split (the
runner's default); cells are compared on validation error.

Targets 0.98 and 0.99, seeds 0, 1, 2. The pool: ``"global"`` for the methods that support
it (gradual and the drops: one pool over all layers, the best 99 % result of
``lenet300_fmnist_global`` for gradual), per layer (``"uniform"``) for RigL and SET,
which keep a fixed target per layer. Gradual with per-layer targets
(``gradual_uniform``) is the reference with the same pool as RigL and SET, so that the
choice of pool and the method can be told apart.

Cells:

* ``gradual``: ``method="gradual"`` (gradual magnitude pruning, Zhu & Gupta), global;
  the study report's reference.
* ``drop_cosine``: the cosine-annealed drop of the (p, q) sweep ``pq_sweep_lenet300``
  (p 0.25 -> 1, q 0.2 -> 0), global.
* ``drop_weighted``: the same annealed p and q with importance-weighted drops
  (``drop_away="importance"``: less important pool members leave more often;
  ``drop_back="gradient"``: pruned weights of larger dense gradient return more often;
  temperature 1, magnitude importance), global.
* ``rigl``, ``set``: drop fraction 0.3, cosine-decayed to 0 at epoch 14, per layer.
* ``gradual_uniform``: gradual with per-layer targets.
* ``rigl_erk``, ``set_erk``: RigL and SET with ERK per-layer targets (the setting of the
  RigL paper), which keep the small output layer denser at the same overall sparsity.

Cost: 48 runs, 30.4 min on the CPU of docs/results.md (26-65 s per run); RigL and SET
add two O(n) selections per update to 54 of the 7,800 steps.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, method_cells

TARGETS = (0.98, 0.99)
SERIES = [
  "gradual",
  "drop_cosine",
  "drop_weighted",
  "rigl",
  "set",
  "gradual_uniform",
  # RigL's and SET's published setting: per-layer targets by ERK (small layers, such as
  # the 100x10 output, are kept denser), the same overall sparsity.
  "rigl_erk",
  "set_erk",
]


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_methods",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": FASHION_MNIST_PROTOCOL,
    "cells": method_cells(SERIES, TARGETS),
    "seeds": [0, 1, 2],
  }
