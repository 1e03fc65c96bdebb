"""A small ViT on Fashion-MNIST: what each method does to attention and MLP weights.

``experiments/configs/vit.py`` (7x7 patches, dim 64, 2 pre-LN blocks of 4 heads, MLP 128;
72,074 parameters, every one annotated for a ``("data", "model")`` mesh), AdamW 1e-3 with
cosine decay, weight decay 1e-4, batch 128, 10 epochs, masks changing every 100 steps from
epoch 0.5 to 7 (every 50 steps: 51 pruning steps, as many as the LeNet protocol's 20 epochs
have), then 3 frozen epochs; under ``jax.jit``. Cells: dense; gradual pruning and
the annealed uniform drop (``drop_cosine``), one global pool each; RigL with its published
ERK layer targets; at 90 % and 95 %. Seeds 0, 1, 2; the last 10,000 training images held
out for validation.

Rule, fixed before the runs: this study chooses nothing. Each method runs with the settings
it has on the LeNets (one setting per method, none tuned for the ViT; 3 methods x 2 targets
= 6 settings), compared on mean validation error with paired differences against gradual
pruning over the shared seeds; test error is reported beside it. The per-layer columns show
where each method puts the sparsity (attention q/k/v/out, MLP, patch embedding, position
embedding, head).
"""

from experiments.studies import METHOD_SERIES


def get_study() -> dict:
  cells = [{"name": "dense", "method": "dense"}]
  for series in ("gradual", "drop_cosine", "rigl_erk"):
    for target in (0.9, 0.95):
      cells.append(
        {"name": f"{series}_t{target:g}", "target_sparsity": target, **METHOD_SERIES[series]}
      )
  return {
    "name": "vit_fmnist",
    "config": "experiments/configs/vit.py",
    "overrides": {
      "dataset": "fashion_mnist",
      "num_epochs": 10,
      "prune_begin_epoch": 0.5,
      "prune_end_epoch": 7.0,
      "update_every": 50,
      "progress": False,
    },
    "cells": cells,
    "seeds": [0, 1, 2],
  }
