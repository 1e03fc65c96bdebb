"""``skip_mask_update``: steps the loop knows update no mask compile without the conditional."""

import chex
import jax
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests.helpers import make_step, random_grads, toy_params


def _transforms():
  return {
    "drop": (
      dp.drop_pruning(
        optax.sgd(0.05, momentum=0.9),
        target_sparsity=0.6,
        end_step=21,
        begin_step=3,
        update_every=2,
        regrow_init="restore",
      ),
      set(dp.pruning_steps(3, 21, 2)),
    ),
    "han": (dp.han_pruning(optax.sgd(0.05), pruning_steps=[4, 9, 15], quality=0.5), {4, 9, 15}),
    "chained": (
      optax.chain(
        optax.clip_by_global_norm(1.0),
        dp.drop_pruning(optax.adam(1e-2), target_sparsity=0.5, end_step=12, update_every=1),
      ),
      set(dp.pruning_steps(0, 12, 1)),
    ),
  }


@pytest.mark.parametrize("name", ["drop", "han", "chained"])
def test_skipping_non_pruning_steps_changes_nothing(name):
  tx, prune_at = _transforms()[name]
  always = jax.jit(make_step(tx, skip_mask_update=False))
  skipping = jax.jit(make_step(tx, skip_mask_update=True))
  params_a = params_b = toy_params()
  state_a = state_b = tx.init(params_a)
  for t in range(25):
    grads = random_grads(params_a, t)
    params_a, state_a = always(params_a, state_a, grads)
    params_b, state_b = (always if t in prune_at else skipping)(params_b, state_b, grads)
  # Same masks and stats exactly; floats up to rounding (the two programs fuse
  # Adam's arithmetic differently).
  chex.assert_trees_all_equal(dp.get_masks(state_a), dp.get_masks(state_b))
  chex.assert_trees_all_equal(dp.get_stats(state_a), dp.get_stats(state_b))
  chex.assert_trees_all_close(params_a, params_b, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(state_a, state_b, rtol=1e-6, atol=1e-7)
  assert int(dp.get_stats(state_b).skipped_updates) == 0
  assert dp.sparsity(dp.get_masks(state_b)) > 0.3


def test_skipping_a_pruning_step_is_counted_and_keeps_the_masks():
  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.8, end_step=8, update_every=4, drop_away_prob=1.0
  )
  params = toy_params()
  state = tx.init(params)
  skipping = jax.jit(make_step(tx, skip_mask_update=True))
  for t in range(3):  # steps 0 and 4 would prune; step 0 is skipped here
    params, state = skipping(params, state, random_grads(params, t))
  assert dp.sparsity(dp.get_masks(state)) == 0.0
  assert int(dp.get_stats(state).skipped_updates) == 1


def test_the_skipping_step_has_no_conditional():
  tx, _ = _transforms()["drop"]
  params = toy_params()
  state = tx.init(params)
  grads = random_grads(params, 0)

  def hlo(skip):
    return jax.jit(make_step(tx, skip_mask_update=skip)).lower(params, state, grads).as_text()

  assert "conditional" in hlo(False) or "case" in hlo(False)
  assert "conditional" not in hlo(True) and "case" not in hlo(True)


@pytest.mark.parametrize("value", [1, np.bool_(True), "yes", None])
def test_skip_mask_update_must_be_a_python_bool(value):
  tx, _ = _transforms()["drop"]
  params = toy_params()
  with pytest.raises(ValueError, match="skip_mask_update"):
    tx.update(random_grads(params, 0), tx.init(params), params, skip_mask_update=value)


@pytest.mark.parametrize("name", ["drop", "han", "chained"])
def test_state_can_be_donated(name):
  # Training loops donate the optimizer state; a state whose leaves share one buffer
  # fails at the first call ("donate the same buffer twice").
  tx, prune_at = _transforms()[name]
  params = toy_params()
  state = tx.init(params)
  ids = [id(leaf) for leaf in jax.tree.leaves(state)]
  assert len(ids) == len(set(ids))
  steps = {
    skip: jax.jit(make_step(tx, skip_mask_update=skip), donate_argnums=(0, 1))
    for skip in (False, True)
  }
  for t in range(25):
    params, state = steps[t not in prune_at](params, state, random_grads(params, t))
  assert dp.sparsity(dp.get_masks(state)) > 0.3
