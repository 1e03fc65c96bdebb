"""Edges of the library: non-finite weights, tiny and empty leaves (extra arguments and step
limits: test_skeleton.py, test_plan.py)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests.helpers import make_step, random_grads, toy_params


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(importance="random"),
    dict(sparsity_distribution="global"),
    dict(sparsity_distribution="global", importance="random"),
    {},
  ],
)
def test_non_finite_weights_are_never_pruned_and_are_counted(kwargs):
  tx = dp.drop_pruning(optax.sgd(0.01), target_sparsity=0.9, end_step=20, update_every=2, **kwargs)
  params = toy_params()
  bad = np.zeros((30, 20), bool)
  bad[
    np.random.default_rng(0).integers(0, 30, 12), np.random.default_rng(1).integers(0, 20, 12)
  ] = True
  kernel = np.asarray(params["dense"]["kernel"]).copy()
  kernel[bad] = np.nan
  kernel[0, 0], bad[0, 0] = np.inf, True
  params["dense"]["kernel"] = jnp.asarray(kernel)
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  zero_grads = jax.tree.map(jnp.zeros_like, params)  # keeps the non-finite entries as they are
  for _ in range(21):
    params, state = step(params, state, zero_grads)
  mask = np.asarray(dp.get_masks(state)["dense"]["kernel"])
  assert mask[bad].all()  # every non-finite weight is still active
  new_kernel = np.asarray(params["dense"]["kernel"])
  assert np.all(new_kernel[~mask] == 0.0)  # no NaN hides in a pruned entry
  assert int(dp.get_stats(state).nonfinite) == int(bad.sum())
  # The exact target still holds for the layers without non-finite weights.
  assert dp.layer_sparsity(dp.get_masks(state))["conv/kernel"] > 0.5


def test_small_leaf_keeps_one_weight_and_init_warns():
  params = {"big": {"kernel": jnp.ones((40, 50))}, "tiny": {"kernel": jnp.ones((4, 5))}}
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.99, end_step=0)
  with pytest.warns(
    UserWarning, match=r"'tiny/kernel' \(20 weights at 0\.99 rounds to all: 1 kept\)"
  ):
    state = tx.init(params)
  params, state = make_step(tx)(params, state, random_grads(params, 0))
  masks = dp.get_masks(state)
  assert int(np.sum(masks["tiny"]["kernel"])) == 1
  assert int(np.sum(~np.asarray(masks["big"]["kernel"]))) == round(2000 * 0.99)


def test_global_pool_never_empties_a_leaf():
  # Scores are normalised by each leaf's mean: the big leaf's tiny half scores ~2e-6, the
  # small leaf 1.0, the big leaf's large half 2.0. Pruning 2010 of 2020 weights by score
  # alone would take the tiny half, all 20 of the small leaf, then 990 of the large half.
  big = jnp.where(jnp.arange(2000) % 2 == 0, 1.0, 1e-6).reshape(40, 50)
  params = {"big": {"kernel": big}, "small": {"kernel": jnp.full((4, 5), 1e-3)}}
  tx = dp.drop_pruning(
    optax.sgd(0.0),
    target_sparsity=0.995,
    end_step=4,
    update_every=2,
    drop_away_prob=1.0,
    drop_back_prob=0.0,
    sparsity_distribution="global",
  )
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  for _ in range(5):
    params, state = step(params, state, jax.tree.map(jnp.zeros_like, params))
  masks = dp.get_masks(state)
  assert int(np.sum(masks["small"]["kernel"])) == 1
  assert int(np.sum(masks["big"]["kernel"])) >= 1


def test_rounding_to_nothing_warns():
  params = {"a": {"kernel": jnp.ones((2, 3))}}
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.05, end_step=0)
  with pytest.warns(UserWarning, match=r"'a/kernel' \(6 weights at 0.05 rounds to none pruned\)"):
    state = tx.init(params)
  assert np.asarray(state.masks["a"]["kernel"]).all()  # and nothing is pruned at init


def test_a_usual_model_does_not_warn():
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.9, end_step=10)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tx.init(toy_params())
  assert not [str(w.message) for w in caught]


def test_empty_leaf_is_not_pruned_and_steps_run():
  params = {"empty": {"kernel": jnp.zeros((0, 5))}, "dense": {"kernel": jnp.ones((6, 5))}}
  for tx in (
    dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=2, update_every=1),
    dp.drop_pruning(
      optax.sgd(0.1),
      target_sparsity=0.5,
      end_step=2,
      update_every=1,
      sparsity_distribution="global",
    ),
  ):
    state = tx.init(params)
    assert np.ndim(state.masks["empty"]["kernel"]) == 0  # a marker, not a mask
    step = jax.jit(make_step(tx))
    p = params
    for t in range(3):
      p, state = step(p, state, random_grads(p, t))
    assert dp.sparsity(dp.get_masks(state)) == pytest.approx(0.5)
