"""LeNet-300-100 on real Fashion-MNIST: every method x target x 3 seeds.

All gradual methods share epochs, learning-rate schedule and pruning window; the
dense model trains for the same epochs. Targets are per layer ("uniform").
"""

from experiments.studies import ALL_METHODS, FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist",
    "config": "experiments/configs/lenet300_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "methods": ALL_METHODS,
    "targets": [0.9, 0.95, 0.98, 0.99],
    "seeds": [0, 1, 2],
  }
