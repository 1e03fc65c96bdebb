"""Schedules: the sparsity schedule, the annealing of p and q, the pruning steps and the
expected trajectory, each against values derived by hand or from the formula it documents."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import droppruning_jax as dp


def _cubic(step, target, begin, end, initial):
  """Zhu & Gupta (2017), eq. 1: s_f + (s_i - s_f) (1 - (t - t0) / (n dt)) ** 3, held outside."""
  frac = min(max((step - begin) / (end - begin), 0.0), 1.0)
  return target + (initial - target) * (1.0 - frac) ** 3


@pytest.mark.parametrize("step", [0, 100, 101, 350, 600, 1099, 1100, 5000])
def test_polynomial_sparsity_is_the_cubic_schedule(step):
  schedule = dp.polynomial_sparsity(0.9, 100, 1100, initial_sparsity=0.2)
  assert float(schedule(step)) == pytest.approx(_cubic(step, 0.9, 100, 1100, 0.2), abs=1e-6)


def test_polynomial_sparsity_hand_values():
  schedule = dp.polynomial_sparsity(0.8, 0, 100)
  # Halfway the remaining distance is (1/2)^3 = 1/8 of the total: 0.8 * (1 - 1/8) = 0.7.
  assert float(schedule(50)) == pytest.approx(0.7, abs=1e-6)
  assert float(schedule(0)) == 0.0
  assert float(schedule(100)) == pytest.approx(0.8, abs=1e-7)
  # A window of one step is the exact final step: the target everywhere.
  single = dp.polynomial_sparsity(0.6, 40, 40)
  assert [float(single(t)) for t in (0, 40, 99)] == pytest.approx([0.6, 0.6, 0.6], abs=1e-7)


def _cosine(step, start, end, begin, end_step):
  """Half a cosine from ``start`` at ``begin`` to ``end`` at ``end_step``, held outside."""
  frac = min(max((step - begin) / (end_step - begin), 0.0), 1.0)
  return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


@pytest.mark.parametrize("start,end", [(0.5, 1.0), (0.3, 0.0)])
@pytest.mark.parametrize("step", [0, 100, 350, 600, 850, 1100, 5000])
def test_cosine_anneal_follows_half_a_cosine(start, end, step):
  schedule = dp.cosine_anneal(start, end, 100, 1100)
  assert float(schedule(step)) == pytest.approx(_cosine(step, start, end, 100, 1100), abs=1e-6)


def test_cosine_anneal_hand_values():
  p = dp.cosine_anneal(0.5, 1.0, 100, 1100)
  q = dp.cosine_anneal(0.3, 0.0, 100, 1100)
  assert float(p(0)) == pytest.approx(0.5) and float(p(1100)) == pytest.approx(1.0)
  # Halfway cos(pi / 2) = 0: the midpoint of start and end.
  assert float(q(600)) == pytest.approx(0.15) and float(q(5000)) == pytest.approx(0.0)
  # A quarter of the way: 1 - (1 + cos(pi / 4)) / 2 = (2 - sqrt 2) / 4 of the way from start to end.
  assert float(p(350)) == pytest.approx(0.5 + 0.5 * (2 - math.sqrt(2)) / 4, abs=1e-6)


def test_pruning_steps_hand_values():
  assert dp.pruning_steps(0, 9, 3) == [0, 3, 6, 9]
  assert dp.pruning_steps(0, 10, 3) == [0, 3, 6, 9, 10]  # end_step off the grid is appended
  assert dp.pruning_steps(5, 5, 100) == [5]
  assert dp.pruning_steps(7, 20, 100) == [7, 20]


@settings(deadline=None, max_examples=50)
@given(begin=st.integers(0, 500), length=st.integers(0, 500), every=st.integers(1, 60))
def test_pruning_steps_are_the_grid_from_begin_plus_end(begin, length, every):
  end = begin + length
  steps = dp.pruning_steps(begin, end, every)
  grid = set(range(begin, end + 1, every))
  assert set(steps) == grid | {end}
  assert steps == sorted(set(steps))  # increasing, no repeats


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
