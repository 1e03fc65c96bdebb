"""LeNet-5 on real Fashion-MNIST: every method x target x 3 seeds.

Same protocol as ``lenet300_fmnist`` (shared epochs, learning-rate schedule and pruning
window; per-layer targets). LeNet-5 costs about 15x LeNet-300-100 per step on a CPU
(roughly 5 minutes per 10-epoch run on 2 cores), so this grid is for an accelerator
or a long background run.
"""


def get_study() -> dict:
  return {
      "name": "lenet5_fmnist",
      "config": "experiments/configs/lenet5.py",
      "overrides": {
          "dataset": "fashion_mnist",
          "num_epochs": 20,
          "prune_begin_epoch": 1.0,
          "prune_end_epoch": 14.0,
          "update_every": 100,
          "progress": False,
      },
      "methods": ["dense", "han", "gradual", "random", "drop_away_only", "drop_back_only", "drop"],
      "targets": [0.9, 0.95, 0.98, 0.99],
      "seeds": [0, 1, 2],
  }
