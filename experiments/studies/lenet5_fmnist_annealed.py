"""The (p, q) sweep's cosine-annealed drop on LeNet-5 at 99 %, beside gradual and constant drop.

On LeNet-300-100 the annealed drop (p 0.25 -> 1, q 0.2 -> 0) was level with gradual at
90-98 % and more robust at 99 % (``lenet300_fmnist_99_seeds``); this checks the 99 % cell on
a second network, where the constant drop was 2.7 points worse than gradual. ``gradual`` and
``drop`` are the same cells as in ``lenet5_fmnist`` (same protocol, seeds and names): their
finished run folders can be copied here instead of rerun.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  target = 0.99
  return {
    "name": "lenet5_fmnist_annealed",
    "config": "experiments/configs/lenet5_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "cells": [
      {"name": "gradual_t0.99", "method": "gradual", "target_sparsity": target},
      {"name": "drop_t0.99", "method": "drop", "target_sparsity": target},
      {
        "name": "drop_cosine_t0.99",
        "method": "drop",
        "target_sparsity": target,
        "drop_away_prob": 0.25,
        "drop_back_prob": 0.2,
        "drop_anneal": "cosine",
      },
    ],
    "seeds": [0, 1, 2],
  }
