"""The experiment runner's RigL and SET (``method="rigl"`` / ``"set"``)
and the importance-weighted drop (``drop_away``, ``drop_back``, ``temperature``,
``importance``). Tiny runs end at the exact per-layer target with a changed topology, the
config reaches the library's arguments, the loop's set of mask steps is the library's,
and bad values are refused before anything is written."""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest

import droppruning_jax as dp
from droppruning_jax import dynamic_sparse, skeleton
from experiments import config_checks, errors, methods, report, run_folder, train
from experiments.configs import default
from tests import helpers

# Trains real runs, shared through ``finished_run``: XLA's default passes (conftest.py).
DEFAULT_COMPILER_PASSES = True

TARGET = 0.9
DROP_FRACTION = 0.3
# LeNet-300-100's kernels on 28x28 images: 784-300-100-10.
LENET300_KERNELS = ((784, 300), (300, 100), (100, 10))


def drop_counts(summary: dict, every: int) -> list[int]:
  """``k = round(d(t) |A|)`` of every topology update of every layer, from the formula
  (cosine decay of ``DROP_FRACTION`` to 0 at ``end_step``), not from the library."""
  steps = summary["steps"]
  end = steps - 1  # prune_end_epoch = num_epochs: the window ends at the last update
  counts = []
  for shape in LENET300_KERNELS:
    n = math.prod(shape)
    active = n - round(n * TARGET)
    for t in range(every, end, every):
      fraction = DROP_FRACTION * (1 + math.cos(math.pi * t / end)) / 2
      counts.append(round(fraction * active))
  return counts


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dynamic_sparse_run_is_exact_and_changes_its_topology(method, idx_dir, finished_run):
  config = helpers.idx_config(idx_dir, method=method, target_sparsity=TARGET, update_every=1)
  summary, workdir = finished_run(config)
  assert summary["method"] == method
  helpers.assert_exact_final_sparsity(summary, workdir, TARGET)
  (line,) = report.read_metrics(workdir)  # one epoch
  away, back = line["dropped_away"], line["dropped_back"]
  # Every update keeps each layer's active count: as many regrown as dropped.
  assert away == back
  ks = drop_counts(summary, every=1)
  # A weight dropped and regrown in the same update is no change: at most sum(k) flips
  # (+1 per update and layer for float32 rounding of d(t) |A| at .5).
  assert 0 < away <= sum(ks) + len(ks)
  if method == "set":
    # SET regrows k of the |P| + k inactive weights uniformly: the number of just-dropped
    # ones among them is hypergeometric with mean k^2 / (|P| + k) <= k * r, where
    # r = max k / (|P| + k) <= 0.3 * 0.1 / (0.9 + 0.03) at 90 % sparsity, and variance
    # <= its mean. So away >= sum(k) (1 - r) - 6 sd, 6 standard deviations.
    r = DROP_FRACTION * (1 - TARGET) / (TARGET + DROP_FRACTION * (1 - TARGET))
    mean_regrown = r * sum(ks)
    assert away >= sum(ks) - len(ks) - mean_regrown - 6 * math.sqrt(mean_regrown)


@pytest.mark.parametrize("drop_back", ["gradient", "stash"])
def test_importance_weighted_drop_run_is_exact(idx_dir, finished_run, drop_back):
  config = helpers.idx_config(
    idx_dir,
    method="drop",
    target_sparsity=TARGET,
    drop_away="importance",
    drop_back=drop_back,
    temperature=0.5,
    importance="saliency",
  )
  summary, workdir = finished_run(config)
  helpers.assert_exact_final_sparsity(summary, workdir, TARGET)
  (line,) = report.read_metrics(workdir)
  # From all-active masks the pruned weights are those that left minus those that came
  # back; q = 0.1 > 0 revives weights in expectation at every step but the last.
  pruned = sum(round(math.prod(shape) * TARGET) for shape in LENET300_KERNELS)
  assert line["dropped_back"] > 0
  assert line["dropped_away"] - line["dropped_back"] == pruned


@pytest.mark.parametrize(
  "overrides,function,expected",
  [
    (
      dict(method="drop", drop_away="importance", drop_back="gradient", temperature=2.0),
      "drop_pruning",
      dict(drop_away="importance", drop_back="gradient", temperature=2.0, importance="magnitude"),
    ),
    (
      dict(method="drop"),
      "drop_pruning",
      dict(drop_away="uniform", drop_back="uniform", temperature=None, importance="magnitude"),
    ),
    (
      dict(method="drop", drop_back="stash", regrow_init="restore"),
      "drop_pruning",
      dict(drop_back="stash", regrow_init="restore", temperature=None),
    ),
    (
      dict(method="gradual", importance="saliency"),
      "gradual_magnitude_pruning",
      dict(importance="saliency"),
    ),
    (
      dict(method="drop_away_only", importance="random"),
      "drop_away_only",
      dict(importance="random"),
    ),
    (
      dict(method="rigl", drop_fraction=0.5, drop_fraction_decay="constant"),
      "dynamic_sparse_training",
      dict(
        regrowth="gradient",
        drop_fraction=0.5,
        drop_fraction_decay="constant",
        end_step=15,
        update_every=1,
      ),
    ),
    (
      dict(method="set", sparsity_distribution="erk"),
      "dynamic_sparse_training",
      dict(regrowth="random", sparsity_distribution="erk"),
    ),
  ],
)
def test_config_fields_reach_the_library(overrides, function, expected, monkeypatch, tmp_path):
  # The transformation's factory is replaced by a recorder: which arguments the runner
  # passes, without building anything.
  calls = []
  monkeypatch.setattr(dp, function, lambda inner, **kwargs: calls.append(kwargs))
  config = helpers.idx_config(tmp_path, **overrides)
  config_checks.validate_config(config)
  methods.make_optimizer(config, 16, params=None)
  (kwargs,) = calls
  assert {name: kwargs[name] for name in expected} == expected


@pytest.mark.parametrize("every,end_epoch", [(1, 1.0), (3, 1.0), (4, 0.5), (5, 1.0)])
def test_pruning_step_set_is_the_topology_update_schedule(idx_dir, every, end_epoch):
  # The loop compiles the mask update into exactly these steps: every step where the
  # transformation's schedule updates must be in it (else the loop raises), and no other.
  steps_per_epoch = 16
  config = helpers.idx_config(idx_dir, method="rigl", update_every=every, prune_end_epoch=end_epoch)
  _, end = methods.pruning_window(config, steps_per_epoch)
  policy = dynamic_sparse.dynamic_sparse_policy(
    dynamic_sparse.gradient_regrowth, target_sparsity=TARGET, end_step=end, update_every=every
  )
  # The count as the skeleton passes it: an int32 scalar.
  updates = {
    t
    for t in range(steps_per_epoch)
    if int(skeleton.branch_index_of(policy, "rigl")(jnp.asarray(t, jnp.int32))) == 1
  }
  tx = methods.make_optimizer(config, steps_per_epoch, params=None)
  assert methods.pruning_step_set(tx) == updates
  assert updates  # the cases above all have updates
  assert updates == set(range(every, end, every))


@pytest.mark.parametrize(
  "overrides,message",
  [
    (dict(method="rigl", drop_fraction=0.0), "drop_fraction=0.0 is outside (0, 1]"),
    (dict(method="set", drop_fraction=1.5), "drop_fraction=1.5 is outside (0, 1]"),
    (dict(method="rigl", drop_fraction=float("nan")), "drop_fraction=nan"),
    (dict(method="set", drop_fraction=float("inf")), "drop_fraction=inf"),
    (dict(method="set", drop_fraction_decay="linear"), "drop_fraction_decay='linear'"),
    (dict(method="rigl", sparsity_distribution="global"), "sparsity_distribution='global'"),
    (dict(method="set", target_sparsity=0.0), "target_sparsity=0.0"),
    (dict(method="rigl", prune_begin_epoch=0.0, prune_end_epoch=0.0), "prune_end_epoch=0.0"),
    (dict(method="RigL"), "method='RigL'"),
    (dict(importance="snip"), "importance='snip'"),
    (dict(method="rigl", importance="saliency"), "importance='saliency' applies to"),
    (dict(method="random", drop_back="gradient"), "drop_back='gradient' applies to"),
    (dict(method="gradual", drop_away="importance"), "drop_away='importance' applies to"),
    (dict(drop_away="weighted"), "drop_away='weighted'"),
    (dict(drop_back="magnitude"), "drop_back='magnitude'"),
    (dict(method="gradual", drop_back="stash"), "drop_back='stash' applies to"),
    (dict(drop_away="importance", temperature=0.0), "temperature=0.0"),
    (dict(drop_back="gradient", temperature=float("nan")), "temperature=nan"),
    (dict(temperature=2.0), "temperature=2.0 has no effect"),
  ],
)
def test_bad_values_are_refused_before_anything_is_written(overrides, message, tmp_path):
  # The idx folder does not exist: the error must come before any data is read.
  config = helpers.idx_config(tmp_path / "no-such-folder", **overrides)
  with pytest.raises(ValueError, match="^invalid config: ") as error:
    train.train_and_evaluate(config, tmp_path / "run")
  assert message in str(error.value)
  assert "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "field,value", [("drop_fraction", 0.5), ("drop_fraction_decay", "constant")]
)
def test_new_fields_change_results_for_the_resume_check(field, value, tmp_path):
  # A run folder whose config.json lacks the field.
  saved = default.get_config().to_dict()
  del saved[field]
  (tmp_path / run_folder.CONFIG_FILE).write_text(run_folder.dumps(saved))
  # ...and used the field's default, so resuming with the default is no change,
  assert run_folder.check_config_change(tmp_path, default.get_config()) == {}
  # while another value is refused like any field that changes results.
  config = default.get_config()
  config[field] = value
  with pytest.raises(errors.ConfigError, match=f"{field} .* -> {value!r}"):
    run_folder.check_config_change(tmp_path, config)
