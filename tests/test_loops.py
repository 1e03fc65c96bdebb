"""``dp.jit_train_step``: the README's first loop, two compiled variants chosen on the host."""

import functools

import chex
import jax
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests.helpers import random_grads, toy_params

END, EVERY, BEGIN = 12, 4, 2


def _tx():
  return dp.drop_pruning(
    optax.sgd(0.05, momentum=0.9),
    target_sparsity=0.7,
    begin_step=BEGIN,
    end_step=END,
    update_every=EVERY,
    drop_away_prob=0.9,
    drop_back_prob=0.05,
    seed=3,
  )


def _train_step(tx, calls=None):
  def train_step(params, opt_state, grads, *, skip_mask_update):
    if calls is not None:
      calls.append(skip_mask_update)  # runs at trace time only
    updates, opt_state = tx.update(grads, opt_state, params, skip_mask_update=skip_mask_update)
    return optax.apply_updates(params, updates), opt_state

  return train_step


@pytest.fixture(scope="module")
def loop():
  """One helper for the tests that run pruning steps: its mask-update variant compiles once."""
  tx = _tx()
  traced = []
  train_step = _train_step(tx, traced)
  step_fn = dp.jit_train_step(
    train_step, dp.pruning_steps(BEGIN, END, EVERY), donate_argnums=(0, 1)
  )
  return tx, train_step, step_fn, traced


def test_the_helper_matches_the_simple_loop_and_skips_only_non_pruning_steps(loop):
  tx, _, step_fn, traced = loop
  # The simple loop: the conditional in every step (the helper's pruning-step variant).
  simple = step_fn.with_mask_update
  params_a = toy_params()
  params_b = toy_params()
  state_a, state_b = tx.init(params_a), tx.init(params_b)
  for t in range(END + 3):
    grads = random_grads(params_a, t)
    params_a, state_a = step_fn(t, params_a, state_a, grads)
    params_b, state_b = simple(params_b, state_b, grads)
  assert sorted(traced) == [False, True]  # each variant compiled once
  assert step_fn.pruning_steps == (2, 6, 10, 12)
  assert [step_fn.is_pruning_step(t) for t in (1, 2, 3, 12, 13)] == [
    False,
    True,
    False,
    True,
    False,
  ]
  assert int(dp.get_stats(state_a).skipped_updates) == 0
  chex.assert_trees_all_equal(dp.get_masks(state_a), dp.get_masks(state_b))
  chex.assert_trees_all_close(params_a, params_b, rtol=1e-6, atol=1e-7)
  assert dp.sparsity(dp.get_masks(state_a)) == pytest.approx(0.7, abs=2e-3)
  kernel, mask = params_a["dense"]["kernel"], dp.get_masks(state_a)["dense"]["kernel"]
  assert np.all(np.asarray(kernel)[~np.asarray(mask)] == 0.0)


def test_the_variant_between_pruning_steps_has_no_conditional():
  tx = _tx()
  step_fn = dp.jit_train_step(_train_step(tx), [BEGIN])
  params = toy_params()
  args = (params, tx.init(params), random_grads(params, 0))
  with_update = step_fn.with_mask_update.lower(*args).as_text()
  without = step_fn.without_mask_update.lower(*args).as_text()
  assert "conditional" in with_update or "case" in with_update
  assert "conditional" not in without and "case" not in without


@pytest.mark.parametrize("step", [1.0, np.float32(2), True, "3", None, jax.numpy.asarray(3)])
def test_a_step_that_is_not_a_host_integer_is_an_error(step):
  tx = _tx()
  step_fn = dp.jit_train_step(_train_step(tx), [BEGIN])
  params = toy_params()
  with pytest.raises(TypeError, match="host integer"):
    step_fn(step, params, tx.init(params), random_grads(params, 0))


def test_numpy_integers_are_steps():
  tx = _tx()
  step_fn = dp.jit_train_step(_train_step(tx), np.asarray([BEGIN]))
  params = toy_params()
  params, state = step_fn(np.int64(0), params, tx.init(params), random_grads(params, 0))
  assert int(dp.get_stats(state).skipped_updates) == 0
  assert step_fn.is_pruning_step(np.int32(BEGIN))
  with pytest.raises(ValueError, match=">= 0"):
    step_fn(-1, params, state, random_grads(params, 1))


def test_a_loop_that_restarts_its_count_is_caught_on_the_first_call(loop):
  tx, train_step, step_fn, _ = loop
  params = toy_params()
  state = tx.init(params)
  for t in range(3):  # as if restored from a checkpoint after 3 steps
    params, state = step_fn(t, params, state, random_grads(params, t))
  resumed = dp.jit_train_step(train_step, dp.pruning_steps(BEGIN, END, EVERY))
  with pytest.raises(ValueError, match="step=0, but the pruning state .* taken 3 updates"):
    resumed(0, params, state, random_grads(params, 3))
  # Started at the restored count it runs; check_step=False turns the check off.
  params, state = resumed(3, params, state, random_grads(params, 3))
  assert int(state.count) == 4
  unchecked = dp.jit_train_step(train_step, [BEGIN], check_step=False)
  params, state = unchecked(0, params, state, random_grads(params, 4))
  assert int(state.count) == 5


def test_jit_kwargs_and_other_jits_are_forwarded():
  tx = _tx()
  seen = []

  def counting_jit(fn, **kwargs):
    seen.append(kwargs)
    return jax.jit(fn, **kwargs)

  def train_step(params, opt_state, grads, scale, *, skip_mask_update):
    grads = jax.tree.map(lambda g: g * scale, grads)
    return _train_step(tx)(params, opt_state, grads, skip_mask_update=skip_mask_update)

  step_fn = dp.jit_train_step(
    train_step, [BEGIN], jit=counting_jit, static_argnums=(3,), donate_argnums=(1,)
  )
  assert seen == [{"static_argnums": (3,), "donate_argnums": (1,)}] * 2
  params = toy_params()
  state = tx.init(params)
  params, state = step_fn(0, params, state, random_grads(params, 0), 0.5)
  assert int(state.count) == 1


def test_bad_arguments_are_errors_at_construction():
  tx = _tx()
  with pytest.raises(TypeError, match="skip_mask_update"):
    dp.jit_train_step(lambda params, opt_state, grads: (params, opt_state), [BEGIN])
  with pytest.raises(TypeError, match="already jitted"):
    dp.jit_train_step(jax.jit(_train_step(tx), static_argnames="skip_mask_update"), [BEGIN])
  with pytest.raises(ValueError, match="empty"):
    dp.jit_train_step(_train_step(tx), [])
  with pytest.raises(TypeError, match="iterable"):
    dp.jit_train_step(_train_step(tx), 100)
  with pytest.raises(TypeError, match="integer step counts"):
    dp.jit_train_step(_train_step(tx), [2.0, 6])
  with pytest.raises(ValueError, match=">= 0"):
    dp.jit_train_step(_train_step(tx), [-1])

  # A step taking **kwargs is accepted (the keyword reaches it), and so is a range.
  def kwargs_step(params, opt_state, grads, **kwargs):
    return _train_step(tx)(params, opt_state, grads, **kwargs)

  step_fn = dp.jit_train_step(kwargs_step, range(BEGIN, END + 1, EVERY))
  assert step_fn.pruning_steps == (2, 6, 10)
  params = toy_params()
  params, state = step_fn(0, params, tx.init(params), random_grads(params, 0))
  assert int(state.count) == 1


def _gradual_loop(pruning_steps, steps):
  """Gradual pruning to 0.9, updates every 5 steps to 60, run by jit_train_step over
  ``steps`` (host step numbers) with the given pruning steps."""
  tx = dp.gradual_magnitude_pruning(
    optax.sgd(0.05), target_sparsity=0.9, end_step=60, update_every=5
  )
  params = toy_params(0)
  state = tx.init(params)
  step_fn = dp.jit_train_step(_train_step(tx), pruning_steps)
  for i, step in enumerate(steps):
    params, state = step_fn(step, params, state, random_grads(params, i))
  return state


def test_pruning_steps_that_miss_the_transformations_are_not_silent():
  """A schedule that misses the transformation's steps would end at 0.802 sparsity instead
  of 0.9; the first check after a skipped update raises, naming the fix."""
  with pytest.raises(ValueError, match=r"mask update\(s\) were skipped before step"):
    _gradual_loop(dp.pruning_steps(0, 40, 10), range(120))
  # missing only the final exact update (at 60) is caught too, by the periodic check
  with pytest.raises(ValueError, match=r"1 mask update\(s\) were skipped before step 100"):
    _gradual_loop(dp.pruning_steps(0, 55, 5), range(120))
  # the transformation's own schedule runs through and reaches the target exactly
  state = _gradual_loop(dp.pruning_steps(0, 60, 5), range(120))
  assert int(dp.get_stats(state).skipped_updates) == 0


def test_host_steps_that_drift_from_the_count_are_refused():
  with pytest.raises(ValueError, match="drifted from the state's count"):
    _gradual_loop(dp.pruning_steps(0, 60, 5), [0, 1, 2, 5])  # 5: a check, the count is 3


_SCHEDULES = dict(target_sparsity=0.8, end_step=24, update_every=3)
EXPOSED = {
  "drop": lambda inner: dp.drop_pruning(inner, begin_step=2, **_SCHEDULES),
  "gradual": lambda inner: dp.gradual_magnitude_pruning(inner, **_SCHEDULES),
  "han": lambda inner: dp.han_pruning(inner, pruning_steps=(5, 11, 17), quality=0.5),
  "rigl": lambda inner: dp.rigl(inner, **_SCHEDULES),
  "set": lambda inner: dp.set_pruning(inner, **_SCHEDULES),
}


@pytest.mark.parametrize("name", sorted(EXPOSED))
def test_the_transformation_is_its_own_schedule(name):
  """dp.jit_train_step(train_step, tx): the steps come from tx, and the fast loop gives
  the masks and params of the simple loop (the conditional in every step)."""
  tx = EXPOSED[name](optax.sgd(0.05, momentum=0.9))
  assert tx.pruning_steps == tuple(sorted(tx.pruning_steps)) and tx.pruning_steps
  params = toy_params(0)
  fast_state, simple_state = tx.init(params), tx.init(params)
  fast_params = simple_params = params
  step_fn = dp.jit_train_step(_train_step(tx), tx)
  simple = jax.jit(functools.partial(_train_step(tx), skip_mask_update=False))
  for t in range(30):
    grads = random_grads(params, t)
    fast_params, fast_state = step_fn(t, fast_params, fast_state, grads)
    simple_params, simple_state = simple(simple_params, simple_state, grads)
  assert int(dp.get_stats(fast_state).skipped_updates) == 0
  chex.assert_trees_all_equal(dp.get_masks(fast_state), dp.get_masks(simple_state))
  chex.assert_trees_all_close(fast_params, simple_params, rtol=1e-6, atol=1e-6)


def test_a_chain_around_the_transformation_is_refused_with_the_fix():
  tx = EXPOSED["gradual"](optax.sgd(0.1))
  with pytest.raises(TypeError, match="exposes no pruning_steps"):
    dp.jit_train_step(_train_step(tx), optax.chain(optax.clip(1.0), tx))
  assert dp.jit_train_step(_train_step(tx), tx.pruning_steps).pruning_steps == tx.pruning_steps
