"""LeNet-5 on Fashion-MNIST at 99.5 % (158x), 40 epochs: does the LeNet-300-100 recipe's
weight decay of 5e-4 help the LeNet-5 recipe too?

One cell: ``lenet5_fmnist_final``'s recipe cell ``gradual_rewind_t0.995`` (gradual pruning,
one global pool, learning-rate rewinding, ``budget(40)``) with weight decay 5e-4 instead of
LeNet-5's 1e-4 (``lenet300_fmnist_wd`` kept 5e-4 for LeNet-300-100, -0.49 ± 0.09 points
paired). It shares ``lenet5_fmnist_finetune``'s run folders (``root``): the reference cell
is the recipe's 5 runs, not rerun.

The reference runs trained on an H200; these on the 2-core CPU (about 20 min a run). Seed
for seed the two share the initial weights and the data order, not the float rounding, so
the paired difference is reported with the unpaired one beside it.

Rule, fixed before these runs: seeds 0-2 first, as a screen; weight decay 5e-4 passes it
when the paired validation difference to the reference over those 3 seeds is negative
beyond 2 SE. Only then do seeds 3 and 4 run, and ``configs/lenet5.py`` takes weight decay
5e-4 when the paired validation difference over the 5 seeds is negative beyond 2 SE; test
error is reported beside, never used. Settings tried for the LeNet-5 recipe: 1 here, after
the 4 at 40 epochs and 2 at 60 of ``lenet5_fmnist_finetune``.
"""

from experiments.studies import cell_named, lenet5_fmnist_finetune

REFERENCE = "gradual_rewind_t0.995"


def get_study() -> dict:
  finetune = lenet5_fmnist_finetune.get_study()
  reference = cell_named(finetune, REFERENCE)
  candidate = {**reference, "name": "gradual_rewind_wd5e-4_t0.995", "weight_decay": 5e-4}
  return {
    **finetune,
    "name": "lenet5_fmnist_wd",
    "root": "runs/studies/lenet5_fmnist_finetune",
    "cells": [reference, candidate],
    "seeds": [0, 1, 2, 3, 4],
  }
