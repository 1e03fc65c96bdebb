"""LeNet-300-100 on Fashion-MNIST at 200 epochs, 5 seeds: the answer to "does the drop beat
gradual pruning?" redone with the recipe's training for both (rewinding, weight decay 5e-4).

The recipe took weight decay 5e-4 (``lenet300_fmnist_training``, ``lenet300_fmnist_wd``),
tuned on gradual pruning only. Here the importance-weighted drop (``drop_weighted_tuned``)
gets the same: learning-rate rewinding and weight decay 5e-4, 200 epochs, 98.5 % and 99 %,
seeds 0-4, beside gradual pruning's cells of ``lenet300_fmnist_wd`` (shared ``root``:
those runs are not rerun).

Rule, fixed before these runs: the answer is the paired difference over the 5 seeds of the
drop against gradual pruning, both rewound with weight decay 5e-4, at each target, on
validation, with the test difference beside it; beyond 2 SE counts as a difference. If the
drop is ahead beyond 2 SE at 99 %, ``configs/lenet300.py`` becomes it; otherwise it stays.
Settings tried: the one drop configuration the earlier studies chose, with the recipe's
training.
"""

from experiments.studies import recipe_series_study


def get_study() -> dict:
  settings = {"_wd5e-4": {"weight_decay": 5e-4}}
  return recipe_series_study(
    "lenet300_fmnist_drop_wd",
    settings,
    200,
    series=("drop_weighted_tuned", "gradual"),
    seeds=(0, 1, 2, 3, 4),
  )
