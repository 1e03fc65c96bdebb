"""The optax wrapper: exact final sparsity, exact zeros, baselines, determinism, distributions
(the skeleton it shares: test_skeleton.py; its statistics: test_stats.py)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from tests.helpers import make_step, random_grads, run_masks, toy_params

END, EVERY = 40, 2


@pytest.mark.parametrize(
  "inner",
  [optax.sgd(0.05, momentum=0.9), optax.adam(1e-2)],
  ids=["sgd_momentum", "adam"],
)
def test_full_schedule_hits_target_exactly_and_pruned_weights_are_zero(inner):
  tx = dp.drop_pruning(inner, target_sparsity=0.9, end_step=END, update_every=EVERY)
  _, state, _ = run_masks(tx, END + 5)
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
  _, state, history = run_masks(tx, 30)
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
  _, _, history = run_masks(tx, 25)
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
  _, _, history = run_masks(tx, 34, params=params)
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
  _, _, a = run_masks(make(3), 21, check_zeros=False)
  _, _, b = run_masks(make(3), 21, check_zeros=False)
  _, _, c = run_masks(make(4), 21, check_zeros=False)
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


def test_global_distribution_hits_overall_target_with_uneven_layers():
  tx = dp.drop_pruning(
    optax.sgd(0.05),
    target_sparsity=0.9,
    end_step=20,
    update_every=2,
    sparsity_distribution="global",
  )
  _, state, _ = run_masks(tx, 22)
  masks = dp.get_masks(state)
  assert dp.sparsity(masks) == pytest.approx(round(916 * 0.9) / 916, abs=1e-12)
  assert len(set(dp.layer_sparsity(masks).values())) > 1


def test_custom_map_and_erk_distributions():
  targets = {"dense/kernel": 0.9, "conv/*": 0.5, "out/kernel": 0.7}
  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.9, end_step=20, update_every=2, sparsity_distribution=targets
  )
  _, state, _ = run_masks(tx, 21)
  layers = dp.layer_sparsity(dp.get_masks(state))
  assert layers == pytest.approx({"dense/kernel": 0.9, "conv/kernel": 108 / 216, "out/kernel": 0.7})

  tx = dp.drop_pruning(
    optax.sgd(0.05), target_sparsity=0.8, end_step=20, update_every=2, sparsity_distribution="erk"
  )
  _, state, _ = run_masks(tx, 21)
  masks = dp.get_masks(state)
  expected = dp.erk_sparsities(
    {"dense/kernel": (30, 20), "conv/kernel": (3, 3, 4, 6), "out/kernel": (20, 5)}, 0.8
  )
  for name, value in dp.layer_sparsity(masks).items():
    size = {"dense/kernel": 600, "conv/kernel": 216, "out/kernel": 100}[name]
    assert value == pytest.approx(round(size * expected[name]) / size, abs=1e-12)
  # ERK's budget is 80 % overall; per-layer rounding moves it by at most 1.5 weights in 916.
  assert abs(dp.sparsity(masks) - 0.8) <= 1.5 / 916


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
