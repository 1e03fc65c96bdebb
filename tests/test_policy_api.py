"""A new pruning method written with the public policy API, in docs/usage.md's words: a
``dp.MaskPolicy`` with static ``steps`` and one pure update ``dp.UpdateContext ->
dp.LeafUpdate``; ``dp.pruning_transformation`` does the rest (masked updates, moment reset,
``pruning_steps`` for ``dp.jit_train_step``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests import helpers

TARGET, STEP, STEPS = 0.75, 4, 9


def one_shot_magnitude(context: dp.UpdateContext) -> dp.LeafUpdate:
  """Prunes each prunable leaf to TARGET by |weight|, once."""
  masks = [dp.prune_exact(m, jnp.abs(p), TARGET) for m, p in zip(context.masks, context.params)]
  return dp.LeafUpdate(masks, jnp.zeros((), jnp.float32))


def _tx():
  policy = dp.MaskPolicy(seed=0, updates=[one_shot_magnitude], steps=[STEP])
  return dp.pruning_transformation(optax.sgd(0.1, momentum=0.9), policy, name="one_shot_magnitude")


def test_a_policy_from_the_public_api_prunes_at_its_steps_and_the_skeleton_does_the_rest():
  tx = _tx()
  assert tx.pruning_steps == (STEP,)
  params = helpers.toy_params()
  state = tx.init(params)

  def train_step(params, state, grads, *, skip_mask_update=False):
    updates, state = tx.update(grads, state, params, skip_mask_update=skip_mask_update)
    return optax.apply_updates(params, updates), state

  step_fn = dp.jit_train_step(train_step, tx)
  for t in range(STEPS):
    params, state = step_fn(t, params, state, helpers.random_grads(params, t))
    masks = dp.get_masks(state)
    expected = TARGET if t >= STEP else 0.0
    assert dp.sparsity(masks) == pytest.approx(expected, abs=1e-3), t
  for path, leaf_sparsity in dp.layer_sparsity(masks).items():
    assert leaf_sparsity == pytest.approx(TARGET, abs=0.01), path
  kept = jax.tree.leaves(masks)
  for p, m in zip(jax.tree.leaves(params), kept):
    if np.ndim(m):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)  # pruned weights exactly 0
  momentum = jax.tree.leaves(state.inner_state[0].trace)
  for mu, m in zip(momentum, kept):
    if np.ndim(m):
      assert np.all(np.asarray(mu)[~np.asarray(m)] == 0.0)  # their momentum zeroed


def test_a_policy_without_steps_or_branch_index_is_refused_by_name():
  policy = dp.MaskPolicy(seed=0, updates=[one_shot_magnitude])
  with pytest.raises(ValueError, match="mine: a MaskPolicy without branch_index needs its steps"):
    dp.pruning_transformation(optax.sgd(0.1), policy, name="mine")
