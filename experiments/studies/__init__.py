"""Study grids for ``python -m experiments.study``.

The LeNet studies share one protocol so that their numbers are comparable: 20 epochs,
pruning from epoch 1 to 14 every 100 steps, then 6 epochs with frozen masks.
"""

FASHION_MNIST_PROTOCOL = {
  "dataset": "fashion_mnist",
  "num_epochs": 20,
  "prune_begin_epoch": 1.0,
  "prune_end_epoch": 14.0,
  "update_every": 100,
  "progress": False,
}
ALL_METHODS = ["dense", "han", "gradual", "random", "drop_away_only", "drop_back_only", "drop"]
