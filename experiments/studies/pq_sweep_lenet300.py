"""(p, q) sweep for Drop Pruning: LeNet-300-100, real Fashion-MNIST, 98 % per layer.

Compared on test error (no validation split); its best annealed settings, (0.25, 0.2) and
(0.5, 0.4), are the candidates of ``lenet300_fmnist_weighted_sweep``. p = drop-away
probability, q = drop-back rate (relative to the active count, the library default).
Combinations the library rejects as unreachable at construction are listed as such in the
report.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL

PROBS_AWAY = (0.25, 0.5, 0.75, 1.0)
RATES_BACK = (0.0, 0.05, 0.1, 0.2)


def get_study() -> dict:
  cells = [
    {
      "name": f"p{p:g}_q{q:g}",
      "method": "drop",
      "target_sparsity": 0.98,
      "drop_away_prob": p,
      "drop_back_prob": q,
    }
    for p in PROBS_AWAY
    for q in RATES_BACK
  ] + [
    # Annealed: p rises to 1 and q falls to 0 along a cosine over the window.
    {
      "name": f"p{p:g}_q{q:g}_cosine",
      "method": "drop",
      "target_sparsity": 0.98,
      "drop_away_prob": p,
      "drop_back_prob": q,
      "drop_anneal": "cosine",
    }
    for p, q in ((0.25, 0.2), (0.5, 0.1), (0.5, 0.2), (0.5, 0.4))
  ]
  return {
    "name": "pq_sweep_lenet300",
    "config": "experiments/configs/lenet300_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "cells": cells,
    "seeds": [0, 1],
  }
