"""The optax wrapper: exact final sparsity, exact zeros, baselines, determinism, state."""

import re

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import droppruning_jax as dp
from droppruning_jax.stats import STATS_FIELDS
from tests.helpers import make_step, random_grads, toy_params

END, EVERY = 40, 2


def _run(tx, steps, params=None, check_zeros=True, jit=True):
  params = toy_params() if params is None else params
  state = tx.init(params)
  step = jax.jit(make_step(tx)) if jit else make_step(tx)
  history = []
  for t in range(steps):
    params, state = step(params, state, random_grads(params, t))
    masks = dp.get_masks(state)
    if check_zeros:
      for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
        if m.ndim:
          assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0), f"nonzero pruned weight at step {t}"
    history.append(masks)
  return params, state, history


@pytest.mark.parametrize(
  "inner",
  [optax.sgd(0.05, momentum=0.9), optax.adam(1e-2)],
  ids=["sgd_momentum", "adam"],
)
def test_full_schedule_hits_target_exactly_and_pruned_weights_are_zero(inner):
  tx = dp.drop_pruning(inner, target_sparsity=0.9, end_step=END, update_every=EVERY)
  _, state, _ = _run(tx, END + 5)
  for name, value in dp.layer_sparsity(dp.get_masks(state)).items():
    size = {"dense/kernel": 600, "conv/kernel": 216, "out/kernel": 100}[name]
    assert value == pytest.approx(round(size * 0.9) / size, abs=1e-12), name
  stats = dp.get_stats(state)
  assert int(stats.last_step) == END
  assert int(stats.total_dropped_back) > 0  # the stochastic drop did revive weights


def test_misaligned_end_step_still_gets_the_exact_final_step():
  end = 23  # grid is 0, 3, ..., 21, then the exact step at 23
  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.8, end_step=end, update_every=3, drop_away_prob=0.8
  )
  _, state, history = _run(tx, 30)
  assert dp.pruning_steps(0, end, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 23]
  # The grid step before end_step still aims below the target; only step 23 is exact.
  assert float(dp.polynomial_sparsity(0.8, 0, end)(21)) < 0.8 - 1e-4
  for masks in history[end:]:
    assert dp.layer_sparsity(masks)["dense/kernel"] == pytest.approx(0.8)
  assert int(dp.get_stats(state).last_step) == end
  # Masks are frozen after end_step.
  chex.assert_trees_all_equal(history[end], history[-1])


def test_masks_change_only_at_pruning_steps():
  tx = dp.drop_pruning(
    optax.sgd(0.05),
    target_sparsity=0.7,
    end_step=20,
    update_every=5,
    begin_step=3,
    drop_away_prob=0.9,
  )
  _, _, history = _run(tx, 25)
  steps = dp.pruning_steps(3, 20, 5)
  assert steps == [3, 8, 13, 18, 20]
  for t in range(1, 25):
    changed = any(
      bool(jnp.any(a != b))
      for a, b in zip(jax.tree.leaves(history[t]), jax.tree.leaves(history[t - 1]))
    )
    if changed:
      assert t in steps, t


def _reference_gradual_magnitude_pruning(params, steps, *, lr, target, begin, end, every):
  """Independent numpy reference of Zhu & Gupta gradual magnitude pruning."""
  names = ["dense/kernel", "conv/kernel", "out/kernel"]
  get = lambda tree, name: np.asarray(tree[name.split("/")[0]][name.split("/")[1]])
  w = {name: get(params, name).astype(np.float32) for name in names}
  m = {name: np.ones(w[name].shape, bool) for name in names}
  pruning = set(range(begin, end + 1, every)) | {end}
  masks = []
  for t in range(steps):
    grads = random_grads(params, t)
    cand = {n: w[n] - np.float32(lr) * np.where(m[n], get(grads, n), 0) for n in names}
    if t in pruning:
      s_t = target + (0.0 - target) * (1 - (t - begin) / (end - begin)) ** 3
      for n in names:
        size = cand[n].size
        k = round(size * s_t)
        flat_m = m[n].reshape(-1)
        order = np.lexsort((np.abs(cand[n]).reshape(-1), flat_m))
        new = np.ones(size, bool)
        new[order[:k]] = False
        m[n] = new.reshape(cand[n].shape)
    w = {n: np.where(m[n], cand[n], 0).astype(np.float32) for n in names}
    masks.append({n: m[n].copy() for n in names})
  return masks


def test_p1_q0_equals_numpy_gradual_magnitude_pruning():
  params = toy_params()
  tx = dp.gradual_magnitude_pruning(
    optax.sgd(0.1), target_sparsity=0.85, end_step=30, update_every=3
  )
  _, _, history = _run(tx, 34, params=params)
  reference = _reference_gradual_magnitude_pruning(
    params, 34, lr=0.1, target=0.85, begin=0, end=30, every=3
  )
  for t, (ours, ref) in enumerate(zip(history, reference)):
    for name, ref_mask in ref.items():
      a, b = name.split("/")
      np.testing.assert_array_equal(np.asarray(ours[a][b]), ref_mask, err_msg=f"{name} step {t}")


def test_same_seed_same_masks_different_seed_different_masks():
  make = lambda seed: dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.9, end_step=END, update_every=EVERY, seed=seed
  )
  _, _, a = _run(make(3), 21, check_zeros=False)
  _, _, b = _run(make(3), 21, check_zeros=False)
  _, _, c = _run(make(4), 21, check_zeros=False)
  chex.assert_trees_all_equal(a[-1], b[-1])
  assert any(bool(jnp.any(x != y)) for x, y in zip(jax.tree.leaves(a[-1]), jax.tree.leaves(c[-1])))


class WrapperVariantsTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_no_jit_give_identical_masks(self):
    tx = dp.drop_pruning(
      optax.sgd(0.05),
      target_sparsity=0.9,
      end_step=4,
      update_every=2,
      drop_away_prob=0.9,
      drop_back_prob=0.05,
    )
    step = self.variant(make_step(tx))
    reference_step = jax.jit(make_step(tx))
    params = ref_params = toy_params()
    state = ref_state = tx.init(params)
    for t in range(5):
      grads = random_grads(params, t)
      params, state = step(params, state, grads)
      ref_params, ref_state = reference_step(ref_params, ref_state, grads)
      chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(ref_state))
    chex.assert_trees_all_close(params, ref_params, atol=1e-6)


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
  _, state, _ = _run(tx, 22)
  assert dp.layer_sparsity(dp.get_masks(state))["conv/kernel"] == pytest.approx(162 / 216)


def test_nested_in_chain_and_get_masks_finds_it():
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    dp.drop_pruning(
      optax.sgd(0.1), target_sparsity=0.5, end_step=4, update_every=2, drop_away_prob=1.0
    ),
  )
  _, state, _ = _run(tx, 5)
  # The exact step at end_step: round(n / 2) of each layer, 300 + 108 + 50 of 916.
  assert dp.sparsity(dp.get_masks(state)) == 458 / 916
  assert dp.get_count(state) == 5 and isinstance(dp.get_count(state), int)
  with pytest.raises(ValueError, match="exactly one"):
    dp.get_masks(optax.sgd(0.1).init(toy_params()))


def test_global_distribution_hits_overall_target_with_uneven_layers():
  tx = dp.drop_pruning(
    optax.sgd(0.05),
    target_sparsity=0.9,
    end_step=20,
    update_every=2,
    sparsity_distribution="global",
  )
  _, state, _ = _run(tx, 22)
  masks = dp.get_masks(state)
  assert dp.sparsity(masks) == pytest.approx(round(916 * 0.9) / 916, abs=1e-12)
  assert len(set(dp.layer_sparsity(masks).values())) > 1


def test_custom_map_and_erk_distributions():
  targets = {"dense/kernel": 0.9, "conv/*": 0.5, "out/kernel": 0.7}
  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.9, end_step=20, update_every=2, sparsity_distribution=targets
  )
  _, state, _ = _run(tx, 21)
  layers = dp.layer_sparsity(dp.get_masks(state))
  assert layers == pytest.approx({"dense/kernel": 0.9, "conv/kernel": 108 / 216, "out/kernel": 0.7})

  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.8, end_step=20, update_every=2, sparsity_distribution="erk"
  )
  _, state, _ = _run(tx, 21)
  masks = dp.get_masks(state)
  expected = dp.erk_sparsities(
    {"dense/kernel": (30, 20), "conv/kernel": (3, 3, 4, 6), "out/kernel": (20, 5)}, 0.8
  )
  for name, value in dp.layer_sparsity(masks).items():
    size = {"dense/kernel": 600, "conv/kernel": 216, "out/kernel": 100}[name]
    assert value == pytest.approx(round(size * expected[name]) / size, abs=1e-12)
  # ERK's budget is 80 % overall; per-layer rounding moves it by at most 1.5 weights in 916.
  assert abs(dp.sparsity(masks) - 0.8) <= 1.5 / 916


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
  params, state, _ = _run(tx, 9)
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


@pytest.mark.parametrize(
  "baseline,kwargs,named",
  [
    (dp.gradual_magnitude_pruning, {"drop_away_prob": 0.5}, "drop_away_prob=0.5"),
    (dp.drop_away_only, {"drop_back_prob": 0.1}, "drop_back_prob=0.1"),
    (dp.drop_back_only, {"drop_away_prob": 0.3}, "drop_away_prob=0.3"),
    (dp.random_pruning, {"importance": "magnitude"}, "importance='magnitude'"),
  ],
)
def test_a_baseline_refuses_the_arguments_it_fixes_by_name(baseline, kwargs, named):
  with pytest.raises(ValueError, match=re.escape(f"got {named}")):
    baseline(optax.sgd(0.1), target_sparsity=0.5, end_step=4, **kwargs)


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
