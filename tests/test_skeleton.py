"""The masked-update skeleton every policy shares (droppruning_jax/skeleton.py): moment reset and
regrowth values, any inner optimizer and chains, extra arguments, state serialization, refusals
of bad params, a traceable init."""

import chex
import flax.jax_utils
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import droppruning_jax as dp
from droppruning_jax import skeleton
from tests.helpers import make_step, random_grads, run_masks, toy_params


def _moments(inner_state, name):
  return optax.tree_utils.tree_get(inner_state, name)


@pytest.mark.parametrize("skip", [False, True], ids=["switch_every_step", "skip_between"])
@pytest.mark.parametrize(
  "inner,moment_names",
  [
    (optax.adam(1e-2), ("mu", "nu")),
    (optax.sgd(0.05, momentum=0.9), ("trace",)),
    (optax.adagrad(0.05), ("sum_of_squares",)),  # accumulators start at 0.1, not 0
  ],
)
def test_revived_weights_have_zeroed_moments_and_start_at_zero(inner, moment_names, skip):
  tx = dp.drop_pruning(
    inner, target_sparsity=0.8, end_step=40, update_every=2, drop_away_prob=0.9, drop_back_prob=0.3
  )
  params = toy_params()
  state = tx.init(params)

  steps = {skip: jax.jit(make_step(tx, skip_mask_update=skip)) for skip in (False, True)}
  revived_seen = 0
  for t in range(21):
    old_masks = dp.get_masks(state)
    # With skip, the steps between pruning steps compile without the conditional
    # and zero no moments: revival must still start from zero moments.
    step = steps[skip and t % 2 == 1]
    params, state = step(params, state, random_grads(params, t))
    new_masks = dp.get_masks(state)
    for name in ("dense", "conv", "out"):
      revived = np.asarray(new_masks[name]["kernel"] & ~old_masks[name]["kernel"])
      if not revived.any():
        continue
      revived_seen += int(revived.sum())
      np.testing.assert_array_equal(np.asarray(params[name]["kernel"])[revived], 0.0)
      for moment in moment_names:
        values = np.asarray(_moments(state.inner_state, moment)[name]["kernel"])
        np.testing.assert_array_equal(values[revived], 0.0)
        # ...while surviving weights keep their moments.
        assert np.any(values[np.asarray(old_masks[name]["kernel"])] != 0.0)
  assert revived_seen > 0


def test_regrow_restore_brings_back_the_pruned_value():
  tx = dp.drop_pruning(
    optax.sgd(0.05),
    target_sparsity=0.8,
    end_step=40,
    update_every=2,
    drop_away_prob=0.9,
    drop_back_prob=0.3,
    regrow_init="restore",
  )
  params = toy_params()
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  last_value = np.asarray(params["dense"]["kernel"])
  checked = 0
  for t in range(21):
    old = np.asarray(dp.get_masks(state)["dense"]["kernel"])
    before = np.asarray(params["dense"]["kernel"])
    grads = random_grads(params, t)
    params, state = step(params, state, grads)
    new = np.asarray(dp.get_masks(state)["dense"]["kernel"])
    # value at the moment of pruning = w - lr * g of that step
    candidate = before - 0.05 * np.where(old, np.asarray(grads["dense"]["kernel"]), 0)
    revived = new & ~old
    if revived.any():
      np.testing.assert_allclose(
        np.asarray(params["dense"]["kernel"])[revived], last_value[revived], rtol=1e-6
      )
      assert np.all(last_value[revived] != 0)
      checked += int(revived.sum())
    newly_pruned = old & ~new
    last_value = np.where(newly_pruned, candidate, last_value)
  assert checked > 0


@pytest.mark.parametrize(
  "inner",
  [
    optax.adamw(1e-2, weight_decay=1e-2),
    optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9)),
  ],
  ids=["adamw", "chain"],
)
def test_any_inner_transformation(inner):
  tx = dp.drop_pruning(inner, target_sparsity=0.75, end_step=20, update_every=2)
  _, state, _ = run_masks(tx, 22)
  assert dp.layer_sparsity(dp.get_masks(state))["conv/kernel"] == pytest.approx(162 / 216)


def test_nested_in_chain_and_get_masks_finds_it():
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    dp.drop_pruning(
      optax.sgd(0.1), target_sparsity=0.5, end_step=4, update_every=2, drop_away_prob=1.0
    ),
  )
  _, state, _ = run_masks(tx, 5)
  # The exact step at end_step: round(n / 2) of each layer, 300 + 108 + 50 of 916.
  assert dp.sparsity(dp.get_masks(state)) == 458 / 916
  assert dp.get_count(state) == 5 and isinstance(dp.get_count(state), int)
  with pytest.raises(ValueError, match="exactly one"):
    dp.get_masks(optax.sgd(0.1).init(toy_params()))


@pytest.mark.parametrize("packed_masks", [False, True], ids=["bool_masks", "packed_masks"])
def test_state_round_trips_through_flax_serialization_and_orbax(tmp_path, packed_masks):
  tx = dp.drop_pruning(
    optax.adam(1e-2),
    target_sparsity=0.8,
    end_step=20,
    update_every=2,
    regrow_init="restore",
    packed_masks=packed_masks,
  )
  params, state, _ = run_masks(tx, 9)
  restored = flax.serialization.from_bytes(
    tx.init(toy_params()), flax.serialization.to_bytes(state)
  )
  chex.assert_trees_all_equal(restored, state)

  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
  checkpointer.wait_until_finished()
  target = {"params": params, "opt_state": tx.init(toy_params())}
  loaded = checkpointer.restore(tmp_path / "ckpt", target)
  chex.assert_trees_all_equal(loaded["opt_state"], state)
  # Training resumed from the restored state takes the identical path.
  step = jax.jit(make_step(tx))
  a = step(params, state, random_grads(params, 9))
  b = step(loaded["params"], loaded["opt_state"], random_grads(params, 9))
  chex.assert_trees_all_equal(a, b)


def test_update_without_params_is_an_error():
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=4)
  params = toy_params()
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))


def test_update_with_mismatched_params_is_an_error():
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=4)
  params = toy_params()
  state = tx.init(params)
  other = {"dense": params["dense"]}
  with pytest.raises(ValueError):
    tx.update(other, state, other)


def test_init_can_be_traced():
  # Schedules are evaluated at compile time, so init works under jit and eval_shape.
  tx = dp.drop_pruning(
    optax.adam(1e-2), target_sparsity=0.8, end_step=20, update_every=2, sparsity_distribution="erk"
  )
  params = toy_params()
  chex.assert_trees_all_equal(jax.jit(tx.init)(params), tx.init(params))
  shapes = jax.eval_shape(tx.init, params)
  assert shapes.masks["dense"]["kernel"].shape == (30, 20)


def test_extra_args_reach_the_inner_transformation():
  # reduce_on_plateau needs value=loss: before forwarding, it received value=None.
  inner = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=1, factor=0.5))
  tx = dp.drop_pruning(inner, target_sparsity=0.5, end_step=4, update_every=2)
  params = toy_params()
  state = tx.init(params)
  step = jax.jit(lambda p, s, g, v: tx.update(g, s, p, value=v))
  for t, loss in enumerate([3.0, 2.0, 2.5, 2.5, 2.5]):
    updates, state = step(params, state, random_grads(params, t), jnp.asarray(loss))
    params = optax.apply_updates(params, updates)
  plateau = skeleton.find_state(state).inner_state[1]
  assert float(plateau.best_value) == 2.0  # the smallest value it was given
  assert float(plateau.scale) < 1.0  # and it reduced the scale on the plateaus


def test_regrow_from_stash_needs_a_stash():
  policy = skeleton.MaskPolicy(
    seed=0, branch_index=lambda count: 0, updates=[], regrow_from_stash=True
  )
  with pytest.raises(ValueError, match="regrow_from_stash needs keep_stash"):
    skeleton.pruning_transformation(optax.sgd(0.1), policy, name="test")
