"""Slips a user makes, each answered by a message that names what is wrong.

* Gradients that do not match the params are reported as the gradients, not the params.
* ``dp.expected_trajectory`` takes ``drop_pruning``'s schedule arguments and defaults.
* A JAX array scalar where a Python number is expected is named as a JAX array.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp


def _tx_and_state():
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=10)
  params = {"a": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}}
  return tx, tx.init(params), params


def test_gradients_with_another_structure_are_named_as_the_gradients():
  tx, state, params = _tx_and_state()
  grads = {"b": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}}
  with pytest.raises(ValueError) as error:
    tx.update(grads, state, params)
  message = str(error.value)
  assert "the gradients (the `updates` argument) do not match the params" in message
  assert "masks do not match params" not in message
  # Both trees' leaves and shapes are shown, and which leaves only one of them has.
  assert "only in the tree to mask: 'b/bias', 'b/kernel'" in message
  assert "only in the masks: 'a/bias', 'a/kernel'" in message
  assert "tree to mask: b/bias (4,), b/kernel (4, 4)" in message
  assert "a/kernel (4, 4)" in message


def test_gradients_with_another_shape_are_named_as_the_gradients():
  tx, state, params = _tx_and_state()
  grads = {"a": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))}}
  with pytest.raises(ValueError) as error:
    tx.update(grads, state, params)
  message = str(error.value)
  assert "the gradients (the `updates` argument) do not match the params" in message
  assert "'a/kernel' has shape (3, 4) in the tree to mask but its mask has shape (4, 4)" in message
  assert "the parameter has" not in message


def test_mismatched_params_are_still_named_as_the_params():
  params = {"a": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}}
  masks = dp.init_masks({"a": {"kernel": jnp.ones((4, 4))}})
  with pytest.raises(ValueError, match="masks do not match params: the tree structures differ"):
    dp.masks.check_masks_match(params, masks)
  with pytest.raises(ValueError, match=r"'a/kernel' has shape \(4, 5\) in the params"):
    dp.masks.check_masks_match({"a": {"kernel": jnp.ones((4, 5))}}, masks)


def _old_call(target, end_step, every):
  return dp.expected_trajectory(
    target,
    target_sparsity=target,
    sparsity_schedule=dp.polynomial_sparsity(target, 0, end_step),
    drop_away_prob=lambda step: 0.5,
    drop_back_prob=lambda step: 0.1,
    drop_back_scale="active",
    steps=dp.pruning_steps(0, end_step, every),
  )


def test_expected_trajectory_takes_drop_pruning_keywords_and_defaults():
  points = dp.expected_trajectory(target_sparsity=0.9, end_step=1000, update_every=100)
  assert points == _old_call(0.9, 1000, 100)
  assert [point.step for point in points] == dp.pruning_steps(0, 1000, 100)
  assert points[-1].expected_sparsity == pytest.approx(0.9)
  # The same keywords as drop_pruning, e.g. a later start and a sparse first step.
  later = dp.expected_trajectory(
    target_sparsity=0.8,
    end_step=500,
    begin_step=100,
    update_every=50,
    initial_sparsity=0.2,
    drop_away_prob=0.7,
    drop_back_prob=0.05,
  )
  explicit = dp.expected_trajectory(
    0.8,
    target_sparsity=0.8,
    sparsity_schedule=dp.polynomial_sparsity(0.8, 100, 500, 0.2),
    drop_away_prob=0.7,
    drop_back_prob=0.05,
    drop_back_scale="active",
    steps=dp.pruning_steps(100, 500, 50),
  )
  assert later == explicit
  assert later[0].target == pytest.approx(0.2)


def test_expected_trajectory_of_a_leaf_scales_the_schedule():
  overall = dp.expected_trajectory(target_sparsity=0.9, end_step=1000)
  leaf = dp.expected_trajectory(0.45, target_sparsity=0.9, end_step=1000)
  np.testing.assert_allclose(
    [point.target for point in leaf], [point.target / 2 for point in overall], atol=1e-7
  )


def test_expected_trajectory_names_a_wrong_keyword():
  with pytest.raises(TypeError, match="drop_away_probability"):
    dp.expected_trajectory(target_sparsity=0.9, end_step=1000, drop_away_probability=0.5)
  with pytest.raises(TypeError, match="end_step"):
    dp.expected_trajectory(target_sparsity=0.9)
  with pytest.raises(ValueError, match="drop_away_prob=0.0"):
    dp.expected_trajectory(target_sparsity=0.9, end_step=1000, drop_away_prob=0.0)
  with pytest.raises(ValueError, match="steps=.* replaces begin_step, end_step"):
    dp.expected_trajectory(target_sparsity=0.9, end_step=1000, steps=[0, 1000])


@pytest.mark.parametrize(
  "kwargs,name,convert",
  [
    ({"target_sparsity": jnp.float32(0.9)}, "target_sparsity", "float"),
    ({"initial_sparsity": jnp.float32(0.1)}, "initial_sparsity", "float"),
    ({"drop_away_prob": jnp.asarray(0.5)}, "drop_away_prob", "float"),
    ({"drop_back_prob": jnp.asarray(0.1)}, "drop_back_prob", "float"),
    ({"end_step": jnp.int32(1000)}, "end_step", "int"),
    ({"update_every": jnp.int32(10)}, "update_every", "int"),
  ],
)
def test_a_jax_array_setting_is_named_as_a_jax_array(kwargs, name, convert):
  arguments = {"target_sparsity": 0.9, "end_step": 1000, **kwargs}
  with pytest.raises(ValueError) as error:
    dp.drop_pruning(optax.sgd(0.1), **arguments)
  message = str(error.value)
  assert message.startswith(f"{name}=Array(")
  assert "must be a Python or NumPy number, not a JAX array" in message
  assert f"{convert}(...)" in message
  with pytest.raises(ValueError, match=f"{name}=Array.*not a JAX array"):
    dp.expected_trajectory(**arguments)


def test_numpy_numbers_are_still_accepted_and_other_values_refused_by_name():
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=np.float32(0.5), end_step=np.int64(10))
  assert tx is not None
  with pytest.raises(ValueError, match=r"temperature=nan must be a finite real number"):
    dp.drop_pruning(
      optax.sgd(0.1),
      target_sparsity=0.5,
      end_step=10,
      drop_away="importance",
      temperature=float("nan"),
    )
  with pytest.raises(ValueError, match="temperature=Array.*not a JAX array"):
    dp.drop_pruning(
      optax.sgd(0.1),
      target_sparsity=0.5,
      end_step=10,
      drop_away="importance",
      temperature=jnp.float32(2.0),
    )
