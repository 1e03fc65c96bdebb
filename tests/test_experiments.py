"""End-to-end tests of the experiment runner (experiments/train.py and friends).

Every run is tiny (a few hundred mocked or synthetic examples, a few steps); most
of the time goes into compiling the train step. The process has two simulated CPU
devices (tests/conftest.py), so 1-device and 2-device runs can be compared here.
"""

from __future__ import annotations

import gzip
import importlib
import json

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import droppruning_jax as dp
from droppruning_jax import masks as masks_lib
from experiments import (
  config_checks,
  errors,
  input_pipeline,
  methods,
  report,
  run_folder,
  train,
)
from experiments import data as data_lib
from experiments.configs import default
from tests import helpers

# Trains real runs, shared through ``finished_run``: XLA's default passes (conftest.py).
DEFAULT_COMPILER_PASSES = True

METRICS_KEYS = {
  "epoch",
  "step",
  "learning_rate",
  "train_loss",
  "train_accuracy",
  "test_loss",
  "test_error",
  "sparsity",
  "layer_sparsity",
  "dropped_away",
  "dropped_back",
  "max_shortfall",
  "train_time_s",
  "epoch_time_s",
}
SUMMARY_KEYS = {
  "test_error",
  "sparsity",
  "compression",
  "nonzero_params",
  "total_params",
  "layer_sparsity",
  "wall_time_s",
  "device_kind",
  "device_count",
  "config",
  "dense_bytes",
  "sparse_bytes",
}


def _recomputed_test_error(config, state: dict) -> float:
  """The test error of the saved params, by one plain model.apply over the whole test set
  (no eval batching, padding weights or pmap, unlike the runner's evaluation)."""
  data = input_pipeline.load_data(config)
  variables = {"params": state["params"]}
  if jax.tree.leaves(state.get("batch_stats", {})):
    variables["batch_stats"] = state["batch_stats"]
  logits = methods.make_model(config, data.num_classes).apply(
    variables, data.test_images, train=False
  )
  return float(np.mean(np.argmax(logits, -1) != np.asarray(data.test_labels)))


# --- smoke runs of every config ----------------------------------------------


@pytest.mark.parametrize(
  "name, overrides",
  [
    # The recipes rewind the learning rate after the pruning window: a second epoch.
    ("lenet300", {"num_epochs": 2}),
    ("lenet5", {"num_epochs": 2}),
  ],
)
def test_config_smoke_run(name, overrides, tmp_path):
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  config = helpers.small_config(config, data_dir=str(tmp_path / "tfds"), **overrides)
  workdir = tmp_path / "run"
  with tfds.testing.mock_data(num_examples=128):
    summary = train.train_and_evaluate(config, workdir)
    # The reported error is the saved model's (mocked labels are random: no learning here).
    test_error = _recomputed_test_error(config, helpers.final_state(workdir))
  assert summary["test_error"] == pytest.approx(test_error, abs=1e-6)

  assert SUMMARY_KEYS <= set(summary)
  assert summary == json.loads((workdir / "summary.json").read_text())
  helpers.assert_exact_final_sparsity(
    summary, workdir, config.target_sparsity, pooled=config.sparsity_distribution == "global"
  )
  assert summary["compression"] == pytest.approx(
    summary["total_params"] / summary["nonzero_params"]
  )
  assert summary["compression"] > 5
  # The exported model stores the kept weights plus their (narrow) indices only.
  assert summary["sparse_bytes"] < summary["dense_bytes"] / 2
  assert summary["device_count"] == jax.local_device_count()
  assert summary["config"]["model"] == name

  lines = report.read_metrics(workdir)
  assert [line["epoch"] for line in lines] == list(range(1, config.num_epochs + 1))
  assert METRICS_KEYS <= set(lines[0])
  assert lines[0]["step"] == 128 // 8
  assert lines[0]["dropped_away"] > 0
  for file_name in ("results_row.md", "curves.png", "layers.png", "config.json"):
    assert (workdir / file_name).stat().st_size > 0
  assert "| " + workdir.name + " |" in (workdir / "results_row.md").read_text()

  state = helpers.final_state(workdir)
  masks = state["opt_state"]["masks"]
  # Pruned weights are exactly zero in the saved params.
  for param, mask in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(masks)):
    if np.ndim(mask):
      assert np.all(param[~mask] == 0)


def test_vgg16_config_builds_its_model_and_transformation():
  """The VGG-16 config validates and builds (shapes only: compiling a VGG-16 train step
  takes about a minute on a CPU). Batch norm in training mode is tested in
  tests/test_models.py; the loop threads ``batch_stats`` like the params."""
  config = importlib.import_module("experiments.configs.vgg16").get_config()
  config_checks.validate_config(config)
  model = methods.make_model(config, 10)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
  )
  params = variables["params"]
  assert len(variables["batch_stats"]) == 13  # bn1 ... bn13
  tx = methods.make_optimizer(config, 390, params)
  state = jax.eval_shape(tx.init, params)
  masks = dp.get_masks(state)
  # The prunable leaves are the 13 conv kernels and the dense kernels; biases and batch
  # norm scales are not pruned.
  prunable = [
    path for path, m in zip(masks_lib.leaf_paths(masks), jax.tree.leaves(masks)) if m.ndim
  ]
  assert len([p for p in prunable if p.startswith("conv")]) == 13
  assert all(p.endswith("kernel") for p in prunable)


def test_han_method_run(idx_dir, tmp_path):
  config = helpers.idx_config(
    idx_dir, method="han", han_cycles=3, num_epochs=2, target_sparsity=0.9, prune_end_epoch=1.5
  )
  summary = train.train_and_evaluate(config, tmp_path / "han")
  lines = report.read_metrics(tmp_path / "han")
  assert all(line["dropped_back"] == 0 for line in lines)
  helpers.assert_exact_final_sparsity(summary, tmp_path / "han", 0.9)
  sparsities = [line["sparsity"] for line in lines]
  assert sparsities == sorted(sparsities)


@pytest.mark.parametrize("method", ["drop", "han"])
def test_loop_stops_if_a_pruning_step_was_compiled_without_mask_update(
  idx_dir, tmp_path, monkeypatch, method
):
  # The loop runs the conditional-free step outside pruning_step_set; if that set
  # ever missed a pruning step, the skipped update must stop the run, not go unseen.
  monkeypatch.setattr(methods, "pruning_step_set", lambda tx: frozenset())
  config = helpers.idx_config(idx_dir, method=method, han_cycles=2, target_sparsity=0.5)
  with pytest.raises(RuntimeError, match="skip_mask_update"):
    train.train_and_evaluate(config, tmp_path / method)


# --- resume -----------------------------------------------------------------


def test_interrupted_runs_resume_bitwise(idx_dir, tmp_path):
  """A run stopped mid-epoch, then after an epoch, then finished == an uninterrupted run.
  (Packed masks resume the same way: tests/test_packed_masks.py.)"""
  overrides = dict(num_epochs=3, prune_end_epoch=2.0, update_every=2, drop_back_prob=0.2)
  straight = train.train_and_evaluate(helpers.idx_config(idx_dir, **overrides), tmp_path / "a")

  resumed_dir = tmp_path / "b"
  steps_per_epoch = 256 // 16
  first = train.train_and_evaluate(
    helpers.idx_config(idx_dir, stop_after_steps=steps_per_epoch + 3, **overrides), resumed_dir
  )
  assert first == {"stopped": True, "last_epoch": 1}
  second = train.train_and_evaluate(
    helpers.idx_config(idx_dir, stop_after_epochs=2, **overrides), resumed_dir
  )
  assert second == {"stopped": True, "last_epoch": 2}
  resumed = train.train_and_evaluate(helpers.idx_config(idx_dir, **overrides), resumed_dir)

  state_a, state_b = helpers.final_state(tmp_path / "a"), helpers.final_state(resumed_dir)
  chex.assert_trees_all_equal(state_a["params"], state_b["params"])
  chex.assert_trees_all_equal(state_a["opt_state"], state_b["opt_state"])  # masks included
  assert resumed["test_error"] == straight["test_error"]
  assert resumed["sparsity"] == straight["sparsity"]
  assert straight["layer_sparsity"] == resumed["layer_sparsity"]

  def without_times(lines):
    return [{k: v for k, v in line.items() if not k.endswith("_time_s")} for line in lines]

  assert without_times(report.read_metrics(resumed_dir)) == without_times(
    report.read_metrics(tmp_path / "a")
  )
  # The masks' storage cannot change under a checkpoint: a clear error, before training.
  with pytest.raises(ValueError, match="packed_masks=True but the checkpoints"):
    train.train_and_evaluate(
      helpers.idx_config(idx_dir, **overrides, packed_masks=True), resumed_dir
    )
  # Only the last two checkpoints are kept (named by the global step).
  assert sorted(
    int(p.name) for p in (resumed_dir / "checkpoints").iterdir() if p.name.isdigit()
  ) == [2 * steps_per_epoch, 3 * steps_per_epoch]


# --- devices ----------------------------------------------------------------


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
def test_two_devices_match_one(idx_dir, finished_run):
  summaries, states = [], []
  for devices in (1, 2):
    summary, workdir = finished_run(
      helpers.idx_config(idx_dir, num_devices=devices, update_every=2)
    )
    summaries.append(summary)
    states.append(helpers.final_state(workdir))
  assert [s["device_count"] for s in summaries] == [1, 2]
  chex.assert_trees_all_close(states[0]["params"], states[1]["params"], atol=1e-5)
  chex.assert_trees_all_equal(states[0]["opt_state"]["masks"], states[1]["opt_state"]["masks"])
  assert summaries[0]["test_error"] == pytest.approx(summaries[1]["test_error"], abs=0.02)


# --- errors -----------------------------------------------------------------


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
  config = helpers.small_config(
    default.get_config(), dataset="mnist", data_dir=str(tmp_path / "none")
  )
  with pytest.raises(data_lib.DatasetError, match="'mnist'.*not available.*To get it"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_idx_folder_with_missing_file(idx_dir, tmp_path):
  broken = tmp_path / "idx"
  broken.mkdir()
  for path in idx_dir.iterdir():
    if not path.name.startswith("t10k-labels"):
      (broken / path.name).write_bytes(path.read_bytes())
  with pytest.raises(data_lib.DatasetError, match="t10k-labels-idx1-ubyte.*not found"):
    train.train_and_evaluate(helpers.idx_config(broken), tmp_path / "run")


def test_idx_folder_with_corrupt_file(idx_dir, tmp_path):
  broken = tmp_path / "idx"
  broken.mkdir()
  for path in idx_dir.iterdir():
    (broken / path.name).write_bytes(path.read_bytes())
  images = broken / "train-images-idx3-ubyte.gz"
  raw = gzip.decompress(images.read_bytes())
  images.write_bytes(gzip.compress(raw[:-100]))  # truncated
  with pytest.raises(data_lib.DatasetError, match="train-images.*corrupt.*truncated"):
    train.train_and_evaluate(helpers.idx_config(broken), tmp_path / "run")


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"method": "prune_everything"}, "method='prune_everything'"),
    ({"num_devices": 2, "batch_size": 33}, "batch_size=33 is not divisible by the 2"),
    ({"num_devices": 2, "eval_batch_size": 25}, "eval_batch_size=25 is not divisible"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear'"),
    ({"model": "vgg16"}, "cannot read dataset='fashion_mnist'"),
    ({"prune_end_epoch": 5.0}, "prune_end_epoch=5.0"),
    ({"target_sparsity": 1.0}, "target_sparsity=1.0"),
    ({"num_devices": 3}, "num_devices=3"),
    ({"sparsity_distribution": "fancy"}, "sparsity_distribution='fancy'"),
  ],
)
def test_invalid_config_fails_before_training(overrides, message, tmp_path):
  # idx_dir does not exist: a config error must be reported before any data is read.
  config = helpers.idx_config(tmp_path / "no-such-folder", **overrides)
  with pytest.raises(ValueError, match="^invalid config: ") as error:
    train.train_and_evaluate(config, tmp_path / "run")
  assert message in str(error.value)
  assert not (tmp_path / "run").exists()


def test_unreachable_schedule_fails_before_training(idx_dir, tmp_path):
  # 99 % in 4 pruning steps is too steep for p = 0.5, q = 0.1.
  config = helpers.idx_config(idx_dir, target_sparsity=0.99, update_every=2)
  with pytest.raises(ValueError, match="drop_back_prob|drop_away_prob|pruning steps"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


# --- several processes --------------------------------------------------------


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
def test_two_processes_match_one_process_with_two_devices(idx_dir, tmp_path, finished_run):
  """2 processes x 1 CPU device (jax.distributed, gloo) == 1 process x 2 devices."""
  defaults = default.get_config()
  fields = {
    name: value
    for name, value in helpers.idx_config(idx_dir, update_every=2).items()
    if value != defaults[name]
  }
  helpers.run_two_processes(fields, tmp_path / "multi")

  single, single_dir = finished_run(helpers.idx_config(idx_dir, update_every=2, num_devices=2))
  multi = report.read_summary(tmp_path / "multi")
  assert multi["process_count"] == 2 and multi["device_count"] == 2
  # Process 0 alone wrote the per-epoch lines.
  assert [line["epoch"] for line in report.read_metrics(tmp_path / "multi")] == [1]
  state_multi, state_single = (
    helpers.final_state(tmp_path / "multi"),
    helpers.final_state(single_dir),
  )
  chex.assert_trees_all_close(state_multi["params"], state_single["params"], atol=1e-6)
  chex.assert_trees_all_equal(state_multi["opt_state"]["masks"], state_single["opt_state"]["masks"])
  assert multi["test_error"] == pytest.approx(single["test_error"], abs=1e-6)


def test_resuming_refuses_changed_fields_but_not_new_default_fields(tmp_path):
  config = helpers.idx_config(tmp_path)
  saved = config.to_dict()
  del saved["packed_masks"]  # a run folder whose config.json lacks the field
  (tmp_path / run_folder.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  assert run_folder.check_config_change(tmp_path, config) == {}
  saved["learning_rate"] = 1.0
  (tmp_path / run_folder.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  with pytest.raises(errors.ConfigError, match="learning_rate 1.0 -> 0.05"):
    run_folder.check_config_change(tmp_path, config)


@pytest.mark.parametrize(
  "name",
  sorted(
    p.stem
    for p in (helpers.REPO_ROOT / "experiments" / "configs").glob("*.py")
    if p.stem != "__init__"
  ),
)
def test_every_shipped_config_passes_the_config_checks(name):
  """Each config file loads and passes validate_config as shipped, but lenet5_distill.py,
  which names no teacher (a run of it is refused: test_finetune.py) and passes once one is
  given."""
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  if name == "lenet5_distill":
    with pytest.raises(errors.ConfigError, match="teacher_workdir"):
      config_checks.validate_config(config)
    config.teacher_workdir = "runs/dense"
  config_checks.validate_config(config)
