"""LeNet-300-100 on Fashion-MNIST: prune a trained dense model instead of training from
scratch while pruning.

The recipe (gradual pruning, learning-rate rewinding, weight decay 5e-4, 200 epochs, masks
from epoch 10 to 140) prunes a model still in training. Here each seed's dense model with
the recipe's weight decay, trained for 200 epochs (``lenet300_fmnist_wd``'s
``dense_wd5e-4_e200``, 9.65 ± 0.11 % validation error), starts the run
(``init_workdir``), which then prunes it as the recipe's series does on ``budget(60)``
(masks from epoch 3 to 42, the cosine restarted over the last 18), at 98.5 % and 99 %,
seeds 0-4: 260 epochs in all against the recipe's 200. It shares
``lenet300_fmnist_budget``'s run folders (``root``); the recipe's cells are
``lenet300_fmnist_wd``'s runs, not rerun.

Rule, fixed before these runs: the answer is the paired validation difference to the recipe
over the 5 seeds at each target (beyond 2 SE counts as a difference), with the test
difference beside. This is a question, not a choice of ``configs/lenet300.py``: a recipe
that needs a dense run first would be a second config, decided in a later change.
"""

from experiments.studies import recipe_series_study, rewound_cells

TRAINED = {"weight_decay": 5e-4, "init_workdir": "{root}/dense_wd5e-4_e200_seed{seed}"}


def get_study() -> dict:
  study = recipe_series_study(
    "lenet300_fmnist_trained_start", {"_wd5e-4": {"weight_decay": 5e-4}}, 200, seeds=(0, 1, 2, 3, 4)
  )
  study["cells"] += rewound_cells(
    ["gradual"], {"_wd5e-4_trained": TRAINED}, (0.99, 0.985), 60, epochs_in_name=True
  )
  return study
