"""LeNet-300-100 on Fashion-MNIST at 60 epochs: five more of the runner's options on the
recipe's training.

The recipe's series with its weight decay (gradual pruning, learning-rate rewinding, weight
decay 5e-4; ``budget(60)``: masks change from epoch 3 to 42), at 98.5 % and 99 %, seeds
0-2, with one change each: per-layer targets by Erdos-Renyi-kernel instead of one global
pool (``erk``: more of the weights left to the two small layers); weights ranked by
saliency |w g| instead of magnitude (``saliency``); Nesterov momentum (``nesterov``); the
runner's random crop (4 px) and horizontal flip of the training images (``augment``); a
mask update every 50 steps instead of 100 (``every50``: as many updates as batch 64 made in
``lenet300_fmnist_schedule``, at batch 128). It shares ``lenet300_fmnist_finetune``'s run
folders (``root``): the reference cells ``gradual_rewind_wd5e-4_t<target>`` are the
training screen's runs.

Rule, fixed before these runs: a setting passes when its paired validation difference to
the reference over the 3 seeds is negative at both targets and beyond 2 SE at one of them
at least (the decay screen's). The passing settings, at most the two with the lowest mean
validation error at 99 %, go on to 5 seeds at 200 epochs at both targets against the
recipe (``lenet300_fmnist_wd``'s 5e-4 cells), and so does the two's combination when two
pass; ``configs/lenet300.py`` takes, among the variants whose paired validation difference
to the recipe is beyond 2 SE at 99 % and negative at 98.5 %, the one with the lowest mean
validation error at 99 %, and stays as it is when none is. Settings tried on the recipe's
training: 5 here, after 9.
"""

from experiments.studies import recipe_series_study

OPTIONS = {
  "": {},  # the reference: the training screen's weight-decay-5e-4 cells
  "_erk": {"sparsity_distribution": "erk"},
  "_saliency": {"importance": "saliency"},
  "_nesterov": {"nesterov": True},
  "_augment": {"augment": True},
  "_every50": {"update_every": 50},
}


def get_study() -> dict:
  settings = {
    f"_wd5e-4{name}": {"weight_decay": 5e-4, **overrides} for name, overrides in OPTIONS.items()
  }
  return recipe_series_study("lenet300_fmnist_options", settings, 60)
