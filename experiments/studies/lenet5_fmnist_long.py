"""LeNet-5 on Fashion-MNIST at 99.5 % (158x): the recipe's training at 60 epochs instead of
40, over 5 seeds.

``lenet5_fmnist_finetune`` ran plain gradual pruning at 60 epochs (3 seeds), 0.12 points of
validation error ahead of 40 epochs; the recipe has since gained rewinding, weight decay
5e-4 and a one-epoch warmup (``lenet5_fmnist_warmup``). One candidate cell: the recipe cell
``gradual_rewind_wd5e-4_warmup1_t0.995`` with ``budget(60)`` (masks change from epoch 3 to
42, then the cosine schedule restarts for the 18 epochs with frozen masks). It shares
``lenet5_fmnist_finetune``'s run folders (``root``): the reference is the recipe's 5 runs,
not rerun. A run takes about 18 minutes on the 2-core CPU.

Rule, fixed before these runs: seeds 0-4 run in order, and ``configs/lenet5.py`` takes the
60-epoch budget when all 5 seeds train and the paired validation difference to the
reference over the 5 seeds is negative beyond 2 SE; test error is reported beside, never
used. A dense 60-epoch cell trained alike runs after the candidate's seeds, seed by seed as
far as the time allows, to tell whether the dense model gains from the budget too; it
chooses nothing. Settings tried for the LeNet-5 recipe: this is the third after the 4 at 40
epochs and 2 at 60 of ``lenet5_fmnist_finetune`` (before it: weight decay 5e-4 alone, and
with the warmup).
"""

from experiments.studies import budget, lenet5_fmnist_warmup


def get_study() -> dict:
  warmup = lenet5_fmnist_warmup.get_study()
  _, reference, dense40 = warmup["cells"]
  candidate = {**reference, "name": "gradual_rewind_wd5e-4_warmup1_t0.995_e60", **budget(60)}
  dense = {**dense40, "name": "dense_wd5e-4_warmup1_e60", **budget(60)}
  return {**warmup, "name": "lenet5_fmnist_long", "cells": [reference, candidate, dense]}
