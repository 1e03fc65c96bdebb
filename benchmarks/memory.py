"""Bytes of optimizer state that the Drop Pruning wrapper adds, per model.

Measured on the real state trees (``jax.eval_shape``, no allocation): wrapper state
minus the inner optimizer's state, against params, with bool masks and with
``packed_masks=True`` (masks stored as bits).

  python -m benchmarks.memory
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
import optax

import droppruning_jax as dp
from benchmarks import common


def tree_bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet300,lenet5,vgg16")
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  print(
    "| model | params (bytes) | inner sgd+momentum state | added by wrapper (bool masks) "
    "| of which masks | added with packed_masks=True | of which masks "
    "| added with regrow_init='restore' |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    shape, make = common.MODEL_INPUTS[name]
    model = make()
    variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, *shape)), train=False)
    )
    params = variables["params"]
    inner = optax.sgd(0.1, momentum=0.9)
    inner_bytes = tree_bytes(jax.eval_shape(inner.init, params))
    wrapped = jax.eval_shape(
      dp.drop_pruning(inner, target_sparsity=0.9, end_step=10_000).init, params
    )
    restore = jax.eval_shape(
      dp.drop_pruning(inner, target_sparsity=0.9, end_step=10_000, regrow_init="restore").init,
      params,
    )
    packed = jax.eval_shape(
      dp.drop_pruning(inner, target_sparsity=0.9, end_step=10_000, packed_masks=True).init, params
    )
    mask_bytes = tree_bytes(wrapped.masks)
    packed_mask_bytes = tree_bytes(packed.masks)
    prunable = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(wrapped.masks) if m.shape)
    added, added_packed = tree_bytes(wrapped) - inner_bytes, tree_bytes(packed) - inner_bytes
    print(
      f"| {name} | {tree_bytes(params):,} | {inner_bytes:,} | {added:,} "
      f"({added / tree_bytes(params):.1%} of params) | {mask_bytes:,} "
      f"| {added_packed:,} ({added_packed / tree_bytes(params):.2%} of params) "
      f"| {packed_mask_bytes:,} | {tree_bytes(restore) - inner_bytes:,} |"
    )
    assert mask_bytes >= prunable and packed_mask_bytes >= prunable / 8
    rows.append(
      {
        "model": name,
        "params_bytes": tree_bytes(params),
        "inner_state_bytes": inner_bytes,
        "added_bytes": added,
        "mask_bytes": mask_bytes,
        "added_packed_bytes": added_packed,
        "packed_mask_bytes": packed_mask_bytes,
        "added_restore_bytes": tree_bytes(restore) - inner_bytes,
      }
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump({**common.provenance(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
