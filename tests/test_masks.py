"""Masks mirror params; apply_masks zeroes exactly the pruned entries."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import droppruning_jax as dp
from tests.helpers import toy_params


def test_masks_mirror_params():
  params = toy_params()
  masks = dp.init_masks(params)
  chex.assert_trees_all_equal_structs(params, masks)
  assert masks["dense"]["kernel"].shape == (30, 20)
  assert masks["conv"]["kernel"].shape == (3, 3, 4, 6)
  # Non-prunable leaves get a scalar True marker, never None.
  assert masks["dense"]["bias"].shape == () and bool(masks["dense"]["bias"])
  assert masks["norm"]["scale"].shape == ()
  # jax.tree.map over params and masks just works, and fresh masks keep every weight.
  chex.assert_trees_all_equal(jax.tree.map(lambda p, m: p * m, params, masks), params)


def test_custom_prunable_predicate():
  params = toy_params()
  masks = dp.init_masks(params, prunable=lambda path, leaf: path == "out/kernel")
  assert set(dp.layer_sparsity(masks)) == {"out/kernel"}


def test_apply_masks_zeroes_exactly_masked_entries():
  params = toy_params()
  masks = dp.init_masks(params)
  rng = np.random.default_rng(0)
  masks = jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < 0.6) if m.ndim else m, masks)
  out = dp.apply_masks(params, masks)
  for p, m, o in zip(jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(out)):
    p, m, o = np.asarray(p), np.asarray(m), np.asarray(o)
    if m.ndim:
      np.testing.assert_array_equal(o[~m], 0.0)
      np.testing.assert_array_equal(o[m], p[m])
    else:
      np.testing.assert_array_equal(o, p)


def test_sparsity_and_layer_sparsity():
  params = toy_params()
  masks = dp.init_masks(params)
  kernel = np.ones((30, 20), bool)
  kernel[:15] = False  # half of dense/kernel pruned
  masks["dense"]["kernel"] = jnp.asarray(kernel)
  layers = dp.layer_sparsity(masks)
  assert layers == {"dense/kernel": 0.5, "conv/kernel": 0.0, "out/kernel": 0.0}
  total = 600 + 216 + 100
  assert dp.sparsity(masks) == pytest.approx(300 / total)
  counts = dp.count_params(params, masks)
  assert counts["pruned"] == 300 and counts["prunable"] == total
  assert counts["total"] == total + 20 + 6 and counts["nonzero"] == counts["total"] - 300


def test_apply_masks_rejects_mismatched_trees():
  params = toy_params()
  masks = dp.init_masks(params)
  with pytest.raises(ValueError, match="structure"):
    dp.apply_masks(params, {"dense": masks["dense"]})
  bad = jax.tree.map(lambda m: m, masks)
  bad["out"]["kernel"] = jnp.ones((5, 20), bool)
  with pytest.raises(ValueError, match="out/kernel"):
    dp.apply_masks(params, bad)


def test_non_float_prunable_leaf_is_rejected():
  params = {"table": jnp.ones((4, 4), jnp.int32)}
  with pytest.raises(ValueError, match="table"):
    dp.init_masks(params)
