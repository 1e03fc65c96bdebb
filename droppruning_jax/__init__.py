"""droppruning_jax: Drop Pruning (Jia et al., arXiv 1812.02035) for JAX, Flax and optax.

Typical use::

  import droppruning_jax as dp
  tx = dp.drop_pruning(optax.adam(1e-3), target_sparsity=0.95, end_step=10_000)
  opt_state = tx.init(params)
  ...  # in the jitted train step:
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)   # pruned weights are exactly 0.0

The names below are the public API (the README's table); everything else lives in
modules that may change between versions.
"""

from droppruning_jax.baselines import (
  drop_away_only,
  drop_back_only,
  gradual_magnitude_pruning,
  random_pruning,
)
from droppruning_jax.distribution import erk_sparsities
from droppruning_jax.drop import DropInfo, drop_pruning, drop_step
from droppruning_jax.dynamic_sparse import dynamic_sparse_training, rigl, set_pruning
from droppruning_jax.export import (
  SparseLeaf,
  export_sparse,
  params_nbytes,
  sparse_to_dense,
  to_bcoo,
)
from droppruning_jax.han import han_pruning
from droppruning_jax.loops import TrainStep, jit_train_step
from droppruning_jax.masks import (
  PackedMask,
  apply_masks,
  count_params,
  default_prunable,
  init_masks,
  layer_sparsity,
  pack_masks,
  sparsity,
  unpack_masks,
)
from droppruning_jax.plan import UnreachableScheduleError, expected_trajectory
from droppruning_jax.schedules import (
  cosine_anneal,
  polynomial_sparsity,
  pruning_steps,
  rewind_learning_rate,
)
from droppruning_jax.selection import prune_exact
from droppruning_jax.skeleton import (
  LeafUpdate,
  MaskPolicy,
  PruningState,
  UpdateContext,
  get_count,
  get_masks,
  get_stats,
  pruning_transformation,
)
from droppruning_jax.stats import PruningStats

__version__ = "0.2.0"

__all__ = [
  "DropInfo",
  "LeafUpdate",
  "MaskPolicy",
  "PackedMask",
  "PruningState",
  "PruningStats",
  "SparseLeaf",
  "TrainStep",
  "UnreachableScheduleError",
  "UpdateContext",
  "apply_masks",
  "cosine_anneal",
  "count_params",
  "default_prunable",
  "drop_away_only",
  "drop_back_only",
  "drop_pruning",
  "drop_step",
  "dynamic_sparse_training",
  "erk_sparsities",
  "expected_trajectory",
  "export_sparse",
  "get_count",
  "get_masks",
  "get_stats",
  "gradual_magnitude_pruning",
  "han_pruning",
  "init_masks",
  "jit_train_step",
  "layer_sparsity",
  "pack_masks",
  "params_nbytes",
  "polynomial_sparsity",
  "prune_exact",
  "pruning_steps",
  "pruning_transformation",
  "random_pruning",
  "rewind_learning_rate",
  "rigl",
  "set_pruning",
  "sparse_to_dense",
  "sparsity",
  "to_bcoo",
  "unpack_masks",
]
