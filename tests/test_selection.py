"""Exact selection (dp.prune_exact): exactly round(n * target) pruned (but never all: a leaf
keeps one weight), the pruned set first, then the lowest scores, ties to the lowest flat
index -- a NumPy stable sort's order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import droppruning_jax as dp
from droppruning_jax import selection


def _reference(mask: np.ndarray, scores: np.ndarray, target: float) -> np.ndarray:
  """The new mask by NumPy, from prune_exact's documented order: already pruned weights
  first, in flat-index order (their scores do not matter); then active weights by score,
  ties by flat index (what a stable argsort gives)."""
  flat_mask, flat_scores = mask.reshape(-1), scores.reshape(-1)
  active_scores = np.where(flat_mask, flat_scores, 0.0)  # one value for every pruned weight
  order = np.lexsort((np.arange(flat_mask.size), active_scores, flat_mask))  # last key first
  keep = np.ones(flat_mask.size, bool)
  keep[order[: min(round(flat_mask.size * target), flat_mask.size - 1)]] = False
  return keep.reshape(mask.shape)


def test_prune_exact_hits_target_with_deterministic_ties():
  mask = jnp.ones(1000, bool)
  scores = jnp.zeros(1000)  # all tied: lowest flat indices go first
  new = dp.prune_exact(mask, scores, 0.25)
  np.testing.assert_array_equal(np.asarray(new), np.arange(1000) >= 250)


def test_prune_exact_keeps_pruned_weights_pruned_first():
  mask = jnp.asarray(np.arange(100) % 2 == 0)  # 50 % pruned
  scores = jnp.asarray(np.arange(100.0)[::-1])
  new = dp.prune_exact(mask, scores, 0.7)
  assert int(jnp.sum(~new)) == 70
  assert not bool(jnp.any(new & ~mask))  # nothing revived


@settings(deadline=None, max_examples=10)  # each (n, target) compiles
@given(
  n=st.sampled_from([1, 2, 3, 10, 99, 500]),
  active_fraction=st.floats(min_value=0.0, max_value=1.0),
  target=st.floats(min_value=0.0, max_value=0.999),
  seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_prune_exact_count_property(n, active_fraction, target, seed):
  rng = np.random.default_rng(seed)
  mask = jnp.asarray(rng.random(n) < active_fraction)
  new = dp.prune_exact(mask, jnp.asarray(rng.random(n), jnp.float32), target)
  # round(n * target) pruned, except that a leaf always keeps one weight.
  assert int(jnp.sum(~new)) == min(round(n * target), n - 1)


def test_prune_exact_after_an_overshoot_revives_the_highest_index_pruned_weights():
  mask = jnp.asarray(np.arange(10) >= 6)  # 6 pruned (indices 0-5), target 4
  new = dp.prune_exact(mask, jnp.ones(10), 0.4)
  np.testing.assert_array_equal(np.asarray(new), np.arange(10) >= 4)


_prune_exact_jit = jax.jit(dp.prune_exact, static_argnums=2)  # one trace per (shape, target)


@settings(deadline=None, max_examples=40)
@given(
  # Few shapes and targets: each (size, count) pair compiles once, the draws vary freely.
  shape=st.sampled_from([(7,), (6, 9), (3, 4, 5)]),
  active_fraction=st.floats(min_value=0.0, max_value=1.0),
  target=st.sampled_from([0.0, 0.3, 0.5, 0.999]),
  distinct=st.sampled_from([1, 3, 1000]),
  seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_prune_exact_equals_a_numpy_stable_sort(shape, active_fraction, target, distinct, seed):
  rng = np.random.default_rng(seed)
  mask = rng.random(shape) < active_fraction
  # Few distinct values make ties at the threshold common; negative scores are ordered too.
  # (-0.0 is left out: the selection orders it below +0.0, NumPy treats the two as a tie.)
  scores = (rng.integers(0, distinct, shape) - distinct // 2).astype(np.float32)
  scores *= rng.choice(np.float32([1.0, 0.5, 1e-3]))
  new = _prune_exact_jit(jnp.asarray(mask), jnp.asarray(scores), target)
  np.testing.assert_array_equal(np.asarray(new), _reference(mask, scores, target))


_COMMON = dict(target_sparsity=0.8, end_step=27, update_every=3)
SORT_FREE_POLICIES = {
  "drop": lambda inner: dp.drop_pruning(inner, **_COMMON),
  "drop_global": lambda inner: dp.drop_pruning(inner, sparsity_distribution="global", **_COMMON),
  "drop_weighted": lambda inner: dp.drop_pruning(
    inner, drop_away="importance", drop_back="gradient", importance="saliency", **_COMMON
  ),
  "drop_weighted_global": lambda inner: dp.drop_pruning(
    inner, drop_away="importance", drop_back="gradient", sparsity_distribution="global", **_COMMON
  ),
  "drop_stash_global": lambda inner: dp.drop_pruning(
    inner, drop_back="stash", sparsity_distribution="global", **_COMMON
  ),
  "gradual": lambda inner: dp.gradual_magnitude_pruning(inner, **_COMMON),
  "rigl": lambda inner: dp.rigl(inner, **_COMMON),
  "set": lambda inner: dp.set_pruning(inner, **_COMMON),
}


@pytest.mark.parametrize("name", sorted(SORT_FREE_POLICIES))
def test_compiled_mask_update_has_no_sort(name):
  """Every policy selects by the O(n) bisection: the lowered update (with the mask-update
  branch) holds no sort and no top-k, which XLA would expand to an O(n log n) sort."""
  import optax

  from tests import helpers

  tx = SORT_FREE_POLICIES[name](optax.sgd(0.1))
  params = helpers.toy_params(0)
  state = tx.init(params)
  text = (
    jax.jit(lambda g, s, p: tx.update(g, s, p))
    .lower(helpers.random_grads(params, 0), state, params)
    .as_text()
  )
  assert "while" in text  # the bisection loop is there: the check looks at the real update
  for op in ("stablehlo.sort", "chlo.top_k", "mhlo.topk"):
    assert op not in text, (name, op)


@pytest.mark.parametrize("seed", range(4))
def test_top_entry_is_argmax_of_the_eligible_entries(seed):
  rng = np.random.default_rng(seed)
  scores = np.round(rng.normal(size=(6, 7)), 1).astype(np.float32)  # ties
  eligible = rng.random((6, 7)) < 0.5
  top = np.asarray(selection.top_entry(jnp.asarray(eligible), jnp.asarray(scores)))
  expected = np.zeros(42, bool)
  expected[np.argmax(np.where(eligible, scores, -np.inf).reshape(-1))] = True
  np.testing.assert_array_equal(top.reshape(-1), expected & eligible.reshape(-1))
  assert not np.any(selection.top_entry(jnp.zeros((3,), bool), jnp.ones(3)))


def test_groups_share_one_selection_in_the_concatenated_order():
  keys = [jnp.asarray([[3, 1], [2, 2]], jnp.uint32), jnp.asarray([2, 0, 5], jnp.uint32)]
  eligible = [jnp.ones((2, 2), bool), jnp.asarray([True, False, True])]
  (first, second), (alone,) = selection.select_lowest_groups(
    [keys, keys[1:]], [eligible, eligible[1:]], [3, 1]
  )
  # concatenated keys 3 1 2 2 | 2 (0 ineligible) 5: the 1 and the first two 2s by position
  np.testing.assert_array_equal(first, [[False, True], [True, True]])
  np.testing.assert_array_equal(second, [False, False, False])
  np.testing.assert_array_equal(alone, [True, False, False])
