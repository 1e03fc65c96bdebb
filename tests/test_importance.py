"""Importance: which weights drop away first. Magnitude (|w|, not w), random scores, or a
callable, each seen through the exact pruning step of the transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests.helpers import make_step


def _one_exact_step(tx, params):
  """The mask after the single pruning step at count 0 (end_step=0: the exact step).

  sgd(0) and zero gradients keep the params as they are, so the scores are those of ``params``.
  """
  state = tx.init(params)
  _, state = jax.jit(make_step(tx))(params, state, jax.tree.map(jnp.zeros_like, params))
  return np.asarray(dp.get_masks(state)["w"])


@pytest.mark.parametrize(
  "importance,score",
  [
    ("magnitude", np.abs),
    (lambda param, key: -jnp.abs(param), lambda w: -np.abs(w)),  # prunes the largest first
  ],
  ids=["magnitude", "callable"],
)
def test_the_lowest_scores_are_pruned(importance, score):
  # Signed weights: pruning by w instead of |w| would remove the most negative ones.
  w = np.random.default_rng(0).normal(size=(12, 10)).astype(np.float32)
  tx = dp.drop_pruning(optax.sgd(0.0), target_sparsity=0.3, end_step=0, importance=importance)
  mask = _one_exact_step(tx, {"w": jnp.asarray(w)})
  expected = np.ones(w.size, bool)
  expected[np.argsort(score(w).reshape(-1), kind="stable")[:36]] = False  # 0.3 * 120 = 36
  np.testing.assert_array_equal(mask, expected.reshape(w.shape))


def test_random_importance_is_random_pruning():
  tx = dp.random_pruning(optax.sgd(0.0), target_sparsity=0.5, end_step=0)
  params = {"w": jnp.tile(jnp.arange(1.0, 101.0), (10, 1))}  # magnitude grows with column
  mask = _one_exact_step(tx, params)
  assert (~mask).sum() == 500
  # Magnitude pruning would remove exactly columns 0-49. A uniformly random half keeps a
  # hypergeometric number of the 500 weights there: mean 250, sd sqrt(500 * 1/4 * 500/999) = 7.9.
  assert abs(int(mask[:, :50].sum()) - 250) <= 5 * 7.91
