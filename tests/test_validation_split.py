"""The validation protocol of the experiments (docs/experiments.md, "Validation"): the
last training images are held out, every epoch is evaluated on them, and studies choose
settings on validation error and report the test error of what they chose.

Runs are tiny (an IDX folder of 96 training images, 4 steps); the study tests use
hand-written summaries whose validation and test errors disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import (
  checkpoints,
  errors,
  input_pipeline,
  methods,
  preprocessing,
  report,
  results_tables,
  run_folder,
  study_report,
  train,
)
from experiments import data as data_lib
from experiments import summary as summary_lib
from experiments.configs import default
from tests import helpers

# Trains real runs, shared through ``finished_run``: XLA's default passes (conftest.py).
DEFAULT_COMPILER_PASSES = True

NUM_TRAIN, NUM_TEST, HELD_OUT = 96, 32, 32


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
  """An IDX folder whose training image i carries i in its first pixel (i < 256), so
  that any array of its images tells which ones it holds."""
  folder = tmp_path_factory.mktemp("idx")
  rng = np.random.default_rng(0)
  for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 100, size=(count, 28, 28)) + 15 * labels[:, None, None]
    images[:, 0, 0] = np.arange(count)
    images_name, labels_name = data_lib.IDX_FILENAMES[split]
    helpers.write_idx(folder / f"{images_name}.gz", images)
    helpers.write_idx(folder / f"{labels_name}.gz", labels)
  return folder


def _config(idx_dir: Path | None, **overrides):
  """A 1-epoch dense LeNet-300-100 config on ``idx_dir`` (``None``: TFDS)."""
  config = default.get_config()
  fields = dict(
    dataset="fashion_mnist",
    model="lenet300",
    method="dense",
    idx_dir=None if idx_dir is None else str(idx_dir),
    validation_examples=HELD_OUT,
    num_epochs=1,
    batch_size=16,
    eval_batch_size=16,
    num_devices=1,
    progress=False,
  )
  for name, value in {**fields, **overrides}.items():
    config[name] = value
  return config


def _indices(images: np.ndarray) -> list[int]:
  """The training indices of normalised images (first pixel = index / 255)."""
  return [int(round(255 * float(v))) for v in images[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def finished(idx_dir, finished_run):
  """One finished 1-epoch run with a 32-image validation split: ``(summary, workdir)``."""
  return finished_run(_config(idx_dir))


# --- the split ----------------------------------------------------------------------


def test_split_is_the_last_n_training_images_then_the_cap(idx_dir):
  data = input_pipeline.load_data(_config(idx_dir))
  assert _indices(data.val_images) == list(range(NUM_TRAIN - HELD_OUT, NUM_TRAIN))
  assert _indices(data.train_images) == list(range(NUM_TRAIN - HELD_OUT))
  raw_images, raw_labels = data_lib.load_idx_split(idx_dir, "train")
  np.testing.assert_array_equal(data.val_labels, raw_labels[-HELD_OUT:])
  np.testing.assert_array_equal(data.val_images, raw_images[-HELD_OUT:] / np.float32(255))
  # Hold out first, then cap: the validation images do not depend on the cap.
  capped = input_pipeline.load_data(_config(idx_dir, max_train_examples=20))
  assert _indices(capped.train_images) == list(range(20))
  assert _indices(capped.val_images) == _indices(data.val_images)
  # The split does not depend on the seed.
  other_seed = input_pipeline.load_data(_config(idx_dir, seed=7))
  np.testing.assert_array_equal(other_seed.val_images, data.val_images)
  # 0 disables it; unset holds out 10,000 only from splits of at least 50,000 images.
  assert len(input_pipeline.load_data(_config(idx_dir, validation_examples=0)).val_images) == 0
  assert len(input_pipeline.load_data(_config(idx_dir, validation_examples=None)).val_images) == 0
  assert preprocessing.validation_count(None, 60_000) == preprocessing.validation_count(
    None, 50_000
  )
  assert preprocessing.validation_count(None, 50_000) == 10_000
  assert preprocessing.validation_count(None, 49_999) == 0


def test_split_under_mocked_tfds_with_statistics_of_the_training_images(tmp_path):
  config = _config(None, dataset="cifar10", data_dir=str(tmp_path), validation_examples=10)
  with tfds.testing.mock_data(num_examples=40):
    raw_images, raw_labels = data_lib.load_dataset("cifar10", data_dir=tmp_path)["train"]
    data = input_pipeline.load_data(config)
  train_raw = raw_images[:30].astype(np.float64) / 255
  mean, std = train_raw.mean(axis=(0, 1, 2)), train_raw.std(axis=(0, 1, 2))
  np.testing.assert_allclose(data.train_images, (train_raw - mean) / std, atol=1e-5)
  # The held-out images are standardised with the training images' statistics too.
  np.testing.assert_allclose(
    data.val_images, (raw_images[30:].astype(np.float64) / 255 - mean) / std, atol=1e-5
  )
  np.testing.assert_array_equal(data.val_labels, raw_labels[30:])


def test_standardize_uses_the_statistics_of_the_images_trained_on_only(idx_dir):
  raw_images, _ = data_lib.load_idx_split(idx_dir, "train")
  raw_test, _ = data_lib.load_idx_split(idx_dir, "test")
  # Capped to 20: neither the held-out images nor the ones after the cap are counted.
  data = input_pipeline.load_data(_config(idx_dir, standardize=True, max_train_examples=20))
  trained_on = raw_images[:20].astype(np.float64) / 255
  mean, std = trained_on.mean(), trained_on.std()
  assert abs(mean - raw_images[: NUM_TRAIN - HELD_OUT].mean() / 255) > 1e-4  # they differ
  for got, raw in (
    (data.train_images, raw_images[:20]),
    (data.val_images, raw_images[-HELD_OUT:]),
    (data.test_images, raw_test),
  ):
    np.testing.assert_allclose(got, (raw.astype(np.float64) / 255 - mean) / std, atol=1e-5)
  assert abs(float(data.train_images.mean())) < 1e-5
  assert abs(float(data.train_images.std()) - 1.0) < 1e-4
  # Off (the default), the pixels are only scaled to [0, 1].
  plain = input_pipeline.load_data(_config(idx_dir, max_train_examples=20))
  np.testing.assert_array_equal(plain.train_images, raw_images[:20] / np.float32(255))


@pytest.mark.parametrize(
  "value, message",
  [
    (-1, "validation_examples=-1 must be unset or an integer >= 0"),
    (NUM_TRAIN, f"validation_examples={NUM_TRAIN} must be smaller than the {NUM_TRAIN}"),
    (NUM_TRAIN - 10, f"validation_examples={NUM_TRAIN - 10} leaves 10 of the {NUM_TRAIN}"),
  ],
)
def test_bad_values_are_one_line_errors_before_anything_is_written(
  idx_dir, tmp_path, value, message
):
  # A ConfigError (a ValueError) is what experiments/main.py prints as one line, exit 2.
  with pytest.raises(errors.ConfigError, match="^invalid config: ") as error:
    train.train_and_evaluate(_config(idx_dir, validation_examples=value), tmp_path / "run")
  assert message in str(error.value) and "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()


# --- a run ----------------------------------------------------------------------------


def test_summary_val_error_is_the_models_error_on_the_held_out_images(idx_dir, finished):
  summary, workdir = finished
  state = checkpoints.restore_checkpoint(workdir)["state"]
  raw_images, raw_labels = data_lib.load_idx_split(idx_dir, "train")
  held_out = raw_images[-HELD_OUT:].astype(np.float32) / 255
  model = methods.make_model(_config(idx_dir), data_lib.NUM_CLASSES)
  logits = np.asarray(model.apply({"params": state["params"]}, held_out), np.float64)
  labels = raw_labels[-HELD_OUT:]
  error = float(np.mean(np.argmax(logits, -1) != labels))
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  loss = float(-np.mean(log_probs[np.arange(HELD_OUT), labels]))

  assert summary["validation_examples"] == HELD_OUT
  assert summary["val_error"] == pytest.approx(error, abs=1e-6)
  assert summary["val_loss"] == pytest.approx(loss, rel=1e-4)
  [line] = report.read_metrics(workdir)
  assert (line["val_error"], line["test_error"]) == (summary["val_error"], summary["test_error"])
  # One epoch: it is the one chosen on validation.
  assert summary["best_val_epoch"] == 1
  assert summary["test_error_at_best_val"] == summary["test_error"]
  row = (workdir / report.RESULTS_ROW_FILE).read_text()
  assert "| val error (%) | test error (%) |" in row
  assert f"| {100 * summary['val_error']:.2f} | {100 * summary['test_error']:.2f} |" in row
  assert summary == json.loads((workdir / report.SUMMARY_FILE).read_text())


def test_no_split_reports_no_validation(idx_dir, tmp_path):
  summary = train.train_and_evaluate(_config(idx_dir, validation_examples=0), tmp_path / "run")
  assert summary["validation_examples"] == 0
  assert summary["val_error"] is None and summary["best_val_epoch"] is None
  assert "val_error" not in report.read_metrics(tmp_path / "run")[0]
  assert "| no split |" in (tmp_path / "run" / report.RESULTS_ROW_FILE).read_text()


def test_best_validation_epoch_is_chosen_at_the_final_sparsity():
  def line(epoch, sparsity, val_error, test_error):
    return dict(epoch=epoch, sparsity=sparsity, val_error=val_error, test_error=test_error)

  metrics = [
    line(1, 0.5, 0.05, 0.05),  # lowest validation error, but not yet pruned to the target
    line(2, 0.9, 0.12, 0.10),
    line(3, 0.9, 0.11, 0.13),
    line(4, 0.9, 0.11, 0.12),
  ]
  assert summary_lib.best_validation_epoch(metrics)["epoch"] == 3  # the earliest of equals
  assert summary_lib.best_validation_epoch([{**m, "val_error": None} for m in metrics]) is None


def test_changing_the_split_is_refused_on_resume(idx_dir, finished, tmp_path):
  _, workdir = finished
  before = sorted(p.name for p in workdir.rglob("*"))
  with pytest.raises(errors.ConfigError, match=f"validation_examples {HELD_OUT} -> 16"):
    train.train_and_evaluate(_config(idx_dir, validation_examples=16), workdir)
  assert sorted(p.name for p in workdir.rglob("*")) == before
  # A run folder whose config.json lacks the field trained on every image: it counts as 0.
  saved = _config(idx_dir).to_dict()
  del saved["validation_examples"]
  (tmp_path / run_folder.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  assert run_folder.check_config_change(tmp_path, _config(idx_dir, validation_examples=0)) == {}
  with pytest.raises(errors.ConfigError, match="validation_examples 0 -> None"):
    run_folder.check_config_change(tmp_path, _config(idx_dir, validation_examples=None))


# --- studies --------------------------------------------------------------------------


def _summary(run: str, method: str, target, val_error, test_error, compression: float) -> dict:
  """A run's summary.json as aggregate reads it (errors as fractions)."""
  return {
    "name": run,
    "method": method,
    "target_sparsity": target,
    "validation_examples": 0 if val_error is None else 10_000,
    "val_error": val_error,
    "test_error": test_error,
    "compression": compression,
    "sparsity": 0.0 if target is None else target,
    "layer_sparsity": {"dense1/kernel": 0.0 if target is None else target},
    "wall_time_s": 1.0,
    "platform": "cpu",
    "device_kind": "cpu",
    "device_count": 1,
  }


# Validation and test disagree: by validation gradual is within 0.5 points of dense at
# 90 % only, by test at 95 % only; drop beats gradual at 90 % on validation, not on test.
GRID = {
  "dense": ("dense", None, 0.100, 0.100, 1.0),
  "gradual_t0.9": ("gradual", 0.9, 0.103, 0.110, 9.9),
  "gradual_t0.95": ("gradual", 0.95, 0.108, 0.102, 19.4),
  "drop_t0.9": ("drop", 0.9, 0.101, 0.115, 9.9),
  "drop_t0.95": ("drop", 0.95, 0.120, 0.120, 19.4),
}


def _study():
  return {
    "name": "fake",
    "config": "experiments/configs/lenet300_base.py",
    "methods": ["dense", "gradual", "drop"],
    "targets": [0.9, 0.95],
    "seeds": [0],
  }


def _write_runs(root: Path, grid: dict, legacy: tuple = ()) -> None:
  """A run folder per cell of ``grid``; cells in ``legacy`` have no validation split."""
  for cell, (method, target, val_error, test_error, compression) in grid.items():
    run = f"{cell}_seed0"
    (root / run).mkdir(parents=True, exist_ok=True)
    summary = _summary(
      run, method, target, None if cell in legacy else val_error, test_error, compression
    )
    (root / run / "summary.json").write_text(json.dumps(summary))


def test_study_chooses_on_validation_and_reports_the_test_error(tmp_path):
  _write_runs(tmp_path / "runs", GRID)
  rows = study_report.aggregate(_study(), tmp_path / "runs")
  by_cell = {r["cell"]: r for r in rows}
  dense = by_cell["dense"]
  assert study_report.selection_split(rows) == study_report.VALIDATION
  best = study_report.best_within(rows, "gradual", dense, 0.5, study_report.VALIDATION)
  assert best["cell"] == "gradual_t0.9"
  # On test the same tolerance picks the other target: the protocol is what decides.
  assert study_report.best_within(rows, "gradual", dense, 0.5, study_report.TEST)["cell"] == (
    "gradual_t0.95"
  )
  text = study_report.write_report(_study(), tmp_path / "runs", tmp_path / "report").read_text()
  assert "chosen on validation" in text and "Protocol: every run holds out the last 10,000" in text
  assert "- `gradual`: 9.9x (90%; validation 10.30 ± 0.00 %; test 11.00 ± 0.00 %)" in text
  # Comparisons are of validation errors: drop - gradual at 90 % is -0.20 (test: +0.50).
  assert "Validation error difference against `gradual`" in text
  assert "| drop | -0.20 (1 seed) | +1.20 (1 seed) |" in text
  assert "| validation error % (mean ± std) | test error % (mean ± std) |" in text
  assert (tmp_path / "report" / "fake.png").stat().st_size > 0

  # docs/results.md's tables from the same JSON: chosen on validation, test reported.
  within = results_tables.within_lines(tmp_path / "report", "Net=fake")
  assert within == [
    "- Net (dense: validation 10.00 ± 0.00 %, test 10.00 ± 0.00 %; chosen on validation): "
    "`gradual` 9.9x (90%; validation 10.30 %, test 11.00 %); `drop` 9.9x (90%; validation "
    "10.10 %, test 11.50 %)."
  ]
  diffs = results_tables.diffs_table(tmp_path / "report", "Net=fake")
  assert diffs[0].startswith("| network | method (validation error): unpaired / paired by seed |")
  assert "| Net | drop | -0.20 (1 seed) | +1.20 (1 seed) |" in diffs


def test_runs_without_a_validation_split_are_kept_apart(tmp_path):
  root = tmp_path / "runs"
  _write_runs(root, GRID, legacy=("drop_t0.95",))
  # A second seed of dense without a validation split: left out of its cell.
  (root / "dense_seed1").mkdir()
  (root / "dense_seed1" / "summary.json").write_text(
    json.dumps(_summary("dense_seed1", "dense", None, None, 0.5, 1.0))
  )
  study = {**_study(), "seeds": [0, 1]}
  rows = {r["cell"]: r for r in study_report.aggregate(study, root)}
  assert rows["dense"]["seeds"] == 1 and rows["dense"]["excluded_runs"] == ["dense_seed1"]
  assert rows["dense"]["error_mean"] == pytest.approx(10.0)  # the 50 % run is not mixed in
  assert rows["drop_t0.95"]["val_error_mean"] is None
  text = study_report.write_report(study, root, tmp_path / "report").read_text()
  assert "left out of every comparison and plot: `drop_t0.95`" in text
  assert "left out of their cell's numbers: `dense_seed1`" in text
  assert "| drop_t0.95 | drop | 95% | 1 | no split | 12.00 ± 0.00 |" in text
  assert "| drop | -0.20 (1 seed) | — |" in text
  with pytest.raises(ValueError, match="mix cells with and without a validation split"):
    results_tables.load_rows(tmp_path / "report", ["fake"])

  # A study made only of such runs is compared on test error, and says so.
  only_legacy = tmp_path / "legacy"
  _write_runs(only_legacy, GRID, legacy=tuple(GRID))
  text = study_report.write_report(_study(), only_legacy, tmp_path / "legacy_report").read_text()
  assert "Protocol: **no validation split**" in text
  assert "Test error difference against `gradual`" in text
  assert "validation error %" not in text
  assert "| drop | +0.50 (1 seed) | +1.80 (1 seed) |" in text


def test_split_under_mocked_tfds_trains(tmp_path):
  config = _config(
    None,
    dataset="mnist",
    data_dir=str(tmp_path / "tfds"),
    validation_examples=16,
  )
  with tfds.testing.mock_data(num_examples=40):
    summary = train.train_and_evaluate(config, tmp_path / "run")
  assert summary["validation_examples"] == 16 and summary["steps"] == (40 - 16) // 16
  assert 0.0 <= summary["val_error"] <= 1.0
