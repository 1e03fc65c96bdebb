"""The run's Orbax checkpoints: what one holds, saving, and restoring on resume.

A checkpoint (:func:`checkpoint_item`) holds the train state after a global step, the
finished epochs and the running sums of the unfinished one (:data:`PARTIAL_FIELDS`), in
``<workdir>/checkpoints/<step>`` (the last :data:`CHECKPOINTS_TO_KEEP` are kept). On
resume :func:`restore_latest` takes the newest one that restores and moves broken ones
aside; :func:`check_finite_state` stops a diverged run before it saves non-finite
weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from experiments import errors, run_folder

if TYPE_CHECKING:
  from experiments.steps import TrainState

PyTree = Any

CHECKPOINT_DIR = "checkpoints"
BROKEN_CHECKPOINT_DIR = "broken_checkpoints"
CHECKPOINTS_TO_KEEP = 2
# Running sums of the unfinished epoch, saved with a mid-epoch checkpoint so that the
# epoch's metrics line comes out the same after a resume.
PARTIAL_FIELDS = ("loss", "accuracy", "max_shortfall", "away_before", "back_before", "train_time_s")


def checkpoint_manager(workdir: Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    (workdir / CHECKPOINT_DIR).resolve(),
    options=ocp.CheckpointManagerOptions(max_to_keep=CHECKPOINTS_TO_KEEP, create=True),
  )


def checkpoint_item(state: TrainState, step: int, epoch: int, partial) -> dict:
  """What a checkpoint holds: the state after ``step`` global steps, the finished epochs,
  and the running sums of the unfinished epoch (:data:`PARTIAL_FIELDS`)."""
  return {
    "state": state,
    "step": np.array(step, np.int64),
    "epoch": np.array(epoch, np.int64),
    "partial": np.asarray(partial, np.float64),
  }


def _first_line(error: BaseException, limit: int = 160) -> str:
  text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
  return text if len(text) <= limit else text[: limit - 3] + "..."


def restore_latest(
  manager: ocp.CheckpointManager, workdir: Path, template: dict
) -> tuple[Optional[dict], ocp.CheckpointManager]:
  """The newest checkpoint that restores into ``template``, newest first.

  A checkpoint that does not restore at all (truncated or missing files) is moved to
  ``workdir/broken_checkpoints/`` and the previous one is tried; one warning line
  says so. A checkpoint that restores but into another structure (written by another
  version of the code) is an error: nothing is moved.

  Returns:
    ``(checkpoint or None, manager)``; the manager is a new one if any was moved.
  """
  broken = []
  restored = None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(template))
      break
    except Exception as error:  # pylint: disable=broad-except  # orbax raises many types
      try:
        manager.restore(step, args=ocp.args.StandardRestore())
      except Exception:  # pylint: disable=broad-except
        broken.append((step, error))
        continue
      raise errors.RunFolderError(
        f"checkpoint {step} in {workdir / CHECKPOINT_DIR} is readable but holds another "
        f"state structure than this code builds ({_first_line(error)}); finish the run "
        "with the version that started it, or start over with --fresh."
      ) from error
  if not broken:
    return restored, manager
  manager.close()
  moved = []
  if run_folder.is_writer():
    for step, _ in broken:
      moved.append(
        str(
          run_folder.move_aside(
            workdir / CHECKPOINT_DIR / str(step), workdir / BROKEN_CHECKPOINT_DIR / str(step)
          )
        )
      )
  run_folder.sync("broken-checkpoints")
  fallback = (
    f"resuming from checkpoint {int(restored['step'])}"
    if restored is not None
    else "no checkpoint restores, starting from step 0"
  )
  logging.warning(
    "checkpoint(s) %s in %s do not restore (%s); moved to %s; %s.",
    [step for step, _ in broken],
    workdir / CHECKPOINT_DIR,
    _first_line(broken[0][1]),
    moved or workdir / BROKEN_CHECKPOINT_DIR,
    fallback,
  )
  return restored, checkpoint_manager(workdir)


def restore_checkpoint(workdir: str | Path, target: Optional[PyTree] = None) -> Optional[dict]:
  """The latest checkpoint of a run folder, or ``None`` if there is none.

  Args:
    workdir: the run folder.
    target: a tree of the saved structure (``{"state": TrainState, "step": ...,
      "epoch": ..., "partial": ...}``) to restore into; without it the raw tree comes
      back (named tuples as dicts).

  Returns:
    ``{"state": ..., "step": int, "epoch": int, "partial": ...}`` with NumPy leaves:
    the state after ``step`` global steps, of which ``epoch`` whole epochs.
  """
  manager = checkpoint_manager(Path(workdir))
  try:
    step = manager.latest_step()
    if step is None:
      return None
    args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    return manager.restore(step, args=args)
  finally:
    manager.close()


def check_finite_state(state: TrainState, step: int, workdir: Path, last_saved: int) -> None:
  """Raises DivergedError if a parameter or batch statistic is not finite."""
  for leaf in jax.tree.leaves((state.params, state.batch_stats)):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.all(np.isfinite(leaf)):
      raise errors.DivergedError(
        f"training diverged: non-finite parameters after step {step}; "
        f"{kept_checkpoint(workdir, last_saved)}",
        step,
      )


def kept_checkpoint(workdir: Path, last_saved: int) -> str:
  """The end of a divergence message: the checkpoint kept, and what to do next."""
  if last_saved:
    return (
      f"the last good checkpoint (step {last_saved}) is kept in "
      f"{workdir / CHECKPOINT_DIR}; lower the learning rate and start over with --fresh."
    )
  return "no checkpoint was written; lower the learning rate and start over with --fresh."
