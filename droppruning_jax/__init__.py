"""droppruning_jax: Drop Pruning (Jia et al., arXiv 1812.02035) for JAX/Flax/optax.

Typical use::

  import droppruning_jax as dp
  tx = dp.drop_pruning(optax.adam(1e-3), target_sparsity=0.95, end_step=10_000)
  opt_state = tx.init(params)
  ...  # in the jitted train step:
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)   # pruned weights are exactly 0.0
"""

from droppruning_jax.baselines import drop_away_only
from droppruning_jax.baselines import drop_back_only
from droppruning_jax.baselines import gradual_magnitude_pruning
from droppruning_jax.baselines import random_pruning
from droppruning_jax.distribution import erk_sparsities
from droppruning_jax.drop import DropInfo
from droppruning_jax.drop import drop_away
from droppruning_jax.drop import drop_back
from droppruning_jax.drop import drop_step
from droppruning_jax.drop import drop_steps
from droppruning_jax.drop import prune_exact
from droppruning_jax.drop import prune_exact_many
from droppruning_jax.export import SparseLeaf
from droppruning_jax.export import export_sparse
from droppruning_jax.export import nbytes as params_nbytes
from droppruning_jax.export import to_bcoo
from droppruning_jax.export import to_dense as sparse_to_dense
from droppruning_jax.han import HanPruningState
from droppruning_jax.han import han_pruning
from droppruning_jax.importance import magnitude
from droppruning_jax.importance import random as random_importance
from droppruning_jax.masked import MaskChange
from droppruning_jax.masked import masked_pruning
from droppruning_jax.masks import PackedMask
from droppruning_jax.masks import apply_masks
from droppruning_jax.masks import count_params
from droppruning_jax.masks import default_prunable
from droppruning_jax.masks import init_masks
from droppruning_jax.masks import layer_sparsity
from droppruning_jax.masks import pack_masks
from droppruning_jax.masks import sparsity
from droppruning_jax.masks import unpack_masks
from droppruning_jax.schedules import cosine_anneal
from droppruning_jax.schedules import expected_trajectory
from droppruning_jax.schedules import polynomial_sparsity
from droppruning_jax.schedules import pruning_steps
from droppruning_jax.wrapper import DropPruningState
from droppruning_jax.wrapper import DropStats
from droppruning_jax.wrapper import drop_pruning
from droppruning_jax.wrapper import find_state
from droppruning_jax.wrapper import get_masks
from droppruning_jax.wrapper import get_stats

__version__ = "0.1.0"

__all__ = [
    "DropInfo",
    "DropPruningState",
    "DropStats",
    "HanPruningState",
    "MaskChange",
    "PackedMask",
    "SparseLeaf",
    "apply_masks",
    "cosine_anneal",
    "count_params",
    "default_prunable",
    "drop_away",
    "drop_away_only",
    "drop_back",
    "drop_back_only",
    "drop_pruning",
    "drop_step",
    "drop_steps",
    "erk_sparsities",
    "expected_trajectory",
    "export_sparse",
    "find_state",
    "get_masks",
    "get_stats",
    "gradual_magnitude_pruning",
    "han_pruning",
    "init_masks",
    "layer_sparsity",
    "magnitude",
    "masked_pruning",
    "pack_masks",
    "params_nbytes",
    "polynomial_sparsity",
    "prune_exact",
    "prune_exact_many",
    "pruning_steps",
    "random_importance",
    "random_pruning",
    "sparse_to_dense",
    "sparsity",
    "to_bcoo",
    "unpack_masks",
]
