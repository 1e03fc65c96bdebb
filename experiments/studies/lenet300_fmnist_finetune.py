"""LeNet-300-100 on Fashion-MNIST at 60 epochs: distillation and learning-rate rewinding
for both gradual pruning and the shipped Drop Pruning recipe.

Cells, at 98.5 % and 99 % (one global pool, the 60-epoch ``budget``: masks change from
epoch 3 to 42, then 18 epochs with frozen masks): each method plain, with learning-rate
rewinding (``lr_rewind_epoch=0``: the cosine schedule restarts over the 18 frozen-mask
epochs), with distillation from the same seed's dense 60-epoch run of this study
(``distill_weight=0.5``, ``distill_temperature=4``: the defaults, not tuned), and with
both. Seeds 0, 1, 2; the last 10,000 training images held out, and the teacher holds out
the same ones (the runner refuses a teacher trained on another split).

Rule, fixed before the runs: a technique is kept for a method when its mean validation
error is lower than the plain cell's at both targets, the paired difference over the
shared seeds larger than its standard error; the method comparison is redone with each
method's kept techniques. 2 methods x 2 targets x 4 variants = 16 settings tried, with
no setting of the techniques tuned.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL, METHOD_SERIES, budget

EPOCHS = 60
TEACHER = {"teacher_workdir": "{root}/dense_e60_seed{seed}"}
VARIANTS = {
  "plain": {},
  "rewind": {"lr_rewind_epoch": 0.0},
  "distill": TEACHER,
  "rewind_distill": {"lr_rewind_epoch": 0.0, **TEACHER},
}


def get_study() -> dict:
  cells = [{"name": f"dense_e{EPOCHS}", "method": "dense", **budget(EPOCHS)}]
  for series in ("gradual", "drop_weighted_tuned"):
    for target in (0.985, 0.99):
      for variant, overrides in VARIANTS.items():
        cells.append(
          {
            "name": f"{series}_{variant}_t{target:g}",
            "target_sparsity": target,
            **METHOD_SERIES[series],
            **budget(EPOCHS),
            **overrides,
          }
        )
  return {
    "name": "lenet300_fmnist_finetune",
    "config": "experiments/configs/lenet300_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    "cells": cells,
    "seeds": [0, 1, 2],
  }
