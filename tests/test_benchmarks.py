"""The benchmark scripts run end to end on tiny settings (no timing is asserted)."""

import json
import math
import pathlib
import sys

import chex
import jax
import optax
import pytest

import droppruning_jax as dp
from benchmarks import common, memory, overhead, selection, sparse_inference


def test_masking_floor_and_the_wrapper_take_the_same_no_update_steps():
  """The reference row of the overhead benchmark computes what the wrapper computes."""
  model, variables, x, y = common.init_model("lenet300", 16)
  params = variables["params"]
  inner = optax.sgd(0.01, momentum=0.9)
  floor = overhead.masking_floor(inner)
  never = dp.drop_pruning(
    inner, target_sparsity=0.9, begin_step=overhead.FAR, end_step=overhead.FAR
  )
  floor_step = common.make_train_step(model, floor, donate=False)
  never_step = common.make_train_step(model, never, donate=False, skip_mask_update=True)
  a = (params, None, floor.init(params))
  b = (params, None, never.init(params))
  for _ in range(3):
    *a, loss_a = floor_step(*a, x, y)
    *b, loss_b = never_step(*b, x, y)
    assert float(loss_a) == float(loss_b)
  chex.assert_trees_all_equal(a[0], b[0])


@pytest.mark.parametrize("count", [1, 2, 7])
def test_interleaved_orders_never_repeat_a_function_back_to_back(count):
  names = [f"f{i}" for i in range(count)]
  orders = common.interleaved_orders(names, 200)
  assert all(sorted(order) == names for order in orders)
  sequence = [name for order in orders for name in order]
  if count > 1:
    assert all(a != b for a, b in zip(sequence, sequence[1:]))
  if count > 2:  # (two functions can only alternate)
    assert len({tuple(order) for order in orders}) > 1  # shuffled, not one fixed order
  assert common.interleaved_orders(names, 50) == common.interleaved_orders(names, 50)
  if count > 1:  # a warm-up's last function does not run again first
    assert all(
      common.interleaved_orders(names, 1, seed=s, last="f0")[0][0] != "f0" for s in range(20)
    )


@pytest.mark.parametrize("n, density, tie_bits", [(1000, 0.5, 0), (4099, 0.9, 20), (64, 0.0, 0)])
def test_radix_select_equals_the_librarys_bisection(n, density, tie_bits):
  """The compared histogram method is exact: the same selection, ties included."""
  import numpy as np

  from droppruning_jax import selection as library_selection

  rng = np.random.default_rng(n)
  mask = jax.numpy.asarray(rng.random(n) < density)
  # Coarse scores (low mantissa bits cleared) make many exact ties.
  scores = np.abs(rng.standard_normal(n)).astype(np.float32)
  scores = (scores.view(np.uint32) >> tie_bits << tie_bits).view(np.float32)
  scores = jax.numpy.asarray(scores)
  for k in (0, 1, n // 7, int(mask.sum()), n):
    expected = library_selection.lowest_scores_many([mask], [scores], [k], pruned_first=False)[0]
    np.testing.assert_array_equal(selection.radix_select(mask, scores, k), expected)


@pytest.mark.parametrize(
  "round_s, budget_s, expected",
  [
    (0.01, 30.0, 2000),  # a fast step: capped
    (0.05, 30.0, 600),
    (10.0, 30.0, 10),  # a slow step: at least the floor
  ],
)
def test_repeats_fit_the_time_budget(round_s, budget_s, expected):
  assert common.repeats_for_budget(round_s, budget_s) == expected


@pytest.mark.parametrize("round_s, budget_s", [(0.0, 30.0), (0.1, -1.0), (float("nan"), 1.0)])
def test_repeats_for_budget_rejects_non_positive_times(round_s, budget_s):
  with pytest.raises(ValueError, match="must be positive"):
    common.repeats_for_budget(round_s, budget_s)


def test_interleaved_median_sizes_its_rounds_from_the_warm_up():
  calls = {"a": 0, "b": 0}

  def make(name, seconds):
    def fn():
      calls[name] += 1
      return seconds

    return fn

  # Fake timers: a round "takes" 0.25 s, so a 5 s budget buys 20 rounds.
  medians, repeats = common.interleaved_median(
    {"a": make("a", 0.1), "b": make("b", 0.15)}, None, warmup=2, budget_s=5.0
  )
  assert repeats == 20 and calls == {"a": 22, "b": 22}
  assert medians == {"a": 0.1, "b": 0.15}
  with pytest.raises(ValueError, match="budget_s"):
    common.interleaved_median({"a": make("a", 0.1)}, None)


def test_overhead_measure_reports_every_ratio():
  row = overhead.measure("lenet300", batch_size=8, repeats=2, epoch_steps=4, update_every=2)
  ratios = {k: v for k, v in row.items() if k.startswith("ratio_")}
  assert set(ratios) == {
    "ratio_no_update",
    "ratio_masking_floor",
    "ratio_no_update_with_cond",
    "ratio_update",
    "ratio_no_update_packed",
    "ratio_update_packed",
    "ratio_epoch",
    "ratio_epoch_simple",
  }
  assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios


@pytest.mark.parametrize(
  "module, argv",
  [
    (memory, ["--models", "lenet300"]),
    (selection, ["--sizes", "1e3,2e3", "--repeats", "1", "--max-sort-size", "2e3"]),
    (sparse_inference, ["--sparsities", "0.9", "--batches", "1", "--repeats", "2"]),
  ],
)
def test_benchmark_scripts_print_their_table(module, argv, monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
  module.main()
  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
  assert len(table) >= 3  # header, separator and at least one row
  assert len({line.count("|") for line in table}) == 1  # every row fills every column


def test_memory_benchmark_measures_packed_masks_as_an_eighth(capsys, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["memory", "--models", "lenet300"])
  memory.main()
  row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| lenet300")][0]
  cells = [c.strip() for c in row.strip("|").split("|")]
  bool_masks, packed_masks = (int(cells[i].replace(",", "")) for i in (4, 6))
  params = common.init_model("lenet300", 1)[1]["params"]
  prunable = sum(int(x.size) for x in jax.tree.leaves(params) if x.ndim >= 2)
  assert bool_masks == prunable + 3  # one byte per weight plus three scalar markers
  assert (
    packed_masks == sum(-(-int(x.size) // 8) for x in jax.tree.leaves(params) if x.ndim >= 2) + 3
  )


def test_memory_table_in_the_docs_is_what_the_code_measures(tmp_path, monkeypatch, capsys):
  """docs/performance.md's memory table and its JSON drift with the state layout: rerun it."""
  out = tmp_path / "memory.json"
  monkeypatch.setattr(sys, "argv", ["memory", "--models", "lenet300,lenet5", "--out", str(out)])
  memory.main()
  measured = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
  root = pathlib.Path(__file__).resolve().parents[1]
  shipped = {
    row["model"]: row
    for row in json.loads((root / "docs/benchmarks/memory.json").read_text())["rows"]
  }
  doc = (root / "docs/performance.md").read_text()
  for name, label in (("lenet300", "LeNet-300-100"), ("lenet5", "LeNet-5")):
    assert shipped[name] == measured[name]
    row = next(
      line
      for line in doc.splitlines()
      if line.startswith(f"| {label} | {measured[name]['params_bytes']:,}")
    )
    for key in ("added_bytes", "added_packed_bytes", "added_restore_bytes"):
      assert f"{measured[name][key]:,}" in row, (key, row)
    extra = measured[name]["added_bytes"] - measured[name]["mask_bytes"]
    assert f'The {extra} bytes in each "added" column' in doc.replace("\n", " ")
