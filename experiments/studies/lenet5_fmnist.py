"""LeNet-5 on real Fashion-MNIST: every method x target x 3 seeds.

Same protocol as ``lenet300_fmnist`` (shared epochs, learning-rate schedule and pruning
window; per-layer targets). A run took 9.0-30.6 min on the CPU of docs/results.md and
0.4-1.3 min on an H100 (docs/studies/lenet5_fmnist.md), so this grid is for an accelerator
or a long background run.
"""

from experiments.studies import ALL_METHODS, FASHION_MNIST_PROTOCOL


def get_study() -> dict:
  return {
    "name": "lenet5_fmnist",
    "config": "experiments/configs/lenet5_base.py",
    # The reported runs trained on all 60,000 training images (no validation split; compared
    # on test error): pinned, so that a rerun trains on the same images.
    "overrides": {**FASHION_MNIST_PROTOCOL, "validation_examples": 0},
    "methods": ALL_METHODS,
    "targets": [0.9, 0.95, 0.98, 0.99],
    "seeds": [0, 1, 2],
  }
