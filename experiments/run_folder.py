"""The run folder: its files, and the checks that keep a run's results safe.

A run folder holds ``config.json`` (:data:`CONFIG_FILE`, the config it was started
with), ``run.json`` (:data:`RUN_FILE`, device count and resumes), ``metrics.jsonl`` and,
at the end, ``summary.json``, all written atomically by process 0 (:func:`is_writer`);
the checkpoints are :mod:`experiments.checkpoints`. A rerun whose config changes results
(:func:`check_config_change`) or the device count (:func:`check_devices`) is refused;
:class:`WorkdirLock` refuses a second run on the same folder; :class:`StopSignals` turns
SIGTERM and Ctrl-C into a checkpoint and a clean stop.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from experiments import config_checks, errors, report

METRICS_FILE = report.METRICS_FILE
SUMMARY_FILE = report.SUMMARY_FILE
CONFIG_FILE = "config.json"
RUN_FILE = "run.json"


def is_writer() -> bool:
  """Whether this process writes the run folder's files (process 0 does)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """A barrier over the processes of a multi-host run (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def _json_safe(value: Any) -> Any:
  """``value`` with every non-finite float replaced by ``None`` (JSON ``null``)."""
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  return value


def dumps(value: Any, **kwargs) -> str:
  """Strict JSON (RFC 8259): a non-finite float is written as ``null``, never ``NaN``."""
  return json.dumps(_json_safe(value), allow_nan=False, default=str, **kwargs)


def write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def append_metrics(workdir: Path, line: dict) -> None:
  with open(workdir / METRICS_FILE, "a") as f:
    f.write(dumps(line) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_json(path: Path) -> Optional[dict]:
  """A JSON file of the run folder, or ``None`` if it does not exist."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise errors.RunFolderError(
      f"cannot read {path} ({error}); repair or remove it, or start over with --fresh."
    ) from error


def read_metrics_for_resume(workdir: Path) -> list[dict]:
  """The lines of ``metrics.jsonl``; a torn last line (a write cut short by a crash) is
  dropped with a warning.

  Raises:
    RunFolderError: for an unreadable line that is not the last one.
  """
  path = workdir / METRICS_FILE
  if not path.exists():
    return []
  lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
  parsed = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      parsed.append(json.loads(line))
    except ValueError as error:
      if any(rest.strip() for rest in lines[number:]):
        raise errors.RunFolderError(
          f"{path} line {number} is not JSON ({error}); remove that line or start over "
          "with --fresh."
        ) from error
      logging.warning(
        "%s: dropped its torn last line %r (a write cut short); the epochs "
        "after the checkpoint are redone.",
        path,
        line[:40],
      )
  return parsed


def truncate_metrics(workdir: Path, last_epoch: int) -> None:
  """Drops lines of epochs after the checkpoint we resume from (they will be redone)."""
  lines = [line for line in read_metrics_for_resume(workdir) if line["epoch"] <= last_epoch]
  write_atomic(workdir / METRICS_FILE, "".join(dumps(line) + "\n" for line in lines))


def saved_config(workdir: Path) -> Optional[dict]:
  """The config a run folder was started with; a field its config.json lacks takes the
  value the run used: its default, or ``config_checks.MISSING_FIELD_VALUES``. ``None``
  for a new folder."""
  saved = read_json(workdir / CONFIG_FILE)
  if saved is None:
    return None
  from experiments.configs import default as default_config  # pylint: disable=g-import-not-at-top

  return {**default_config.get_config().to_dict(), **config_checks.MISSING_FIELD_VALUES, **saved}


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """``(affecting, neutral)``: the fields of ``config`` that differ from a saved config,
  as ``{field: (old, new)}``, split into those that change results and those in
  ``config_checks.RUN_CONTROL_FIELDS``. Fields no longer in the configs are ignored."""
  new = config.to_dict()
  affecting, neutral = {}, {}
  for key in sorted(new):
    old_value, new_value = saved.get(key), new[key]
    if json.dumps(old_value, default=str) == json.dumps(new_value, default=str):
      continue
    changed = neutral if key in config_checks.RUN_CONTROL_FIELDS else affecting
    changed[key] = (old_value, new_value)
  return affecting, neutral


def check_config_change(workdir: Path, config: ml_collections.ConfigDict) -> dict:
  """Refuses to continue a run folder with a config that changes results; reads only.

  Returns:
    The changed result-neutral fields, ``{field: (old, new)}`` (``{}`` for a new folder).

  Raises:
    ConfigError: one line naming every changed field with its old and new value.
  """
  saved = saved_config(workdir)
  if saved is None:
    return {}
  affecting, neutral = config_changes(saved, config)
  for field in config_checks.STATE_LAYOUT_FIELDS:
    if field in affecting:
      before = affecting[field][0]
      raise errors.ConfigError(
        f"{field}={config[field]!r} but the checkpoints in {workdir} were written with "
        f"{field}={before!r}; resume with --config.{field}={before!r} (results are "
        "identical either way), use a new workdir, or start over with --fresh."
      )
  if affecting:
    changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in affecting.items())
    raise errors.ConfigError(
      f"{workdir} holds a run started with another config, and these fields change its "
      f"results: {changes}. Rerun with the old values to resume, use another workdir, "
      "or start over with --fresh (moves the old folder aside)."
    )
  return neutral


def check_devices(workdir: Path, run_info: Optional[dict], device_count: int) -> None:
  """Refuses to continue a run on another number of devices (not bitwise the same)."""
  before = (run_info or {}).get("device_count")
  if before is not None and before != device_count:
    raise errors.ConfigError(
      f"{workdir} was trained data-parallel on {before} device(s) and this run would use "
      f"{device_count}; the results differ in the last bits with the device count, so it "
      f"cannot continue: use {before} device(s) (num_devices, host_devices), another "
      "workdir, or start over with --fresh."
    )


def write_run_files(
  workdir: Path,
  config,
  run_info: Optional[dict],
  device_count: int,
  start_step: int,
  neutral_changes: dict,
) -> dict:
  """Writes ``config.json`` (first start only) and adds this start to ``run.json``."""
  if not (workdir / CONFIG_FILE).exists():
    write_atomic(workdir / CONFIG_FILE, dumps(config.to_dict(), indent=2))
  info = run_info or {
    "device_count": device_count,
    "process_count": jax.process_count(),
    "starts": [],
  }
  info["starts"].append(
    {
      "step": start_step,
      "changed": {key: [old, new] for key, (old, new) in neutral_changes.items()},
    }
  )
  write_atomic(workdir / RUN_FILE, dumps(info, indent=2))
  return info


def move_aside(path: Path, destination: Path) -> Path:
  """Renames ``path`` to ``destination``, or ``destination.N`` if that exists."""
  target = destination
  for n in itertools.count(1):
    if not target.exists():
      break
    target = destination.with_name(f"{destination.name}.{n}")
  target.parent.mkdir(parents=True, exist_ok=True)
  os.replace(path, target)
  return target


def check_writable(folder: Path) -> None:
  """Creates ``folder`` if needed and writes a file into it, or raises RunFolderError."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".writable-{jax.process_index()}-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as error:
    raise errors.RunFolderError(
      f"cannot write to {folder}: {error.strerror or error}; make it writable or use "
      "another workdir."
    ) from error


class StopSignals:
  """While entered, SIGTERM and SIGINT (Ctrl-C) set ``signum`` instead of stopping the
  process: the loop saves the current step and raises :class:`~experiments.errors.Preempted`.

  Entered before anything compiles: a ``KeyboardInterrupt`` raised while XLA compiles
  can crash the process. Only installed in the main thread of a single-process run;
  elsewhere the signals keep their default action (with several processes, all would
  have to stop at one step).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return "Ctrl-C (SIGINT)" if self.signum == signal.SIGINT else "SIGTERM"

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      print(
        f"\n{signal.Signals(signum).name} received: stopping at the next step, after "
        "saving a checkpoint.",
        file=sys.stderr,
        flush=True,
      )
    self.signum = signum

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


class WorkdirLock:
  """An exclusive lock on a run folder (``flock`` on ``<workdir>/run.lock``), held for
  the whole run, so that a second process on the same folder is refused instead of
  writing over the first one's checkpoints and metrics. The kernel releases it when
  the process ends, however it ends: a killed run leaves no stale lock."""

  FILE = "run.lock"

  def __init__(self, workdir: Path):
    self.workdir = workdir
    self._file = None

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top (POSIX only)

    self.workdir.mkdir(parents=True, exist_ok=True)
    handle = open(self.workdir / self.FILE, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise errors.RunFolderError(
        f"{self.workdir} is in use by {holder}; wait for it to finish, stop it, or use "
        "another --workdir."
      ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    self._file = handle

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # closing the descriptor releases the lock
      self._file = None
