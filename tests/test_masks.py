"""Masks mirror params; apply_masks zeroes exactly the pruned entries."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import droppruning_jax as dp
from droppruning_jax import masks as masks_lib
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


def _pruned_names(params):
  masks = dp.init_masks(params)
  return sorted(
    path
    for path, mask in zip(masks_lib.leaf_paths(masks), jax.tree.leaves(masks))
    if masks_lib.is_prunable_mask(mask)
  )


def test_default_prunable_takes_kernels_and_embeddings_never_biases_or_scales():
  """Linen and NNX name their parameters alike; MultiHeadAttention's biases are 2-D."""
  from flax import nnx

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(50, 8, rngs=rngs)
      self.norm = nnx.LayerNorm(8, rngs=rngs)
      self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=rngs)
      self.conv = nnx.Conv(8, 4, (3,), rngs=rngs)
      self.mlp = nnx.Linear(8, 8, rngs=rngs)
      self.proj = nnx.Einsum("bd,dh->bh", (8, 4), (4,), rngs=rngs)

  params = nnx.state(Block(nnx.Rngs(0)), nnx.Param)
  assert params["attn"]["query"]["bias"][...].ndim == 2  # (heads, head_dim)
  assert _pruned_names(params) == [
    "attn/key/kernel",
    "attn/out/kernel",
    "attn/query/kernel",
    "attn/value/kernel",
    "conv/kernel",
    "embed/embedding",
    "mlp/kernel",
    "proj/kernel",
  ]

  import flax.linen as nn

  class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      x = nn.Embed(50, 8)(tokens)
      x = nn.LayerNorm()(x)
      x = nn.MultiHeadDotProductAttention(num_heads=2)(x)
      x = nn.Conv(4, (3,))(x)
      return nn.Einsum((4, 4), "btd,dh->bth")(nn.Dense(4)(x))

  linen = LinenBlock().init(jax.random.PRNGKey(0), jnp.zeros((1, 5), jnp.int32))["params"]
  names = _pruned_names(linen)
  assert not [n for n in names if n.endswith(("bias", "scale"))]
  assert "Embed_0/embedding" in names and "MultiHeadDotProductAttention_0/query/kernel" in names
  assert {"Conv_0/kernel", "Dense_0/kernel", "Einsum_0/kernel"} <= set(names)


def test_markers_of_annotated_linen_params_are_replicated():
  import flax.linen as nn

  params = {
    "kernel": nn.Partitioned(jnp.ones((4, 8)), names=(None, "model")),
    "bias": nn.Partitioned(jnp.zeros(8), names=("model",)),
  }
  specs = nn.get_partition_spec(dp.init_masks(params))
  assert specs["kernel"] == jax.sharding.PartitionSpec(None, "model")  # the param's own
  assert specs["bias"] == jax.sharding.PartitionSpec()  # a scalar marker: replicated
