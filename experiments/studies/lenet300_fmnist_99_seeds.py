"""More seeds at 99 % on LeNet-300-100: gradual against the cosine-annealed drop.

At 99 % per layer the 100x10 output layer keeps 10 weights, and with 3 seeds gradual
pruning collapsed once (22.2 %) while the annealed drop did not (``lenet300_fmnist_annealed``):
13.72 ± 0.16 against 16.58 ± 4.85, a lead but not evidence. Ten seeds per method tell
whether the annealed drop is more robust there. Seeds 0-2 are the same runs as in
``lenet300_fmnist_annealed`` (same protocol and names); their folders can be copied.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_99_seeds",
    "config": "experiments/configs/lenet300_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "cells": [
      {"name": "gradual_t0.99", "method": "gradual", "target_sparsity": 0.99},
      {
        "name": "drop_cosine_t0.99",
        "method": "drop",
        "target_sparsity": 0.99,
        "drop_away_prob": 0.25,
        "drop_back_prob": 0.2,
        "drop_anneal": "cosine",
      },
    ],
    "seeds": list(range(10)),
  }
