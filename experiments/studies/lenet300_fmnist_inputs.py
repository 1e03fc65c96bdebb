"""LeNet-300-100 on Fashion-MNIST at 60 epochs: standardised inputs on the recipe's training.

At 99 % the recipe's sparse model underfits (its training error ends at 6.6-7.1 %, the
dense model's trained alike at 0.7 %): what is left of the gap looks like fitting, not
overfitting. Every run so far fed the pixels scaled to [0, 1], never centred; centred,
unit-variance inputs condition SGD better (LeCun et al. 1998, "Efficient BackProp"), which
matters most to a model that cannot fit. ``_std``: ``standardize=True`` (the mean and std
of the pixels of the 50,000 images trained on), with the recipe's series and weight decay
(gradual pruning, learning-rate rewinding, weight decay 5e-4; ``budget(60)``: masks change
from epoch 3 to 42), at 98.5 % and 99 %, seeds 0-2. It shares
``lenet300_fmnist_finetune``'s run folders (``root``): the reference cells
``gradual_rewind_wd5e-4_t<target>`` are the training screen's runs.

Two dense cells, 60 epochs, weight decay 5e-4, with and without standardised inputs
(``dense_wd5e-4_e60``, ``dense_wd5e-4_std_e60``), choose nothing: they tell whether a gain
is the sparse model's or every model's (the gap to the dense model is what the recipe has
to halve).

Rule, fixed before these runs (the options screen's): the setting passes when its paired
validation difference to the reference over the 3 seeds is negative at both targets and
beyond 2 SE at one of them at least. If it passes, it goes on to 5 seeds at 200 epochs at
both targets against the recipe (``lenet300_fmnist_wd``'s 5e-4 cells), where
``configs/lenet300.py`` takes it if its paired validation difference to the recipe is
negative beyond 2 SE at 99 % and negative at 98.5 %. Settings tried on the recipe's
training: 1 here, after 17.
"""

from experiments.studies import recipe_series_study

SETTINGS = {
  "_wd5e-4": {"weight_decay": 5e-4},  # the reference: the training screen's cells
  "_wd5e-4_std": {"weight_decay": 5e-4, "standardize": True},
}


def get_study() -> dict:
  study = recipe_series_study("lenet300_fmnist_inputs", SETTINGS, 60)
  dense = {"method": "dense", "num_epochs": 60, "weight_decay": 5e-4}
  study["cells"] += [
    {"name": "dense_wd5e-4_e60", **dense},
    {"name": "dense_wd5e-4_std_e60", **dense, "standardize": True},
  ]
  return study
