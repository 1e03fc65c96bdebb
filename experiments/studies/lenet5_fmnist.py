"""LeNet-5 on real Fashion-MNIST: every method x target x 3 seeds.

Same protocol as ``lenet300_fmnist`` (shared epochs, learning-rate schedule and pruning
window; per-layer targets). LeNet-5 costs about 15x LeNet-300-100 per step on a CPU
(roughly 5 minutes per 10-epoch run on 2 cores), so this grid is for an accelerator
or a long background run.
"""

from experiments.studies import ALL_METHODS, FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  return {
    "name": "lenet5_fmnist",
    "config": "experiments/configs/lenet5_base.py",
    "overrides": FASHION_MNIST_PROTOCOL,
    "methods": ALL_METHODS,
    "targets": [0.9, 0.95, 0.98, 0.99],
    "seeds": [0, 1, 2],
  }
