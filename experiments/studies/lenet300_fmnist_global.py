"""LeNet-300-100 on real Fashion-MNIST with one global pool instead of per-layer targets.

LeNet-300-100 is dominated by its first layer (235,200 of 266,200 prunable weights), so a
global pool can leave the small last layer denser. Gradual vs Drop Pruning, 3 seeds.
"""

from experiments.studies import FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  return {
    "name": "lenet300_fmnist_global",
    "config": "experiments/configs/lenet300_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {
      **FASHION_MNIST_PROTOCOL,
      "sparsity_distribution": "global",
      "validation_examples": 0,
    },
    "methods": ["gradual", "drop"],
    "targets": [0.95, 0.98, 0.99],
    "seeds": [0, 1, 2],
  }
