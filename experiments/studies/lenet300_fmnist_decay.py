"""LeNet-300-100 on Fashion-MNIST at 60 epochs: does more weight decay than 5e-4 help the
recipe's sparse model further?

``lenet300_fmnist_training`` found weight decay 5e-4 better than 1e-4 (and than none), and
``lenet300_fmnist_wd`` kept it at 200 epochs. This screen continues the axis for the same
series (gradual pruning with learning-rate rewinding, ``budget(60)``, 98.5 % and 99 %,
seeds 0-2): weight decay 1e-3 and 2e-3. It shares ``lenet300_fmnist_finetune``'s run
folders (``root``): the 5e-4 cells are the training screen's runs, not rerun.

Rule, fixed before these runs: a setting passes when its paired validation difference to
the 5e-4 cells over the 3 seeds is negative at both targets and beyond 2 SE at one of them
at least; the passing setting with the lower mean validation error at 99 % goes on to 5
seeds at 200 epochs against the recipe (``lenet300_fmnist_wd``'s 5e-4 cells), and
``configs/lenet300.py`` changes only if the paired validation difference at 99 % there is
beyond 2 SE. Settings tried on this axis: 2 here, after the 5 of the training screen.
"""

from experiments.studies import recipe_series_study

DECAYS = {"wd5e-4": 5e-4, "wd1e-3": 1e-3, "wd2e-3": 2e-3}  # the first is the reference


def get_study() -> dict:
  settings = {f"_{name}": {"weight_decay": decay} for name, decay in DECAYS.items()}
  return recipe_series_study("lenet300_fmnist_decay", settings, 60)
