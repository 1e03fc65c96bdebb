"""A small vision transformer (``experiments.models.ViT``: 7x7 patches, dim 64, 2 pre-LN
blocks of 4 heads, MLP 128; 72,074 parameters) on Fashion-MNIST, pruned to 90 % with Drop
Pruning, under ``jax.jit`` on a mesh.

Every parameter of the ViT, biases and LayerNorm scales included, carries a sharding
annotation for a ``("data", "model")`` mesh (tensor parallel over ``model``, FSDP over
``data``); the runner places the params, the masks and the optimizer state by them. On one
device (the default mesh ``(-1,)`` over ``("data",)``) the ``model`` axis is absent and
those dimensions are replicated; on 4 devices as a 2x2 mesh::

  python -m experiments.main --config=experiments/configs/vit.py \\
    --config.mesh_shape='(2, 2)' --config.mesh_axes='("data", "model")'

AdamW (learning rate 1e-3, cosine, weight decay 1e-4), batch 128, 10 epochs, masks updated
every 50 steps from epoch 0.5 to 7. Under the default prunable rule the attention, MLP,
patch-embedding and head kernels and the position embedding are pruned; biases, norm
scales and the class token stay dense.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.model = "vit"
  config.model_api = "nnx"
  config.parallel = "jit"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.weight_decay = 1e-4
  config.num_epochs = 10
  config.method = "drop"
  config.target_sparsity = 0.9
  config.sparsity_distribution = "uniform"
  config.prune_begin_epoch = 0.5
  config.prune_end_epoch = 7.0
  config.update_every = 50
  return config
