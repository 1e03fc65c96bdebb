"""Tests for droppruning_jax.han: Han et al.'s iterative prune-retrain as an optax transform."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from droppruning_jax.han import han_pruning
from tests.helpers import make_step, random_grads, toy_params

PRUNE_STEPS = (2, 5, 8)


def _train(tx, steps: int = 12):
  """Runs ``steps`` jitted updates; returns the (params, masks) after every step."""
  params = toy_params()
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  history = []
  for t in range(steps):
    params, state = step(params, state, random_grads(params, t))
    history.append((params, dp.get_masks(state), state))
  return history


@pytest.mark.parametrize(
  "kwargs", [{"quality": 0.7}, {"layer_rates": {"*": 0.9}}], ids=["quality", "rates"]
)
def test_never_revives_and_pruned_weights_are_exactly_zero(kwargs):
  tx = han_pruning(optax.sgd(0.05, momentum=0.9), pruning_steps=PRUNE_STEPS, **kwargs)
  previous = dp.init_masks(toy_params())
  sparsities = []
  for params, masks, state in _train(tx):
    for old, new in zip(jax.tree.leaves(previous), jax.tree.leaves(masks)):
      assert not np.any(np.asarray(new) & ~np.asarray(old)), "a pruned weight came back"
    for param, mask in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
      if np.ndim(mask):
        assert np.all(np.asarray(param)[~np.asarray(mask)] == 0.0)
    assert int(dp.get_stats(state).total_dropped_back) == 0
    sparsities.append(dp.sparsity(masks))
    previous = masks
  # Masks change exactly at the pruning steps (count t is the (t+1)-th update).
  changed = [t for t in range(1, len(sparsities)) if sparsities[t] != sparsities[t - 1]]
  assert changed == [s for s in PRUNE_STEPS if s > 0]
  assert sparsities[PRUNE_STEPS[0] - 1] == 0.0 and sparsities[PRUNE_STEPS[0]] > 0.0


def test_layer_rates_reach_exact_counts_in_equal_increments():
  rates = {"dense/kernel": 0.9, "conv/kernel": 0.6, "out/*": 0.3}
  tx = han_pruning(optax.adam(1e-2), pruning_steps=PRUNE_STEPS, layer_rates=rates)
  history = _train(tx)
  for cycle, step in enumerate(PRUNE_STEPS, start=1):
    masks = history[step][1]
    for name, sparsity in dp.layer_sparsity(masks).items():
      rate = rates.get(name, rates["out/*"])
      size = {"dense/kernel": 600, "conv/kernel": 216, "out/kernel": 100}[name]
      assert round(sparsity * size) == round(size * rate * cycle / len(PRUNE_STEPS))
  stats = dp.get_stats(history[-1][2])
  assert int(stats.last_step) == PRUNE_STEPS[-1]
  assert int(stats.total_dropped_away) == round(600 * 0.9) + round(216 * 0.6) + round(100 * 0.3)


def test_quality_threshold_is_quality_times_std_of_active_weights():
  params = toy_params()
  # lr = 0: the weights the rule sees are exactly the params.
  tx = han_pruning(optax.sgd(0.0), pruning_steps=[0, 1], quality=0.5)
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  expected = {}
  for name, leaf in (
    ("dense/kernel", params["dense"]["kernel"]),
    ("conv/kernel", params["conv"]["kernel"]),
  ):
    w = np.asarray(leaf, np.float64)
    first = np.abs(w) >= 0.5 * w.std()
    # Second cycle: the std of the survivors only, which is larger.
    second = first & (np.abs(w) >= 0.5 * w[first].std())
    expected[name] = (first, second)
  for cycle in range(2):
    params, state = step(params, state, jax.tree.map(jnp.zeros_like, params))
    masks = dp.get_masks(state)
    got = {"dense/kernel": masks["dense"]["kernel"], "conv/kernel": masks["conv"]["kernel"]}
    for name, want in expected.items():
      np.testing.assert_array_equal(np.asarray(got[name]), want[cycle])
  assert dp.layer_sparsity(masks)["conv/kernel"] > 0.3


def test_works_inside_a_chain():
  params = toy_params()
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    han_pruning(optax.sgd(0.1, momentum=0.9), pruning_steps=[0], layer_rates={"*": 0.5}),
  )
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  for t in range(3):
    params, state = step(params, state, random_grads(params, t))
  masks = dp.get_masks(state)  # found inside the chain
  assert dp.sparsity(masks) == (300 + 108 + 50) / 916  # round(n / 2) of each toy kernel
  # Momentum left over from before the pruning step does not move pruned weights.
  for param, mask in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
    if np.ndim(mask):
      assert np.all(np.asarray(param)[~np.asarray(mask)] == 0.0)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"pruning_steps": []}, "non-empty sequence"),
    ({"pruning_steps": [3, 3]}, "strictly increasing"),
    ({"pruning_steps": [-1, 2]}, "contains -1"),
    ({"pruning_steps": [1.5]}, "contains 1.5"),
    ({"pruning_steps": "12"}, "non-empty sequence"),
    ({"pruning_steps": [1], "quality": 0.5, "layer_rates": {"*": 0.5}}, "exactly one"),
    ({"pruning_steps": [1]}, "exactly one"),
    ({"pruning_steps": [1], "quality": 0.0}, "quality=0.0"),
    ({"pruning_steps": [1], "quality": float("nan")}, "quality=nan"),
    ({"pruning_steps": [1], "layer_rates": {}}, "non-empty mapping"),
    ({"pruning_steps": [1], "layer_rates": {"*": 1.0}}, "layer_rates\\['\\*'\\]=1.0"),
  ],
)
def test_invalid_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    han_pruning(optax.sgd(0.1), **kwargs)


def test_layer_rates_must_cover_the_prunable_leaves():
  tx = han_pruning(optax.sgd(0.1), pruning_steps=[1], layer_rates={"dense/kernel": 0.5})
  with pytest.raises(ValueError, match="no per-layer target given for prunable leaf"):
    tx.init(toy_params())
  tx = han_pruning(optax.sgd(0.1), pruning_steps=[1], layer_rates={"*": 0.5, "nothing/*": 0.2})
  with pytest.raises(ValueError, match="match no prunable leaf"):
    tx.init(toy_params())


def test_update_needs_params():
  tx = han_pruning(optax.sgd(0.1), pruning_steps=[1], quality=1.0)
  params = toy_params()
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))
