"""LeNet-5 on Fashion-MNIST at 99.5 %: seeds 3-4 of ``lenet5_fmnist_distill``, whose screen
distillation passed (seeds 0-2: -0.58, -0.29, -0.34 points of validation error against the
recipe, -0.40 ± 0.09 paired).

The same two cells (the recipe, and the recipe with distillation from each seed's dense model
trained alike, weight 0.9, temperature 2), seeds 3 and 4; the recipe's runs and the teachers
are ``lenet5_fmnist_finetune``'s (shared ``root``), not rerun.

Rule, fixed before these runs (``lenet5_fmnist_wd_check``'s): distillation holds when neither
new run diverged, both new seeds are ahead of the recipe, and the paired validation
difference over all 5 seeds is negative beyond 2 SE. Even then ``configs/lenet5.py`` does not
change: it needs a dense run first, so it would ship as a second recipe. Test error is
reported beside, never used.
"""

from experiments.studies import lenet5_fmnist_distill


def get_study() -> dict:
  screen = lenet5_fmnist_distill.get_study()
  return {**screen, "name": "lenet5_fmnist_distill_check", "seeds": [0, 1, 2, 3, 4]}
