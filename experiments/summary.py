"""The final numbers of a run: ``summary.json``.

:func:`build_summary` reads them from the run's final state and its metrics lines
(errors, sparsity, compression, sizes, times, devices), :func:`best_validation_epoch`
chooses an epoch on validation, and :func:`write_summary` writes the summary and the
run's reports (:mod:`experiments.report`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import jax
import ml_collections

import droppruning_jax as dp
from experiments import report, run_folder
from experiments import steps as steps_lib


def best_validation_epoch(metrics: list[dict]) -> Optional[dict]:
  """The metrics line chosen on validation: the lowest ``val_error`` among the epochs
  whose sparsity is the final one (the finished schedule's; every epoch for dense
  training), the earliest of equals. ``None`` without validation errors.

  Epochs at a lower sparsity are not candidates: choosing one would trade the
  compression the run was asked for against error.
  """
  if not metrics or any(line.get("val_error") is None for line in metrics):
    return None
  final = metrics[-1]["sparsity"]
  candidates = [line for line in metrics if line["sparsity"] == final]
  return min(candidates, key=lambda line: (line["val_error"], line["epoch"]))


def build_summary(
  config,
  workdir: Path,
  state: steps_lib.TrainState,
  total_steps: int,
  run_start: float,
  validation_examples: int = 0,
) -> dict:
  """The final numbers of a run, JSON-serialisable.

  ``validation_examples`` is the size of the run's validation split (0: none; then
  every ``val_*`` field and the chosen-on-validation fields are ``None``).
  """
  metrics = report.read_metrics(workdir)
  last = metrics[-1] if metrics else {}
  best = best_validation_epoch(metrics) if validation_examples else None
  masks = steps_lib.masks_of(config, state)
  counts = dp.count_params(state.params, masks)
  epoch_time = sum(line["epoch_time_s"] for line in metrics)
  train_time = sum(line["train_time_s"] for line in metrics)
  device = jax.local_devices()[0]
  device_count = (config.num_devices or jax.local_device_count()) * jax.process_count()
  return {
    "name": workdir.name,
    "model": config.model,
    "dataset": config.dataset,
    "method": config.method,
    "epochs": config.num_epochs,
    "steps": total_steps,
    # The validation split (the last validation_examples training images) and the final
    # model's error on it: the number to choose settings on. The test error is
    # reported, never chosen on.
    "validation_examples": validation_examples,
    "val_error": last.get("val_error"),
    "val_loss": last.get("val_loss"),
    "test_error": last.get("test_error"),
    "test_loss": last.get("test_loss"),
    # The epoch chosen on validation among those at the final sparsity, and its test
    # error (informational: the checkpoints keep the last epochs only).
    "best_val_epoch": None if best is None else best["epoch"],
    "best_val_error": None if best is None else best["val_error"],
    "test_error_at_best_val": None if best is None else best["test_error"],
    "train_loss": last.get("train_loss"),
    "train_accuracy": last.get("train_accuracy"),
    "sparsity": dp.sparsity(masks),
    "target_sparsity": None if config.method == "dense" else config.target_sparsity,
    "compression": counts["total"] / max(counts["nonzero"], 1),
    "nonzero_params": counts["nonzero"],
    "total_params": counts["total"],
    "prunable_params": counts.get("prunable", 0),
    "layer_sparsity": dp.layer_sparsity(masks),
    # Model size as float32 arrays, and as exported by dp.export_sparse
    # (kept values + smallest-integer flat indices of every pruned leaf).
    "dense_bytes": dp.params_nbytes(state.params),
    "sparse_bytes": dp.params_nbytes(dp.export_sparse(state.params, masks)),
    # Training and evaluation over all epochs, summed over resumes (no start-up).
    "wall_time_s": epoch_time,
    "run_wall_time_s": time.perf_counter() - run_start,
    "steps_per_s": total_steps / train_time if train_time else None,
    "device_kind": device.device_kind,
    "platform": device.platform,
    "device_count": device_count,
    "process_count": jax.process_count(),
    "config": config.to_dict(),
  }


def write_summary(
  config: ml_collections.ConfigDict,
  workdir: Path,
  state: steps_lib.TrainState,
  total_steps: int,
  run_start: float,
  *,
  validation_examples: int,
  compile_time: float,
  run_info: Optional[dict],
) -> dict:
  """The summary of a finished run: :func:`build_summary`, the compile time and the
  run's starts (``run_info``: ``run.json``); written with the reports by process 0."""
  summary = build_summary(
    config, workdir, state, total_steps, run_start, validation_examples=validation_examples
  )
  summary["compile_time_s"] = compile_time
  summary["starts"] = run_info["starts"] if run_info else []
  summary["changed_on_resume"] = sorted(
    {key for start in summary["starts"] for key in start["changed"]}
  )
  # Round-trip through JSON so the returned dict equals the file (tuples -> lists).
  summary = json.loads(run_folder.dumps(summary))
  if run_folder.is_writer():
    run_folder.write_atomic(workdir / run_folder.SUMMARY_FILE, run_folder.dumps(summary, indent=2))
    report.write_report(workdir)
  return summary
