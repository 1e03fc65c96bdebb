"""Check of the sweep's choice: cosine-annealed Drop Pruning on LeNet-300-100, every target.

In the (p, q) sweep at 98 % (``pq_sweep_lenet300``, test error) the cosine-annealed drop
with p0 = 0.25, q0 = 0.2 had the lowest error of all settings; this grid checks it at
every target of ``lenet300_fmnist`` with 3 seeds, so that it can be compared cell by cell
with that study's ``gradual`` and ``drop`` rows (same protocol, same seeds), which it
includes.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  targets = (0.9, 0.95, 0.98, 0.99)
  # gradual and constant drop are the same cells as in lenet300_fmnist (same protocol,
  # seeds and names): their finished run folders can be copied here instead of rerun.
  cells = [
    {"name": f"{m}_t{t:g}", "method": m, "target_sparsity": t}
    for m in ("gradual", "drop")
    for t in targets
  ]
  cells += [
    {
      "name": f"drop_cosine_t{t:g}",
      "method": "drop",
      "target_sparsity": t,
      "drop_away_prob": 0.25,
      "drop_back_prob": 0.2,
      "drop_anneal": "cosine",
    }
    for t in targets
  ]
  return {
    "name": "lenet300_fmnist_annealed",
    "config": "experiments/configs/lenet300_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "cells": cells,
    "seeds": [0, 1, 2],
  }
