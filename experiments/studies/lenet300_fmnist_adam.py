"""LeNet-300-100 on Fashion-MNIST at 60 epochs: AdamW instead of SGD for the recipe's
training.

The recipe's sparse model underfits (about 92 % training accuracy at 99 % after 60 epochs,
against 98.7 % dense), and Adam's per-weight step sizes may fit a sparse network better than
SGD's one learning rate. The recipe's series (gradual pruning, learning-rate rewinding,
``budget(60)``), at 98.5 % and 99 %, seeds 0-2, with AdamW (learning rate 1e-3, Adam's
usual default, on the same cosine schedule and rewinding) and decoupled weight decay 0.025
(``adamw_wd0.025``: the per-step decay learning rate x weight decay of the SGD reference,
0.05 x 5e-4) or 0.25 (``adamw_wd0.25``: that decay x 1 / (1 - momentum 0.9), SGD's
effective one). It shares ``lenet300_fmnist_finetune``'s run folders (``root``): the
reference cells ``gradual_rewind_wd5e-4_t<target>`` (SGD, weight decay 5e-4) are the
training screen's runs.

Rule, fixed before these runs (the decay screen's): a setting passes when its paired
validation difference to the reference over the 3 seeds is negative at both targets and
beyond 2 SE at one of them at least; the passing setting with the lower mean validation
error at 99 % goes on to 5 seeds at 200 epochs against the recipe, and
``configs/lenet300.py`` changes only if the paired validation difference at 99 % there is
negative beyond 2 SE. Settings tried on the recipe's training: 2 here, after 14.
"""

from experiments.studies import recipe_series_study

SETTINGS = {
  "_wd5e-4": {"weight_decay": 5e-4},  # the reference (SGD): the training screen's cells
  "_adamw_wd0.025": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.025},
  "_adamw_wd0.25": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.25},
}


def get_study() -> dict:
  return recipe_series_study("lenet300_fmnist_adam", SETTINGS, 60)
