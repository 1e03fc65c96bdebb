"""LeNet-5 on Fashion-MNIST at 99.5 % (158x), 40 epochs: the final comparison over 5 seeds.

The 40-epoch cells of ``lenet5_fmnist_finetune`` (dense; gradual pruning and the weighted
drop ``drop_weighted_tuned``, each plain and with learning-rate rewinding), with seeds 3 and
4 added to its seeds 0-2. It shares that study's run folders (``root``): seeds 0-2 are
the same runs, only seeds 3 and 4 are new.

Rule, fixed before seeds 3 and 4 ran (after seeds 0-2, whose results chose these cells:
``lenet5_fmnist_finetune``'s rule keeps rewinding for both methods, paired -0.35 ± 0.03
and -0.33 ± 0.19 points of validation error over 3 seeds):
1. the answer to "does the drop beat gradual pruning on LeNet-5?" is the paired difference
   over the 5 shared seeds of the two methods' best cells (with rewinding), on validation,
   with the test difference beside it; beyond 2 SE counts as a difference;
2. the ``lenet5`` recipe is the cell with the lowest mean validation error at 99.5 % over
   the 5 seeds among the four pruned cells here (the rule that chose it before, the lowest
   validation error at its target, applied to the longer budget);
3. settings tried for that choice: 2 methods x 2 variants at one budget here, plus the
   60-epoch plain cells of ``lenet5_fmnist_finetune`` and the 20-epoch cells of
   ``lenet5_fmnist_targets``.
"""

from experiments.studies import lenet5_fmnist_finetune


def get_study() -> dict:
  finetune = lenet5_fmnist_finetune.get_study()
  return {
    **finetune,
    "name": "lenet5_fmnist_final",
    "root": "runs/studies/lenet5_fmnist_finetune",
    "cells": [cell for cell in finetune["cells"] if cell["num_epochs"] == 40],
    "seeds": [0, 1, 2, 3, 4],
  }
