"""LeNet-300-100 on real Fashion-MNIST: every method x target x 3 seeds.

All gradual methods share epochs, learning-rate schedule and pruning window; the
dense model trains for the same epochs. Targets are per layer ("uniform").
"""


def get_study() -> dict:
  return {
      "name": "lenet300_fmnist",
      "config": "experiments/configs/lenet300.py",
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
