"""LeNet-300-100 on Fashion-MNIST at 200 epochs: the final comparison over 5 seeds, with
learning-rate rewinding available to both methods.

The 200-epoch cells of ``lenet300_fmnist_budget`` (dense; gradual pruning and the weighted
drop ``drop_weighted_tuned`` at 98.5 % and 99 %, one global pool) with seeds 3 and 4 added
to its seeds 0-2, and the same two methods with learning-rate rewinding
(``lr_rewind_epoch=0``: the cosine restarts over the 60 epochs with frozen masks) at both
targets, seeds 0-4. It shares the budget study's run folders (``root``): its plain runs of
seeds 0-2 are reused, not rerun. The 99 % cells come first, so that a time-boxed run
finishes the recipe's target first.

Rule, fixed before these runs (after ``lenet300_fmnist_budget``'s seeds 0-2, which chose
the budget, and ``lenet300_fmnist_finetune``, where rewinding helped both methods at 99 %
at 60 epochs):
1. the ``lenet300`` recipe is the cell with the better mean validation rank over 98.5 % and
   99 % among the four pruned series (gradual / weighted drop, plain / rewound), each
   ranked on its mean validation error over the 5 seeds; a tie goes to the series with the
   lower validation error at 99 %; the recipe ships it at 99 % (86.8x);
2. the answer to "does the drop beat gradual pruning?" is the paired difference over the
   5 shared seeds of each method's better variant at each target, on validation, with the
   test difference beside it; beyond 2 SE counts as a difference.
Settings tried for the recipe here: 2 methods x 2 variants (x 2 targets, ranked together).
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, budget_cells, rewound_cells


def get_study() -> dict:
  plain = budget_cells(["dense", "gradual", "drop_weighted_tuned"], (0.99, 0.985), (200,))
  rewound = rewound_cells(
    ["gradual", "drop_weighted_tuned"], {"": {}}, (0.99, 0.985), 200, epochs_in_name=True
  )
  return {
    "name": "lenet300_fmnist_final",
    "root": "runs/studies/lenet300_fmnist_budget",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    # dense first, then every 99 % cell, then every 98.5 % cell
    "cells": sorted(plain + rewound, key=lambda c: -c.get("target_sparsity", 1.0)),
    "seeds": [0, 1, 2, 3, 4],
  }
