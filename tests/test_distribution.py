"""Sharing the target among layers: the Erdős–Rényi-Kernel rule (Evci et al., 2020)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import droppruning_jax as dp


def _sizes_and_raw(shapes):
  sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
  raw = {name: float(np.sum(shape)) / sizes[name] for name, shape in shapes.items()}
  return sizes, raw


def test_erk_sparsities_balance_the_budget():
  shapes = {"a": (784, 300), "b": (300, 100), "c": (100, 10)}
  result = dp.erk_sparsities(shapes, 0.95)
  sizes = {n: np.prod(s) for n, s in shapes.items()}
  kept = sum(sizes[n] * (1 - result[n]) for n in shapes)
  assert kept == pytest.approx(0.05 * sum(sizes.values()))
  assert result["a"] > result["b"] > result["c"]  # big layers are pruned hardest


def test_erk_hand_example_with_a_capped_layer():
  # Budget 0.5 * 30020 = 15010 kept weights. Uncapped, eps = 15010 / (12 + 400) = 36.4, which
  # would give "tiny" (raw density 12 / 20) a density of 21.9 > 1: it is kept dense, and
  # "big" keeps the other 14990 weights: density 14990 / 30000, sparsity 15010 / 30000.
  result = dp.erk_sparsities({"big": (300, 100), "tiny": (10, 2)}, 0.5)
  assert result["tiny"] == 0.0
  assert result["big"] == pytest.approx(15010 / 30000, rel=1e-12)


shapes_strategy = st.dictionaries(
  keys=st.sampled_from(["a", "b", "c", "d", "e"]),
  values=st.one_of(
    st.tuples(st.integers(1, 64), st.integers(1, 64)),
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 16), st.integers(1, 16)),
  ),
  min_size=1,
  max_size=5,
)


@settings(deadline=None, max_examples=100)
@given(shapes=shapes_strategy, target=st.floats(0.0, 0.99))
def test_erk_properties(shapes, target):
  result = dp.erk_sparsities(shapes, target)
  sizes, raw = _sizes_and_raw(shapes)
  assert set(result) == set(shapes)
  assert all(0.0 <= s < 1.0 for s in result.values())
  # The total kept budget is exact: (1 - target) of all weights.
  kept = sum(sizes[n] * (1.0 - result[n]) for n in shapes)
  assert kept == pytest.approx((1.0 - target) * sum(sizes.values()), rel=1e-9, abs=1e-9)
  # Pruned layers share one eps: density / (sum(shape) / prod(shape)) is the same for all.
  pruned = [n for n in shapes if result[n] > 0.0]
  ratios = [(1.0 - result[n]) / raw[n] for n in pruned]
  if ratios:
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    eps = ratios[0]
    # A layer kept dense is one whose density eps * raw would reach 1 (it is capped) ...
    for name in shapes:
      if result[name] == 0.0:
        assert raw[name] * eps >= 1.0 - 1e-9, name
    # ... and the capped layers are the densest ones: none is sparser-by-rule than a pruned one.
    dense_raw = [raw[n] for n in shapes if result[n] == 0.0]
    if dense_raw:
      assert min(dense_raw) >= max(raw[n] for n in pruned) - 1e-12
