"""LeNet-300-100 on Fashion-MNIST at 99 %: the settings of the importance-weighted drop,
chosen on validation error.

The annealed p and q of the drop (p from p0 to 1, q from q0 to 0, cosine) come from
``pq_sweep_lenet300``, which chose them on test error (it has no validation split), and
the weighted drop's temperature is not chosen there. This grid chooses both on validation:
(p0, q0) in {(0.25, 0.2), (0.5, 0.4)} (the two best annealed settings of that sweep) x
temperature in {0.5, 1, 2}, one global pool, ``drop_away="importance"``,
``drop_back="gradient"``; the shared protocol (``FASHION_MNIST_PROTOCOL``), the last
10,000 training images held out. Seeds 0 and 1 for every cell; seed 2 only for the two
cells to choose between at T = 1 (the best on validation over seeds 0-1, (0.5, 0.4), and the
setting of the other studies' ``drop_weighted``, (0.25, 0.2)):
``--cells='weighted_p0.5_q0.4_T1_seed2,weighted_p0.25_q0.2_T1_seed2'``. 30-49 s per run
on the CPU of docs/results.md.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL

TARGET = 0.99
SETTINGS = ((0.25, 0.2), (0.5, 0.4))
TEMPERATURES = (0.5, 1.0, 2.0)


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_weighted_sweep",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": {
      **FASHION_MNIST_PROTOCOL,
      "method": "drop",
      "sparsity_distribution": "global",
      "target_sparsity": TARGET,
      "drop_anneal": "cosine",
      "drop_away": "importance",
      "drop_back": "gradient",
    },
    "cells": [
      {
        "name": f"weighted_p{p:g}_q{q:g}_T{t:g}",
        "drop_away_prob": p,
        "drop_back_prob": q,
        "temperature": t,
      }
      for p, q in SETTINGS
      for t in TEMPERATURES
    ],
    "seeds": [0, 1, 2],
  }
