"""The statistics of every mask update (droppruning_jax/stats.py): one vector with named fields,
refusals of unknown or missing fields, the counts of each drop step against their laws."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from droppruning_jax.stats import STATS_FIELDS
from tests.helpers import toy_params


def test_drop_stats_are_one_vector_with_named_fields():
  """Every field reads back exactly; the state holds the stats as a single leaf."""
  stats = dp.PruningStats.zeros()
  assert len(jax.tree.leaves(stats)) == 1 and stats.values.dtype == jnp.int32
  assert int(stats.last_step) == -1 and float(stats.shortfall) == 0.0
  fields = dict(
    last_step=12,
    dropped_away=7,
    dropped_back=3,
    shortfall=np.float32(1 / 3),
    total_dropped_away=2**31 - 1,
    total_dropped_back=5,
    skipped_updates=1,
    nonfinite=2,
  )
  stats = dp.PruningStats.create(**fields)
  for name in STATS_FIELDS:
    assert getattr(stats, name) == fields[name], name
  assert stats.shortfall.dtype == jnp.float32  # (the equality above checks it is bit-exact)
  changed = jax.jit(lambda s: s.replace(dropped_back=s.dropped_back + 4, shortfall=-0.5))(stats)
  assert int(changed.dropped_back) == 7 and float(changed.shortfall) == -0.5
  assert int(changed.dropped_away) == 7  # the other entries are untouched
  # A replicated (pmap) state reads one value per replica, and is created per replica.
  replicated = jax.tree.map(lambda x: jnp.stack([x, x]), changed)
  np.testing.assert_array_equal(replicated.shortfall, [-0.5, -0.5])
  per_replica = dp.PruningStats.create(
    **{name: np.stack([value, value]) for name, value in fields.items()}
  )
  assert per_replica.values.shape == (2, len(STATS_FIELDS))
  np.testing.assert_array_equal(per_replica.last_step, [12, 12])
  chex.assert_trees_all_equal(
    per_replica, replicated.replace(dropped_back=np.asarray([3, 3]), shortfall=np.float32(1 / 3))
  )
  # A state moved to the host (NumPy leaves, as the training loop checkpoints it) still updates.
  on_host = jax.tree.map(np.asarray, stats)
  assert int(on_host.replace(skipped_updates=2).skipped_updates) == 2
  state = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=4).init(toy_params())
  assert len(jax.tree.leaves(state.stats)) == 1


@pytest.mark.parametrize(
  "call",
  [
    lambda: dp.PruningStats.create(last_step=0),
    lambda: dp.PruningStats.zeros().replace(dropped=1),
  ],
)
def test_drop_stats_reject_unknown_or_missing_fields(call):
  with pytest.raises(ValueError, match="field"):
    call()


def test_drop_counts_at_each_step_follow_their_binomial_laws():
  """dropped_away ~ Bin(c, p) and dropped_back ~ Bin(|P|, q_eff), from the masks before the step.

  Drop away removes each of the c lowest-scoring active weights with probability p; drop
  back revives each pruned weight with q_eff = min(1, q |A| / |P|) (drop_back_scale="active");
  c = round(n (s' - s (1 - q_eff)) / p) clipped to [0, |A|] makes E[s_new] = s'. Each
  pruning step draws with its own key (fold_in(seed, step)), so the 20 steps are 20
  independent draws given their pre-step masks.
  """
  n, p, q, target, begin, end = 10_000, 0.5, 0.2, 0.9, 0, 21
  tx = dp.drop_pruning(
    optax.sgd(0.0),
    target_sparsity=target,
    begin_step=begin,
    end_step=end,
    update_every=1,
    initial_sparsity=0.5,
    drop_away_prob=p,
    drop_back_prob=q,
    drop_back_scale="active",
  )
  schedule = lambda t: target + (0.5 - target) * (1 - (t - begin) / (end - begin)) ** 3
  params = {"w": jax.random.normal(jax.random.PRNGKey(0), (100, 100))}
  state = tx.init(params)
  update = jax.jit(lambda s: tx.update(jax.tree.map(jnp.zeros_like, params), s, params)[1])
  state = update(state)  # step 0: nothing is pruned yet, so nothing can come back
  z_away, z_back = [], []
  for step in range(1, end):
    before = np.asarray(dp.get_masks(state)["w"])
    state = update(state)
    after = np.asarray(dp.get_masks(state)["w"])
    stats = dp.get_stats(state)
    assert int(stats.last_step) == step
    assert int(stats.dropped_away) == int(np.sum(before & ~after))
    assert int(stats.dropped_back) == int(np.sum(~before & after))
    active = int(before.sum())
    pruned = n - active
    s = pruned / n
    q_eff = min(1.0, q * active / pruned)
    c = min(max(round(n * (schedule(step) - s * (1 - q_eff)) / p), 0), active)
    assert 0 < c < active  # the clip does not bind: the laws below are the plain binomials
    for count, trials, prob, zs in (
      (stats.dropped_away, c, p, z_away),
      (stats.dropped_back, pruned, q_eff, z_back),
    ):
      z = (int(count) - trials * prob) / np.sqrt(trials * prob * (1 - prob))
      assert abs(z) <= 5, (step, trials, prob, int(count))
      zs.append(z)
  # The mean of 20 independent standardised draws has standard error 1/sqrt(20).
  for zs in (z_away, z_back):
    assert abs(np.mean(zs)) <= 4 / np.sqrt(len(zs)), zs
