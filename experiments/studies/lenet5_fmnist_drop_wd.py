"""LeNet-5 on Fashion-MNIST at 99.5 % (158x), 40 epochs, 5 seeds: the answer to "does the
drop beat gradual pruning?" redone with the recipe's training for both (rewinding, weight
decay 5e-4, a one-epoch warmup).

The LeNet-5 recipe took weight decay 5e-4 with a warmup (``lenet5_fmnist_warmup``), tuned on
gradual pruning only; the drop was last compared with rewinding and weight decay 1e-4
(``lenet5_fmnist_final``: +0.37 ± 0.07 points behind, paired). Here the importance-weighted
drop (``drop_weighted_tuned``) gets the same training as the recipe, seeds 0-4, beside the
recipe's own cell ``gradual_rewind_wd5e-4_warmup1_t0.995`` (shared ``root``: those runs are
not rerun). As ``lenet300_fmnist_drop_wd`` did for LeNet-300-100.

Rule, fixed before these runs: the answer is the paired difference over the 5 seeds of the
drop against gradual pruning, both trained alike, on validation, with the test difference
beside it; beyond 2 SE counts as a difference. If the drop is ahead beyond 2 SE and none of
its runs diverged, ``configs/lenet5.py`` becomes it; otherwise it stays. Settings tried:
the one drop configuration the earlier studies chose, with the recipe's training.
"""

from experiments.studies import cell_named, lenet5_fmnist_finetune, lenet5_fmnist_warmup

DROP = "drop_weighted_tuned_rewind_t0.995"


def get_study() -> dict:
  warmup = lenet5_fmnist_warmup.get_study()
  recipe = cell_named(warmup, lenet5_fmnist_warmup.RECIPE)
  drop = cell_named(lenet5_fmnist_finetune.get_study(), DROP)
  training = {"weight_decay": recipe["weight_decay"], "warmup_epochs": recipe["warmup_epochs"]}
  candidate = {**drop, **training, "name": "drop_weighted_tuned_rewind_wd5e-4_warmup1_t0.995"}
  return {**warmup, "name": "lenet5_fmnist_drop_wd", "cells": [recipe, candidate]}
