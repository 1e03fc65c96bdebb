"""LeNet-300-100 on real Fashion-MNIST with one global pool instead of per-layer targets.

LeNet-300-100 is dominated by its first layer (235,200 of 266,200 prunable weights), so a
global pool can leave the small last layer denser. Gradual vs Drop Pruning, 3 seeds.
"""


def get_study() -> dict:
  return {
      "name": "lenet300_fmnist_global",
      "config": "experiments/configs/lenet300.py",
      "overrides": {
          "dataset": "fashion_mnist",
          "num_epochs": 20,
          "prune_begin_epoch": 1.0,
          "prune_end_epoch": 14.0,
          "update_every": 100,
          "progress": False,
          "sparsity_distribution": "global",
      },
      "methods": ["gradual", "drop"],
      "targets": [0.95, 0.98, 0.99],
      "seeds": [0, 1, 2],
  }
