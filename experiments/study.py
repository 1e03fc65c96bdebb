r"""Runs a grid of experiments, resumably, and writes its report.

  python -m experiments.study --study experiments/studies/lenet300_fmnist.py
  python -m experiments.study --study ... --report_only   # regenerate from run folders

A study file defines ``get_study()`` returning a dict with ``name``, ``config`` (a
config file), ``overrides`` (applied to every run), and either ``methods`` x
``targets`` x ``seeds`` or an explicit ``cells`` list of ``{"name": ..., **overrides}``
(each run for every seed). Each run lives in ``ROOT/<cell>_seed<k>``; a run with a
``summary.json`` is done and skipped, an interrupted one resumes from its checkpoint.
The report (``docs/studies/<name>.md`` and its plots) is a pure function of the run
folders, so it can be regenerated at any time, also while the grid is running.

Selection protocol: every run holds out the last training images as a validation split
(``config.validation_examples``); cells are compared, and the best settings chosen, on
the mean validation error, and the test error of the chosen settings is reported next
to it, never used to choose. Runs without a validation split (``validation_examples=0``,
or a saved config without the field) are kept apart: a study made only of them is
compared on test error and says so in every heading; in a study that has validated runs
they are listed and left out of the numbers.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags, logging

from experiments.study_report import DIVERGED, REJECTED, study_cells, write_report

FLAGS = flags.FLAGS
flags.DEFINE_string("study", None, "Path of a study file defining get_study().")
flags.DEFINE_string(
  "root", None, 'Run folders go here (default: the study\'s "root", else runs/studies/<name>).'
)
flags.DEFINE_string("report_dir", "docs/studies", "Where the Markdown report and plots go.")
flags.DEFINE_string(
  "idx_dir", None, "IDX folder for MNIST-like data (default: fetched Fashion-MNIST)."
)
flags.DEFINE_bool("report_only", False, "Only regenerate the report from the run folders.")
flags.DEFINE_bool(
  "allow_fewer_runs",
  False,
  "Replace a report even if it counts more finished runs than the run folders.",
)
flags.DEFINE_integer("max_runs", None, "Stop after starting this many runs (for time-boxing).")
flags.DEFINE_float(
  "time_budget_s", None, "Start no new run after this many seconds (for time-boxing)."
)
flags.DEFINE_list(
  "cells",
  None,
  "Run only the runs whose name (e.g. 'gradual_t0.99_seed2') matches one of these "
  "fnmatch patterns, pattern by pattern in the order given (to run the cells that "
  "matter first). The report always covers every finished run.",
)
flags.DEFINE_string(
  "shard",
  None,
  "'I/N': run only cells I, I+N, I+2N, ... of the grid, so that N processes (on one "
  "accelerator or several machines) share a grid; each cell has its own run folder.",
)


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  if spec is None or spec.loader is None:
    raise ValueError(f"cannot load {path!r} as a Python file.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_config(
  study: dict[str, Any], cell: dict[str, Any], idx_dir: str | None, root: Path | None = None
):
  """The config of one run. String overrides may name ``{root}`` (the study's run folder
  root) and ``{seed}`` (the run's seed), e.g. ``teacher_workdir="{root}/dense_seed{seed}"``:
  a cell distilled from the same seed's dense cell of the study."""
  config = load_module(study["config"]).get_config()
  overrides = {
    **study.get("overrides", {}),
    **{k: v for k, v in cell.items() if k not in ("name", "run")},
  }
  for key, value in overrides.items():
    if isinstance(value, str) and ("{root}" in value or "{seed}" in value):
      if root is None:
        raise ValueError(f"study override {key}={value!r} names {{root}}: pass the run root.")
      overrides[key] = value.replace("{root}", str(root)).replace("{seed}", str(cell["seed"]))
  if idx_dir and config.get("dataset", overrides.get("dataset")) in ("mnist", "fashion_mnist"):
    overrides.setdefault("idx_dir", idx_dir)
  with config.unlocked():
    for key, value in overrides.items():
      if key not in config:
        raise ValueError(f"study override {key!r} is not a config field.")
      config[key] = value
  return config


def parse_shard(shard: str | None) -> tuple[int, int]:
  """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` -> ``(0, 1)``."""
  if shard is None:
    return 0, 1
  try:
    index, count = (int(part) for part in shard.split("/"))
  except ValueError:
    raise ValueError(f"--shard must look like 'I/N' (e.g. '0/4'), got {shard!r}.") from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"--shard {shard!r} needs N >= 1 and 0 <= I < N.")
  return index, count


def select_cells(cells: list[dict[str, Any]], patterns: list[str] | None) -> list[dict[str, Any]]:
  """Runs matching ``patterns`` (fnmatch on the run name), pattern by pattern.

  ``None`` keeps the grid as it is. A pattern that matches no run raises ``ValueError``
  so that a typo does not silently run nothing.
  """
  if patterns is None:
    return cells
  selected, seen = [], set()
  for pattern in patterns:
    matches = [cell for cell in cells if fnmatch.fnmatchcase(cell["run"], pattern)]
    if not matches:
      raise ValueError(f"--cells pattern {pattern!r} matches no run of this study.")
    for cell in matches:
      if cell["run"] not in seen:
        seen.add(cell["run"])
        selected.append(cell)
  return selected


def shard_cells(cells: list[dict[str, Any]], shard: tuple[int, int]) -> list[dict[str, Any]]:
  """Cells ``I, I+N, I+2N, ...``: shards are disjoint, cover the grid and stay balanced."""
  index, count = shard
  return cells[index::count]


def run_grid(
  study: dict[str, Any],
  root: Path,
  idx_dir: str | None,
  max_runs: int | None,
  shard: tuple[int, int] = (0, 1),
  time_budget_s: float | None = None,
  cell_patterns: list[str] | None = None,
):
  import jax  # imported here: --report_only needs no JAX start-up

  import droppruning_jax as dp
  from experiments import errors, train

  grid_start = time.time()
  started = 0
  cells = shard_cells(select_cells(study_cells(study), cell_patterns), shard)
  for cell in cells:
    workdir = root / cell["run"]
    if any((workdir / name).exists() for name in ("summary.json", REJECTED, DIVERGED)):
      continue
    if max_runs is not None and started >= max_runs:
      logging.info("max_runs reached; rerun to continue.")
      return
    if time_budget_s is not None and time.time() - grid_start > time_budget_s:
      logging.info("time_budget_s reached; rerun to continue.")
      return
    started += 1
    start = time.time()
    logging.info("run %s", cell["run"])
    try:
      train.train_and_evaluate(make_config(study, cell, idx_dir, root), workdir)
    except errors.Preempted as error:
      # SIGTERM or Ctrl-C: the run saved its current step; stop the grid, a rerun resumes it.
      print(error, file=sys.stderr)
      sys.exit(128 + error.signum)
    except errors.ConfigError as error:
      # The library rejects an unreachable (p, q, schedule) before the first step:
      # a result of the sweep, not a failure of the grid.
      if not isinstance(error.__cause__, dp.UnreachableScheduleError):
        raise
      workdir.mkdir(parents=True, exist_ok=True)
      (workdir / REJECTED).write_text(str(error))
      logging.warning("run %s rejected: %s", cell["run"], error)
      continue
    except errors.DivergedError as error:
      # A non-finite loss is a result of the run's setting: recorded (the report lists
      # it), and the grid goes on; --fresh on that folder retries it by hand.
      (workdir / DIVERGED).write_text(str(error))
      logging.warning("run %s diverged: %s", cell["run"], error)
      continue
    logging.info("run %s done in %.0f s", cell["run"], time.time() - start)
    # Every run compiles new programs; without this a long grid in one process ran
    # out of LLVM code memory after ~60 runs ("Unable to allocate section memory").
    jax.clear_caches()


def main(argv):
  del argv
  if FLAGS.study is None:
    raise app.UsageError("--study is required.")
  study = load_module(FLAGS.study).get_study()
  # A study may share the run folders of another (``"root"``): the runs that both define
  # (same cell, same seed, same settings) are run once.
  root = Path(FLAGS.root or study.get("root") or f"runs/studies/{study['name']}")
  shard = parse_shard(FLAGS.shard)
  select_cells(study_cells(study), FLAGS.cells)  # bad patterns fail before any run
  if not FLAGS.report_only:
    idx_dir = FLAGS.idx_dir
    if idx_dir is None and study.get("overrides", {}).get("dataset") == "fashion_mnist":
      from experiments import data

      idx_dir = data.fetch_fashion_mnist()
    run_grid(study, root, idx_dir, FLAGS.max_runs, shard, FLAGS.time_budget_s, FLAGS.cells)
    if shard[1] > 1:
      # Shards of one grid run side by side; one --report_only call writes the report.
      print(f"shard {FLAGS.shard} done; write the report with --report_only.")
      return
  if FLAGS.report_only and not root.exists():
    # Nothing ran here (e.g. a fresh clone): keep whatever report is committed.
    print(f"no run folders at {root}; report of {study['name']!r} left as it is.")
    return
  path = write_report(study, root, Path(FLAGS.report_dir), FLAGS.allow_fewer_runs)
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
