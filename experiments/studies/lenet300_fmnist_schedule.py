"""LeNet-300-100 on Fashion-MNIST at 60 epochs: a longer fine-tuning phase or smaller
batches for the recipe's sparse model.

The recipe's series with its weight decay (gradual pruning, learning-rate rewinding, weight
decay 5e-4; ``budget(60)``: masks change from epoch 3 to 42), at 98.5 % and 99 %, seeds
0-2, with one change each: the last mask update at epoch 30 instead of 42 (``end0.5``: 30
frozen epochs to fine-tune instead of 18, the rewound cosine over them) and batch 64
instead of 128 (``bs64``: twice the steps, and twice the mask updates in the same window).
It shares ``lenet300_fmnist_finetune``'s run folders (``root``): the reference cells
``gradual_rewind_wd5e-4_t<target>`` are the training screen's runs.

Rule, fixed before these runs (the decay screen's): a setting passes when its paired
validation difference to the reference over the 3 seeds is negative at both targets and
beyond 2 SE at one of them at least; the passing setting with the lower mean validation
error at 99 % goes on to 5 seeds at 200 epochs against the recipe, and
``configs/lenet300.py`` changes only if the paired validation difference at 99 % there is
beyond 2 SE. Settings tried on the recipe's training: 2 here, after 7.
"""

from experiments.studies import recipe_series_study

SETTINGS = {
  "": {},  # the reference: the training screen's weight-decay-5e-4 cells
  "_end0.5": {"prune_end_epoch": 30.0},
  "_bs64": {"batch_size": 64},
}


def get_study() -> dict:
  settings = {
    f"_wd5e-4{name}": {"weight_decay": 5e-4, **overrides} for name, overrides in SETTINGS.items()
  }
  return recipe_series_study("lenet300_fmnist_schedule", settings, 60)
