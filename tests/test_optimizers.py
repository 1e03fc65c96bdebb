"""Every pruning policy inside the optimizers users reach for.

Per-group optimizers (``optax.masked``, ``multi_transform``, ``partition``) and Muon hold
``MaskedNode``s where a group's parameters are not theirs; ``MultiSteps``,
``inject_hyperparams`` and schedule-free wrap their state in their own containers. With
each, every policy must keep pruned weights at exactly 0, reach its exact final
sparsity, and reset the optimizer state of revived weights wherever that state lives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests import helpers

# Kernels whose sizes make 80 % an integer count: 80 -> 64 pruned, 50 -> 40 pruned.
TARGET = 0.8
LABELS = {
  "hidden": {"kernel": "body", "bias": "body"},
  "head": {"kernel": "head", "bias": "head"},
}
KERNELS = (("hidden", "kernel"), ("head", "kernel"))


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {
    "hidden": {"kernel": jax.random.normal(k1, (8, 10)), "bias": jnp.zeros(10)},
    "head": {"kernel": jax.random.normal(k2, (10, 5)), "bias": jnp.zeros(5)},
  }


OPTIMIZERS = {
  "masked": lambda: optax.masked(
    optax.adam(1e-2), {"hidden": {"kernel": True, "bias": False}, "head": True}
  ),
  "multi_transform": lambda: optax.multi_transform(
    {"body": optax.adamw(1e-2, weight_decay=1e-2), "head": optax.sgd(1e-2, momentum=0.9)},
    LABELS,
  ),
  "partition": lambda: optax.partition(
    {"body": optax.adam(1e-2), "head": optax.sgd(1e-2, momentum=0.9)}, LABELS
  ),
  "muon": lambda: optax.contrib.muon(1e-2),
  "adamw": lambda: optax.adamw(1e-2, weight_decay=1e-2),
  "lion": lambda: optax.lion(1e-3),
  "multi_steps": lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
  "inject_hyperparams": lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
  "schedule_free": lambda: optax.contrib.schedule_free_adamw(1e-2),
}

_COMMON = dict(target_sparsity=TARGET, end_step=24, update_every=3)
POLICIES = {
  "drop": lambda inner: dp.drop_pruning(inner, drop_back_prob=0.2, **_COMMON),
  "drop_global_weighted": lambda inner: dp.drop_pruning(
    inner,
    drop_away="importance",
    drop_back="gradient",
    sparsity_distribution="global",
    **_COMMON,
  ),
  "gradual": lambda inner: dp.gradual_magnitude_pruning(inner, **_COMMON),
  "han": lambda inner: dp.han_pruning(inner, pruning_steps=(6, 12, 18), quality=0.5),
  "rigl": lambda inner: dp.rigl(inner, **_COMMON),
  "set": lambda inner: dp.set_pruning(inner, **_COMMON),
}
REVIVING = {"drop", "drop_global_weighted", "rigl", "set"}


def _kernel_state_leaves(inner_state, kernel_path):
  """The inner state's leaves that hold one value per weight of ``kernel_path``, found
  by the key names (independently of the library's own matching)."""
  suffix = "".join(f"['{k}']" for k in kernel_path)
  shape = {("hidden", "kernel"): (8, 10), ("head", "kernel"): (10, 5)}[kernel_path]
  flat, _ = jax.tree_util.tree_flatten_with_path(inner_state)
  return [
    (jax.tree_util.keystr(path), np.asarray(leaf))
    for path, leaf in flat
    if jax.tree_util.keystr(path).endswith(suffix) and np.shape(leaf) == shape
  ]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_policy_with_optimizer(policy, optimizer):
  tx = POLICIES[policy](OPTIMIZERS[optimizer]())
  params = _params()
  state = tx.init(params)
  step = jax.jit(helpers.make_step(tx))
  found = {path: 0 for path in KERNELS}
  revived_total = 0
  for t in range(30):
    before = dp.get_masks(state)
    params, state = step(params, state, helpers.random_grads(params, t))
    after = dp.get_masks(state)
    inner_state = dp.PruningState(*state).inner_state
    for path in KERNELS:
      kept, was_kept = _get(after, path), _get(before, path)
      # pruned weights are exactly 0 after every step, whatever the inner optimizer did
      assert np.all(_get(params, path)[~kept] == 0.0), (t, path)
      revived = kept & ~was_kept
      revived_total += int(revived.sum())
      for name, leaf in _kernel_state_leaves(inner_state, path):
        found[path] += 1
        # a revived weight starts from zero optimizer state in every state that holds it
        assert np.all(leaf[revived] == 0.0), (t, name)
        # and a pruned one holds none
        assert np.all(leaf[~kept] == 0.0), (t, name)
  masks = dp.get_masks(state)
  assert all(n > 0 for n in found.values()), found  # the state checks looked at something
  pruned = [int(np.sum(~_get(masks, path))) for path in KERNELS]
  if policy == "han":
    assert all(p > 0 for p in pruned)
  elif policy == "drop_global_weighted":
    assert sum(pruned) == round(TARGET * (80 + 50))
  else:
    assert pruned == [round(TARGET * 80), round(TARGET * 50)]
  if policy in REVIVING:
    assert revived_total > 0  # the revived-state check ran on revived weights
  # biases are never pruned, and the optimizer still trains them
  assert np.all(_get(masks, ("hidden", "bias")))
