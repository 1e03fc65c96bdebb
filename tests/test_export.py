"""Compact sparse export: exact round trip, counts, and sparse inference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import droppruning_jax as dp
from droppruning_jax import export
from experiments import models


def _random_masked(model, shape, density, seed=0):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), variables["params"]
  )
  masks = dp.init_masks(params)
  masks = jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < density) if m.ndim else m, masks)
  return dp.apply_masks(params, masks), masks


@pytest.mark.parametrize(
  "model,shape",
  [
    (models.LeNet300100(), (1, 28, 28, 1)),
    (models.LeNet5(), (1, 28, 28, 1)),
    (models.VGG16(width_multiplier=1 / 16), (1, 32, 32, 3)),
  ],
  ids=["lenet300", "lenet5", "vgg16_tiny"],
)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_exact_round_trip_and_counts(model, shape, density):
  params, masks = _random_masked(model, shape, density)
  exported = export.export_sparse(params, masks)
  chex.assert_trees_all_equal(export.sparse_to_dense(exported), params)
  counts = dp.count_params(params, masks)
  assert export.nonzero_count(exported) == counts["nonzero"]
  pruned_fraction = (
    1
    - (export.nonzero_count(exported) - (counts["total"] - counts["prunable"])) / counts["prunable"]
  )
  assert pruned_fraction == pytest.approx(dp.sparsity(masks))
  if density <= 0.5:
    assert export.params_nbytes(exported) < export.params_nbytes(params)


def test_sparse_logits_equal_dense_masked_logits():
  model = models.LeNet300100()
  params, masks = _random_masked(model, (1, 28, 28, 1), 0.05)
  exported = export.export_sparse(params, masks)
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 784))

  def sparse_logits(x):
    h = x
    for name in ("dense1", "dense2", "dense3"):
      h = h @ export.to_bcoo(exported[name]["kernel"]) + exported[name]["bias"]
      if name != "dense3":
        h = jax.nn.relu(h)
    return h

  dense = model.apply({"params": params}, x.reshape(16, 28, 28, 1))
  np.testing.assert_allclose(np.asarray(sparse_logits(x)), np.asarray(dense), atol=1e-4)


def test_export_rejects_mismatched_masks():
  params, masks = _random_masked(models.LeNet300100(), (1, 28, 28, 1), 0.5)
  with pytest.raises(ValueError):
    export.export_sparse(params, {"dense1": masks["dense1"]})
