"""The validated plan of drop_pruning (droppruning_jax/plan.py): the expected trajectory against
values derived by hand, the reachability checks and their error type, the drop-back formula and
its inverse, argument and step-count refusals."""

import time

import jax
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from droppruning_jax import plan as plan_lib
from tests.helpers import toy_params


def _cubic(step, target, begin, end, initial):
  """Zhu & Gupta (2017), eq. 1: s_f + (s_i - s_f) (1 - (t - t0) / (n dt)) ** 3, held outside."""
  frac = min(max((step - begin) / (end - begin), 0.0), 1.0)
  return target + (initial - target) * (1.0 - frac) ** 3


def _schedule(values):
  return lambda step: values[int(step)]


def test_expected_trajectory_hand_example_where_the_clip_binds():
  # Steps 0, 10, 20 with targets 0.5, 0.8, 0.9; p = 0.5, q = 0.2 per pruned weight.
  # Step 0:  s = 0,    c/n = min((0.5 - 0) / 0.5, 1) = 1,          E = 0.5 * 1 = 0.5.
  # Step 10: s = 0.5,  c/n = (0.8 - 0.5 * 0.8) / 0.5 = 0.8 > |A|/n = 0.5, so 0.5;
  #          E = 0.5 * 0.8 + 0.5 * 0.5 = 0.65, a shortfall of 0.15.
  # Step 20 (last, exact: p = 1, q = 0): c/n = 0.9 - 0.65 = 0.25,   E = 0.9.
  points = dp.expected_trajectory(
    0.9,
    target_sparsity=0.9,
    sparsity_schedule=_schedule({0: 0.5, 10: 0.8, 20: 0.9}),
    drop_away_prob=lambda s: 0.5,
    drop_back_prob=lambda s: 0.2,
    drop_back_scale="pruned",
    steps=[0, 10, 20],
  )
  assert [point.step for point in points] == [0, 10, 20]
  got = [
    (
      pt.sparsity_before,
      pt.drop_away_prob,
      pt.drop_back_prob,
      pt.pool_fraction,
      pt.expected_sparsity,
      pt.shortfall,
    )
    for pt in points
  ]
  want = [
    (0.0, 0.5, 0.2, 1.0, 0.5, 0.0),
    (0.5, 0.5, 0.2, 0.5, 0.65, 0.15),
    (0.65, 1.0, 0.0, 0.25, 0.9, 0.0),
  ]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-12)


def test_expected_trajectory_active_scale_and_leaf_scaling():
  # drop_back_scale="active": the per-weight probability is q |A| / |P| (0 while |P| = 0).
  # A leaf whose final target is half the overall one follows half the schedule.
  # Step 0: target 0.5 * 0.5 = 0.25, s = 0, q_eff = 0: c/n = 0.25 / 0.5 = 0.5, E = 0.25.
  # Step 10: target 0.35, q_eff = 0.1 * 0.75 / 0.25 = 0.3: c/n = (0.35 - 0.25 * 0.7) / 0.5 = 0.35.
  points = dp.expected_trajectory(
    0.45,
    target_sparsity=0.9,
    sparsity_schedule=_schedule({0: 0.5, 10: 0.7, 20: 0.9}),
    drop_away_prob=lambda s: 0.5,
    drop_back_prob=lambda s: 0.1,
    drop_back_scale="active",
    steps=[0, 10, 20],
  )
  np.testing.assert_allclose([pt.target for pt in points], [0.25, 0.35, 0.45], atol=1e-12)
  np.testing.assert_allclose([pt.drop_back_prob for pt in points], [0.0, 0.3, 0.0], atol=1e-12)
  np.testing.assert_allclose([pt.pool_fraction for pt in points], [0.5, 0.35, 0.1], atol=1e-12)
  np.testing.assert_allclose(
    [pt.expected_sparsity for pt in points], [0.25, 0.35, 0.45], atol=1e-12
  )


@pytest.mark.parametrize("target,every", [(0.5, 1), (0.93, 7), (0.99, 40)])
def test_expected_trajectory_of_gradual_pruning_is_the_schedule(target, every):
  # With p = 1 and q = 0 the pool is exactly the missing weights: E[s] is the schedule.
  steps = dp.pruning_steps(0, 200, every)
  schedule = dp.polynomial_sparsity(target, 0, 200)
  points = dp.expected_trajectory(
    target,
    target_sparsity=target,
    sparsity_schedule=schedule,
    drop_away_prob=lambda s: 1.0,
    drop_back_prob=lambda s: 0.0,
    drop_back_scale="active",
    steps=steps,
  )
  expected = [_cubic(step, target, 0, 200, 0.0) for step in steps[:-1]] + [target]
  np.testing.assert_allclose([pt.expected_sparsity for pt in points], expected, atol=1e-6)
  assert max(pt.shortfall for pt in points) <= 1e-6


def test_an_unreachable_schedule_raises_its_own_error_type():
  """UnreachableScheduleError (a ValueError) lets callers tell it from other refusals."""
  import optax

  with pytest.raises(dp.UnreachableScheduleError, match="cannot follow the sparsity schedule"):
    dp.drop_pruning(
      optax.sgd(0.1), target_sparsity=0.99, end_step=20, update_every=10, drop_back_prob=0.5
    )
  with pytest.raises(ValueError) as other:
    dp.drop_pruning(optax.sgd(0.1), target_sparsity=1.5, end_step=20)
  assert not isinstance(other.value, dp.UnreachableScheduleError)


def test_drop_back_rate_inverts_the_effective_probability():
  for scale in plan_lib.DROP_BACK_SCALES:
    prob = plan_lib.effective_drop_back_prob(0.05, 0.3, 0.7, scale)
    np.testing.assert_allclose(plan_lib.drop_back_rate(prob, 0.3, 0.7, scale), 0.05)
  # the expected trajectory (NumPy) and the traced update (jax) use one formula
  np.testing.assert_allclose(
    plan_lib.effective_drop_back_prob(
      np.asarray([0.1, 0.2]), np.asarray([0.5, 0.0]), np.asarray([0.5, 0.0]), "active"
    ),
    [0.1, 0.0],
  )
  traced = jax.jit(lambda q: plan_lib.effective_drop_back_prob(q, 30, 10, "active"))(0.5)
  np.testing.assert_allclose(traced, 1.0)  # min(1, 0.5 * 30 / 10)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(end_step=2**31), r"end_step=2147483648 must be <= 2147483646"),
    (dict(end_step=10, begin_step=-1), r"begin_step=-1 must be >= 0"),
  ],
)
def test_step_counts_beyond_int32_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, **kwargs)
  with pytest.raises(ValueError, match=r"pruning_steps=\[2147483647\] contains 2147483647"):
    dp.han_pruning(optax.sgd(0.1), pruning_steps=[2**31 - 1], quality=0.5)


def test_a_long_schedule_is_checked_without_a_python_loop_per_step():
  # 10^7 pruning steps: the reachability check is vectorised (it took 48 s as a loop).
  start = time.perf_counter()
  tx = dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.9, end_step=10**9)
  tx.init(toy_params())
  elapsed = time.perf_counter() - start
  # Generous bound (a loop took minutes): a regression to per-step Python fails it.
  assert elapsed < 60, elapsed
  with pytest.raises(ValueError, match="cannot follow"):
    dp.drop_pruning(
      optax.sgd(0.1),
      target_sparsity=0.98,
      end_step=10**9,
      drop_back_prob=0.1,
      drop_back_scale="pruned",
    )


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(drop_away="weighted"), "drop_away='weighted'"),
    (dict(drop_back="importance"), "drop_back='importance'"),
    (dict(drop_back="magnitude"), "drop_back='magnitude'"),
    (dict(drop_away="importance", temperature=0.0), "temperature=0.0"),
    (dict(drop_back="gradient", temperature=-1.0), "temperature=-1.0"),
    (dict(drop_back="gradient", temperature=float("nan")), "temperature=nan"),
    (dict(drop_away="importance", temperature="hot"), "temperature='hot'"),
    (dict(temperature=2.0), "temperature=2.0 has no effect"),
    (dict(importance="salience"), "importance='salience'"),
  ],
)
def test_invalid_drop_rules_are_refused_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.9, end_step=1000, update_every=50, **kwargs)


def test_unreachable_schedules_are_refused_with_the_weighted_rules_as_without():
  # The weighted rules change which weights drop, not how many: the same check applies.
  common = dict(target_sparsity=0.8, begin_step=2, end_step=14, update_every=3)
  for kwargs in (
    dict(),
    dict(drop_away="importance", drop_back="gradient"),
    dict(drop_back="stash"),
  ):
    with pytest.raises(ValueError, match="cannot follow the sparsity schedule"):
      dp.drop_pruning(optax.sgd(0.1), **common, **kwargs)
