"""Schedules: the sparsity schedule, the annealing of p and q and the pruning steps, each
against values derived by hand or from the formula it documents (the expected trajectory:
test_plan.py)."""

import math

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
