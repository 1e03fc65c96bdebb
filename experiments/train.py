"""The one training loop shared by every experiment.

``train_and_evaluate(config, workdir)`` trains a model from ``experiments.models``
on a dataset from ``experiments.data`` with one of the pruning methods (or none),
with ``jax.jit`` over a device mesh of all processes' devices (``config.parallel="jit"``,
the default; data parallel, optionally FSDP or a model's own annotations) or data-parallel
with ``jax.pmap`` over the local devices (``config.parallel="pmap"``), and writes into ``workdir``:

* ``metrics.jsonl``: one JSON line per epoch (losses, validation and test error,
  sparsity, drop counts);
* ``checkpoints/``: an Orbax checkpoint after every epoch, every
  ``config.checkpoint_every_steps`` steps and on SIGTERM, named by the global step
  (the last two are kept); rerunning the same command resumes from the latest one
  that restores;
* ``config.json`` (the config the run was started with; a rerun whose config differs
  in a field that affects results is refused) and ``run.json`` (device count and the
  resumes, with the result-neutral fields they changed);
* ``summary.json``, ``results_row.md``, ``curves.png``, ``layers.png`` at the end
  (the last three written by :mod:`experiments.report`).

This module is the loop; its parts are the modules :mod:`~experiments.config_checks`
(the config's checks), :mod:`~experiments.input_pipeline` (data and batches),
:mod:`~experiments.methods` (model, optimizer, pruning method), :mod:`~experiments.steps`
(train state and steps), :mod:`~experiments.placement` (pmap or jit),
:mod:`~experiments.checkpoints`, :mod:`~experiments.run_folder` (its files, the lock, the
signals), :mod:`~experiments.summary` and :mod:`~experiments.errors`.

Determinism: the data order and augmentation of an epoch are a pure function of
``(config.seed, epoch)``, and the pruning randomness a pure function of
``(config.seed, step)`` (see ``droppruning_jax.drop_pruning``), so a checkpoint holds
all the state there is: a run that is interrupted at any point and resumed ends with
exactly the bits of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import logging

import droppruning_jax as dp
from experiments import (
  checkpoints,
  config_checks,
  errors,
  input_pipeline,
  methods,
  report,
  run_folder,
)
from experiments import distill as distill_lib
from experiments import placement as placement_lib
from experiments import steps as steps_lib
from experiments import summary as summary_lib


def initialize_multihost(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` when ``config.multihost`` (once per process)."""
  if not config.multihost or jax.distributed.is_initialized():
    return
  kwargs = {}
  if not config_checks.is_unset(config.coordinator_address):
    kwargs = dict(
      coordinator_address=config.coordinator_address,
      num_processes=config.num_processes,
      process_id=config.process_id,
    )
  # Without arguments JAX detects the cluster (Cloud TPU pods, SLURM, ...).
  jax.distributed.initialize(**kwargs)


def select_devices(config: ml_collections.ConfigDict) -> Optional[list]:
  """The local devices the steps run on; ``None`` means all local devices (and with
  ``parallel="jit"`` all devices of all processes)."""
  if config.num_devices is None:
    return None
  return jax.local_devices()[: config.num_devices]


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | Path, *, fresh: bool = False
) -> dict:
  """Trains, evaluates every epoch, checkpoints, and writes the run's reports.

  Args:
    config: see ``experiments/configs/default.py`` for the fields.
    workdir: run folder; created if needed. If it holds a checkpoint, training
      resumes from the newest one that restores.
    fresh: start over: an existing ``workdir`` is first renamed to
      ``<workdir>.old`` (``.old.1``, ... if taken), never deleted.

  Returns:
    The summary dict also written to ``workdir/summary.json``; if the run stopped
    early (``stop_after_epochs`` / ``stop_after_steps``) a dict with
    ``"stopped": True`` and the last finished epoch instead.

  Raises:
    ConfigError: (a ``ValueError``) for an invalid config, or one that differs from
      the run folder's in a field that changes results, or another device count;
      before any file is written.
    experiments.data.DatasetError: if the dataset is missing or corrupt (before any
      file is written).
    RunFolderError: the run folder is not writable (before training), holds an
      unreadable file, or is in use by another run.
    DivergedError: the train loss or a parameter became non-finite; the checkpoints
      written up to then are kept.
    Preempted: SIGTERM or SIGINT (Ctrl-C) arrived; a checkpoint of the current step
      was saved first.
  """
  run_start = time.perf_counter()
  initialize_multihost(config)
  # The signal handlers go in before anything compiles; the lock and the other
  # resources of the run are released on every way out.
  with run_folder.StopSignals() as stop, contextlib.ExitStack() as cleanup:
    return _train_and_evaluate(config, Path(workdir), fresh, stop, cleanup, run_start)


class _Setup(NamedTuple):
  """What a run is built from, all checked before any file is written."""

  devices: Optional[list]
  num_local_devices: int
  device_count: int
  run_info: Optional[dict]  # run.json, None for a new run (or with fresh=True)
  neutral_changes: dict  # result-neutral fields changed since the run started
  data: input_pipeline.Data
  steps_per_epoch: int
  total_steps: int
  model: Any
  tx: optax.GradientTransformation
  state: steps_lib.TrainState  # the initial state, on the host
  distill: Optional[tuple[float, float]]  # (weight, temperature), with a teacher
  teacher: Optional[Callable]  # images -> the teacher's logits


class _Start(NamedTuple):
  """Where a run starts: after ``step`` global steps (0, or a restored checkpoint's)."""

  state: steps_lib.TrainState  # in the placement's layout if restored, else on the host
  step: int
  partial: np.ndarray  # the running sums of the unfinished epoch (PARTIAL_FIELDS)
  manager: ocp.CheckpointManager
  run_info: Optional[dict]


class _Steps(NamedTuple):
  """The compiled steps of a run."""

  mask: Callable  # the train step that may update the masks
  frozen: Callable  # the one compiled with skip_mask_update=True (``mask`` if dense)
  eval: Callable
  pruning_steps: frozenset[int]  # the step counts that run ``mask``


def _train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: Path,
  fresh: bool,
  stop: run_folder.StopSignals,
  cleanup: contextlib.ExitStack,
  run_start: float,
) -> dict:
  """The body of :func:`train_and_evaluate`."""
  setup = _check_and_build(config, workdir, fresh)
  # Everything is checked: from here on files are written.
  _open_workdir(workdir, fresh, cleanup)
  manager = checkpoints.checkpoint_manager(workdir)
  # How the state and batches live on the devices and how the steps compile
  # (config.parallel); everything else below is shared by pmap and jit. A checkpoint
  # restores straight into the placement's layout: with jit, each device reads only
  # its own shards of the state, nothing is assembled on the host.
  placement = placement_lib.make_placement(
    config, setup.devices, setup.state, getattr(setup.model, "param_specs", lambda: None)()
  )
  start = _resume(config, workdir, setup, placement, manager)
  loop = _Loop(config, workdir, setup, placement, start, stop)
  compile_time = loop.warm_up(start.state, start.step)
  if loop.run(start.step, start.partial):
    finished = report.read_metrics(workdir)
    return {"stopped": True, "last_epoch": finished[-1]["epoch"] if finished else 0}
  return summary_lib.write_summary(
    config,
    workdir,
    loop.host_state,
    setup.total_steps,
    run_start,
    validation_examples=len(setup.data.val_images),
    compile_time=compile_time,
    run_info=start.run_info,
  )


def _check_and_build(config: ml_collections.ConfigDict, workdir: Path, fresh: bool) -> _Setup:
  """Checks the config (and against the run folder's, unless ``fresh``), loads the data,
  builds the model, the optimizer, the initial state and the teacher; writes nothing.

  Raises:
    ConfigError: for the config, the run folder's config or device count, the method's
      arguments or the teacher.
  """
  config_checks.validate_config(config)
  device_count = config_checks.global_device_count(config)
  neutral_changes, run_info = {}, None
  if not fresh:
    neutral_changes = run_folder.check_config_change(workdir, config)
    run_info = run_folder.read_json(workdir / run_folder.RUN_FILE)
    run_folder.check_devices(workdir, run_info, device_count)
  devices = select_devices(config)
  num_local_devices = len(devices) if devices is not None else jax.local_device_count()

  data = input_pipeline.load_data(config)
  steps_per_epoch = len(data.train_images) // config.batch_size
  total_steps = config.num_epochs * steps_per_epoch
  model = methods.make_model(config, data.num_classes)
  try:  # ValueError: init_workdir's checks, or the library's of the method's arguments
    params, batch_stats = methods.init_variables(config, model, data.image_shape)
    tx = methods.make_optimizer(config, steps_per_epoch, params)
    state = steps_lib.TrainState(params, batch_stats, tx.init(params))
  except ValueError as error:
    raise errors.ConfigError(str(error)) from error
  state = jax.tree.map(np.asarray, state)
  distill, teacher = None, None
  if config.teacher_workdir is not None:
    distill = (float(config.distill_weight), float(config.distill_temperature))
    try:
      teacher = distill_lib.load_teacher(config, methods.make_model, data.num_classes)
    except ValueError as error:
      raise errors.ConfigError(str(error)) from error
  return _Setup(
    devices=devices,
    num_local_devices=num_local_devices,
    device_count=device_count,
    run_info=run_info,
    neutral_changes=neutral_changes,
    data=data,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    model=model,
    tx=tx,
    state=state,
    distill=distill,
    teacher=teacher,
  )


def _open_workdir(workdir: Path, fresh: bool, cleanup: contextlib.ExitStack) -> None:
  """Makes ``workdir`` ready to write: with ``fresh`` an old folder is moved aside first;
  the folder and its checkpoint folder must be writable; process 0 holds the folder's
  lock until ``cleanup`` closes.

  Raises:
    RunFolderError: a folder is not writable, or another run holds the lock.
  """
  if run_folder.is_writer():
    if fresh and workdir.exists():
      old_lock = run_folder.WorkdirLock(workdir)
      old_lock.acquire()  # never move a folder out from under a run that is using it
      moved = run_folder.move_aside(workdir, workdir.with_name(workdir.name + ".old"))
      old_lock.release()
      logging.warning("Starting over: moved the old %s to %s.", workdir, moved)
    run_folder.check_writable(workdir)
  run_folder.sync("workdir")
  run_folder.check_writable(workdir / checkpoints.CHECKPOINT_DIR)
  if run_folder.is_writer():  # held from here to the end of the run; refuses a second run
    lock = run_folder.WorkdirLock(workdir)
    lock.acquire()
    cleanup.callback(lock.release)


def _resume(
  config: ml_collections.ConfigDict,
  workdir: Path,
  setup: _Setup,
  placement: Any,
  manager: ocp.CheckpointManager,
) -> _Start:
  """Restores the newest checkpoint that restores (none: step 0), then records this
  start in ``run.json`` and drops the metrics lines of the epochs to redo."""
  partial = np.zeros(len(checkpoints.PARTIAL_FIELDS), np.float64)
  restored, manager = checkpoints.restore_latest(
    manager,
    workdir,
    checkpoints.checkpoint_item(placement.restore_target(setup.state), 0, 0, partial),
  )
  state, start_step, run_info = setup.state, 0, setup.run_info
  if restored is not None:
    state = restored["state"]
    start_step = int(restored["step"])
    partial = restored["partial"]
    logging.info(
      "Resuming %s from the checkpoint at step %d (epoch %d).",
      workdir,
      start_step,
      start_step // setup.steps_per_epoch,
    )
  if run_folder.is_writer():
    run_info = run_folder.write_run_files(
      workdir, config, run_info, setup.device_count, start_step, setup.neutral_changes
    )
    run_folder.truncate_metrics(workdir, start_step // setup.steps_per_epoch)
  return _Start(state, start_step, partial, manager, run_info)


def _compile_steps(config: ml_collections.ConfigDict, setup: _Setup, placement: Any) -> _Steps:
  """The train steps (with and without a mask update) and the eval step."""
  has_pruning = steps_lib.uses_pruning(config)
  pruning_step_numbers = methods.pruning_step_set(setup.tx)
  model, tx, distill = setup.model, setup.tx, setup.distill
  mask_step = steps_lib.make_train_step(placement, model, tx, has_pruning, distill=distill)
  # Dense training has no conditional to skip: one program serves every step.
  frozen_step = (
    steps_lib.make_train_step(
      placement, model, tx, has_pruning, skip_mask_update=True, distill=distill
    )
    if has_pruning
    else mask_step
  )
  return _Steps(
    mask_step, frozen_step, steps_lib.make_eval_step(placement, model), pruning_step_numbers
  )


@dataclasses.dataclass
class _EpochSums:
  """The running sums of an epoch (``checkpoints.PARTIAL_FIELDS``, in that order, then
  when this part of the epoch started): restored from a mid-epoch checkpoint, saved
  with one, so that the epoch's metrics line comes out the same after a resume."""

  loss: float
  accuracy: float
  max_shortfall: float
  away_before: float
  back_before: float
  time_before: float
  start: float  # time.perf_counter() when this process began the epoch

  def partial(self) -> list:
    return [
      self.loss,
      self.accuracy,
      self.max_shortfall,
      self.away_before,
      self.back_before,
      self.time_before + time.perf_counter() - self.start,
    ]


class _Loop:
  """The epochs of a run: the state on the devices (``replicated``) and on the host
  (``host_state``, at the last epoch's end), the compiled steps, and the checkpoints."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: Path,
    setup: _Setup,
    placement: Any,
    start: _Start,
    stop: run_folder.StopSignals,
  ):
    self.config = config
    self.workdir = workdir
    self.setup = setup
    self.data = setup.data
    self.steps_per_epoch = setup.steps_per_epoch
    self.placement = placement
    self.manager = start.manager
    self.stop = stop
    self.learning_rate = methods.make_learning_rate(config, setup.steps_per_epoch)
    self.replicated = placement.put_state(start.state)
    self.host_state = start.state
    self.has_pruning = steps_lib.uses_pruning(config)
    self.steps = _compile_steps(config, setup, placement)
    self.last_saved = start.step

  def batch_arrays(self, images, labels) -> tuple:
    """The step's batch arrays: with a teacher, its logits for these images too."""
    teacher = self.setup.teacher
    arrays = (images, labels) if teacher is None else (images, labels, teacher(images))
    return self.placement.put_batch(*arrays)

  def warm_up(self, state: steps_lib.TrainState, start_step: int) -> float:
    """Compiles the steps before the loop, so that epoch times measure training only;
    returns the seconds it took.

    The calls' results are thrown away (every later batch has the same shapes). Two
    train calls: the replicated state's sharding names another mesh axis than a pmap
    output's, and each variant compiles once. Not .lower().compile(): with several
    processes a compiled pmap expects global shapes, while a pmap call takes each
    process's local arrays.
    """
    config, data, devices = self.config, self.data, self.setup.num_local_devices
    compile_start = time.perf_counter()
    if start_step < self.setup.total_steps:
      sample = self.batch_arrays(*next(input_pipeline.train_batches(config, data, 1, devices)))
      for train_step in dict.fromkeys([self.steps.mask, self.steps.frozen]):  # each once
        # A fresh replica: the step donates (consumes) the state it is given.
        warm, _ = train_step(self.placement.put_state(state), *sample)
        warm, _ = jax.block_until_ready(train_step(warm, *sample))
      eval_batch = next(
        input_pipeline.eval_batches(config, data.test_images, data.test_labels, devices)
      )
      jax.block_until_ready(
        self.steps.eval(warm.params, warm.batch_stats, *self.placement.put_batch(*eval_batch))
      )
      del warm, sample
    return time.perf_counter() - compile_start

  def save(
    self, step: int, epoch: int, partial_sums, host: Optional[steps_lib.TrainState] = None
  ) -> None:
    """Checkpoints the state after ``step`` steps (``host``: it, already on the host)."""
    if host is None:
      host = self.placement.get_state(self.replicated)
      checkpoints.check_finite_state(host, step, self.workdir, self.last_saved)
    item = checkpoints.checkpoint_item(host, step, epoch, partial_sums)
    self.manager.save(step, args=ocp.args.StandardSave(item))
    self.last_saved = step

  def run(self, start_step: int, partial: np.ndarray) -> bool:
    """Trains the epochs from global step ``start_step`` on (``partial``: the running sums
    of its epoch); closes the checkpoint manager on every way out.

    Returns:
      True if the run stopped early (``stop_after_epochs`` / ``stop_after_steps``).
    """
    config = self.config
    start_epoch, start_offset = divmod(start_step, self.steps_per_epoch)
    try:
      for epoch in range(start_epoch + 1, config.num_epochs + 1):
        skip = start_offset if epoch == start_epoch + 1 else 0
        sums = self._epoch_sums(skip, partial)
        step = self._train_epoch(epoch, skip, sums)
        self._end_epoch(epoch, step, sums)
        if config.stop_after_epochs is not None and epoch >= config.stop_after_epochs:
          if epoch < config.num_epochs:
            return True
    except errors.StopTraining:
      return True
    finally:
      self.manager.wait_until_finished()
      self.manager.close()
    return False

  def _epoch_sums(self, skip: int, partial: np.ndarray) -> _EpochSums:
    epoch_start = time.perf_counter()
    if skip:  # resuming inside this epoch: its running sums come from the checkpoint
      return _EpochSums(*(float(x) for x in partial), start=epoch_start)
    away_before, back_before = steps_lib.drop_totals(self.config, self.host_state)
    return _EpochSums(0.0, 0.0, 0.0, away_before, back_before, 0.0, epoch_start)

  def _train_epoch(self, epoch: int, skip: int, sums: _EpochSums) -> int:
    """Trains the batches of ``epoch`` after its first ``skip``; returns the global step."""
    config = self.config
    step = (epoch - 1) * self.steps_per_epoch + skip
    bar = tqdm.tqdm(
      total=self.steps_per_epoch,
      initial=skip,
      desc=f"epoch {epoch}/{config.num_epochs}",
      unit="step",
      # Bars only on a terminal: in a log (make demo > log, CI, a notebook's captured
      # output) every refresh would be a line; the epoch's log line says it all there.
      disable=not (config.progress and run_folder.is_writer() and sys.stderr.isatty()),
      leave=False,
      dynamic_ncols=True,
    )
    # The batches of an epoch are a pure function of (seed, epoch): a resume
    # inside it regenerates them and skips those already trained on.
    batches = itertools.islice(
      input_pipeline.train_batches(config, self.data, epoch, self.setup.num_local_devices),
      skip,
      None,
    )
    with bar:
      for images, labels in batches:
        if config.stop_after_steps is not None and step >= config.stop_after_steps:
          raise errors.StopTraining()
        if self.stop.requested:
          self._save_and_stop(step, epoch, sums)
        metrics = self._train_step(step, epoch, images, labels)
        sums.loss += metrics["loss"]
        sums.accuracy += metrics["accuracy"]
        sums.max_shortfall = max(sums.max_shortfall, metrics.get("shortfall", 0.0))
        step += 1
        bar.update()
        if step % 20 == 0:
          bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if (
          config.checkpoint_every_steps
          and step % config.checkpoint_every_steps == 0
          and step % self.steps_per_epoch
        ):  # the epoch's end has its own checkpoint
          self.save(step, epoch - 1, sums.partial())
    return step

  def _save_and_stop(self, step: int, epoch: int, sums: _EpochSums) -> None:
    """A signal arrived: checkpoints the current step and raises Preempted."""
    if step == 0:
      raise errors.Preempted(
        f"stopped by {self.stop.name} before the first step (nothing to "
        "save); rerun the same command to start.",
        step,
        self.stop.signum,
      )
    if step != self.last_saved:
      self.save(step, epoch - 1, sums.partial())
    self.manager.wait_until_finished()
    raise errors.Preempted(
      f"stopped by {self.stop.name}: saved a checkpoint at step {step} (epoch {epoch}, "
      f"step {step - (epoch - 1) * self.steps_per_epoch} of {self.steps_per_epoch}); "
      "rerun the same command to resume.",
      step,
      self.stop.signum,
    )

  def _train_step(self, step: int, epoch: int, images, labels) -> dict:
    """Runs global step ``step + 1``; its reduced metrics as floats.

    Raises:
      DivergedError: the train loss is not finite.
    """
    train_step = self.steps.mask if step in self.steps.pruning_steps else self.steps.frozen
    self.replicated, metrics = train_step(self.replicated, *self.batch_arrays(images, labels))
    # Fetching the metrics blocks on this step: with several (simulated) CPU
    # devices, collectives stall when ~100 steps are queued unawaited.
    metrics = {key: self.placement.scalar(value) for key, value in jax.device_get(metrics).items()}
    if not math.isfinite(metrics["loss"]):
      kept = checkpoints.kept_checkpoint(self.workdir, self.last_saved)
      raise errors.DivergedError(
        f"training diverged: the train loss is {metrics['loss']} at step "
        f"{step + 1} (epoch {epoch}); {kept}",
        step + 1,
      )
    return metrics

  def _end_epoch(self, epoch: int, step: int, sums: _EpochSums) -> None:
    """After the last step of ``epoch``: checks the state, evaluates, appends the
    epoch's metrics line, checkpoints, logs."""
    config = self.config
    train_time = sums.time_before + time.perf_counter() - sums.start
    host_state = self.host_state = self.placement.get_state(self.replicated)
    checkpoints.check_finite_state(host_state, step, self.workdir, self.last_saved)
    if self.has_pruning and int(dp.get_stats(host_state.opt_state).skipped_updates):
      raise RuntimeError(  # the loop ran a pruning step without its mask update
        f"{int(dp.get_stats(host_state.opt_state).skipped_updates)} pruning step(s) ran "
        "with skip_mask_update=True: the transformation runs other steps than it exposes."
      )
    eval_metrics = steps_lib.evaluate(
      self.steps.eval,
      self.replicated,
      config,
      self.data,
      self.setup.num_local_devices,
      self.placement,
    )
    masks = steps_lib.masks_of(config, host_state)
    away_after, back_after = steps_lib.drop_totals(config, host_state)
    line = {
      "epoch": epoch,
      "step": step,
      "learning_rate": float(self.learning_rate(step - 1)),
      "train_loss": sums.loss / self.steps_per_epoch,
      "train_accuracy": sums.accuracy / self.steps_per_epoch,
      **eval_metrics,
      "sparsity": dp.sparsity(masks),
      "layer_sparsity": dp.layer_sparsity(masks),
      "dropped_away": away_after - sums.away_before,
      "dropped_back": back_after - sums.back_before,
      "max_shortfall": sums.max_shortfall,
      "train_time_s": train_time,
      "epoch_time_s": time.perf_counter() - sums.start + sums.time_before,
    }
    # Metrics first, then the checkpoint: if we die in between, the resume
    # restarts from the previous checkpoint and drops this line.
    if run_folder.is_writer():
      run_folder.append_metrics(self.workdir, line)
    self.save(step, epoch, np.zeros(len(checkpoints.PARTIAL_FIELDS)), host_state)
    logging.info(
      "epoch %d/%d: train loss %.4f, %stest error %.2f%%, sparsity %.2f%% (%.1fs)",
      epoch,
      config.num_epochs,
      line["train_loss"],
      f"val error {100 * line['val_error']:.2f}%, " if "val_error" in line else "",
      100 * line["test_error"],
      100 * line["sparsity"],
      line["epoch_time_s"],
    )
