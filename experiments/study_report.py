"""A study's report: the rows aggregated from its run folders (mean and spread over
seeds, validation and test), the differences between cells (unpaired and paired by seed),
the Markdown report and its plots.

``python -m experiments.study --report_only`` writes it; it is a pure function of the run
folders. Selection protocol: see :mod:`experiments.study`.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np

# Written instead of a summary when the library rejects a cell's configuration.
REJECTED = "rejected.txt"
# Written instead of a summary when a run's train loss became non-finite: a result of its
# setting (the grid goes on), listed in the report and left out of its cell's statistics.
DIVERGED = "diverged.txt"


def study_cells(study: dict[str, Any]) -> list[dict[str, Any]]:
  """The grid as a list of cells ``{"name", "seed", "run", **overrides}``, seed by seed."""
  cells = []
  seeds = study.get("seeds", [0])
  if "cells" in study:
    base = study["cells"]
  else:
    base = []
    for method in study["methods"]:
      if method == "dense":
        base.append({"name": "dense", "method": "dense"})
        continue
      for target in study["targets"]:
        base.append({"name": f"{method}_t{target:g}", "method": method, "target_sparsity": target})
  # Seed-major: a time-boxed or sharded grid covers every cell once before it
  # repeats seeds.
  for seed in seeds:
    for cell in base:
      cells.append({**cell, "seed": seed, "run": f"{cell['name']}_seed{seed}"})
  return cells


def percent(fraction: float) -> str:
  """``0.99`` -> ``"99%"``, ``0.992`` -> ``"99.2%"``: as many digits as the target has."""
  return f"{round(fraction * 100, 4):g}%"


def series_name(cell_name: str) -> str:
  """``"drop_t0.98"`` -> ``"drop"``, ``"drop_t0.98_e200"`` -> ``"drop_e200"``: the name
  without its ``_t<target>`` part; names without one stay whole."""
  return re.sub(r"_t[0-9.]*[0-9](?=_|$)", "", cell_name)


def _mean_std(values: list[float]) -> tuple[float, float]:
  if not values:
    return math.nan, math.nan
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


VALIDATION = "val"
TEST = "test"
# Row keys of each split's mean, std and per-seed errors (in percent). The test keys
# have no split prefix: they are the keys of the reports of studies without a validation
# split, which therefore still read.
_STAT_KEYS = {
  VALIDATION: ("val_error_mean", "val_error_std", "val_errors"),
  TEST: ("error_mean", "error_std", "errors"),
}
SPLIT_WORDS = {VALIDATION: "validation error", TEST: "test error"}


def has_validation(row: dict[str, Any]) -> bool:
  """Whether a row (or a run's summary) carries validation errors."""
  return row.get("val_error_mean", row.get("val_error")) is not None


def selection_split(rows: list[dict[str, Any]]) -> str:
  """The split to compare and choose on: :data:`VALIDATION` if any finished row has
  validation errors (rows without are then left out of the selection), else
  :data:`TEST` (runs without a validation split, to be labelled as such)."""
  return VALIDATION if any(has_validation(r) for r in rows if "rejected" not in r) else TEST


def split_stats(row: dict[str, Any], split: str) -> tuple[float, float]:
  """``(mean, std)`` of a row's error on ``split`` in percent."""
  mean_key, std_key, _ = _STAT_KEYS[split]
  return row[mean_key], row[std_key]


def split_errors(row: dict[str, Any], split: str) -> list[float]:
  """A row's per-seed errors on ``split`` in percent, in the order of its ``seed_list``."""
  return row[_STAT_KEYS[split][2]]


def aggregate(study: dict[str, Any], root: Path) -> list[dict[str, Any]]:
  """One row per cell: mean/std over the finished seeds.

  A row holds the test error (``error_mean``, ``error_std``, ``errors``) and, for runs
  with a validation split, the validation error (``val_error_mean``, ``val_error_std``,
  ``val_errors``; ``None`` without). A cell whose runs mix the two kinds aggregates the
  runs with a validation split only and names the others in ``excluded_runs``.
  """
  by_cell: dict[str, list[dict]] = collections.defaultdict(list)
  diverged: dict[str, list[int]] = collections.defaultdict(list)
  for cell, seed, _, _ in diverged_runs(study, root):
    diverged[cell].append(seed)
  cell_of = {}
  for cell in study_cells(study):  # seed by seed: each cell's runs in seed order
    path = root / cell["run"] / "summary.json"
    cell_of[cell["name"]] = cell
    if path.exists():
      by_cell[cell["name"]].append({**json.loads(path.read_text()), "_seed": cell["seed"]})
  rows = []
  for name, cell in cell_of.items():
    runs = by_cell.get(name, [])
    rejected = root / f"{name}_seed{cell['seed']}" / REJECTED
    if not runs and rejected.exists():
      rows.append({"cell": name, "rejected": rejected.read_text().split(";")[0]})
      continue
    if not runs:
      continue
    excluded = []
    if any(has_validation(r) for r in runs):
      excluded = [r["name"] for r in runs if not has_validation(r)]
      runs = [r for r in runs if has_validation(r)]
    validated = has_validation(runs[0])
    val_mean, val_std = (
      _mean_std([100 * r["val_error"] for r in runs]) if validated else (None,) * 2
    )
    error_mean, error_std = _mean_std([100 * r["test_error"] for r in runs])
    fitted = all(r.get("train_accuracy") is not None for r in runs)
    train_errors = [100 * (1 - r["train_accuracy"]) for r in runs] if fitted else None
    compression_mean, _ = _mean_std([r["compression"] for r in runs])
    layers = collections.defaultdict(list)
    for r in runs:
      for layer, value in r["layer_sparsity"].items():
        layers[layer].append(value)
    rows.append(
      {
        "cell": name,
        # The curve / comparison a cell belongs to: its name without the target suffix
        # (the method in a methods x targets grid; e.g. "drop_cosine" for explicit cells).
        "series": series_name(name),
        "method": runs[0]["method"],
        "target": runs[0].get("target_sparsity"),
        "overrides": {k: v for k, v in cell.items() if k not in ("name", "seed", "run")},
        "seeds": len(runs),
        # Held-out images per run (0: no validation split).
        "validation_examples": sorted({r.get("validation_examples") or 0 for r in runs}),
        "val_error_mean": val_mean,
        "val_error_std": val_std,
        "val_errors": [100 * r["val_error"] for r in runs] if validated else None,
        # The test error (the key names predate the validation split).
        "error_mean": error_mean,
        "error_std": error_std,
        "errors": [100 * r["test_error"] for r in runs],
        # The training error over the last epoch's batches (the running mean the train
        # steps saw): beside the validation error it tells an underfit model from an
        # overfit one. None where a run's summary predates it.
        "train_error_mean": statistics.fmean(train_errors) if fitted else None,
        "train_errors": train_errors,
        # The seed of each entry of the per-run lists, for differences paired by seed.
        "seed_list": [r["_seed"] for r in runs],
        # Seeds whose run diverged (DIVERGED): not in the lists above.
        **({"diverged_seeds": diverged[name]} if diverged[name] else {}),
        "excluded_runs": excluded,
        "compression": compression_mean,
        "sparsity": statistics.fmean(r["sparsity"] for r in runs),
        "layer_sparsity": {k: statistics.fmean(v) for k, v in layers.items()},
        "wall_time_s": sum(r["wall_time_s"] for r in runs),
        # Per run, in seed order: a grid may be shared between machines.
        "devices": [f"{r['platform']}:{r['device_kind']} x{r['device_count']}" for r in runs],
        "wall_times_s": [r["wall_time_s"] for r in runs],
      }
    )
  return rows


def row_series(row: dict[str, Any]) -> str:
  """The series a row belongs to (older reports: its method)."""
  return row.get("series", row["method"])


def difference_text(a: dict[str, Any] | None, b: dict[str, Any] | None, split: str) -> str:
  """``a - b`` in error points on ``split`` (:data:`VALIDATION` or :data:`TEST`),
  ``± standard error`` and ``*`` beyond 2 SE.

  The standard error is ``sqrt(s1^2/n1 + s2^2/n2)``; with 3 seeds this is a rough
  screen, not a test. Single-seed cells have no spread and are never starred.
  """
  if a is None or b is None:
    return "—"
  (a_mean, a_std), (b_mean, b_std) = split_stats(a, split), split_stats(b, split)
  diff = a_mean - b_mean
  if round(diff, 2) == 0:
    diff = 0.0  # no "-0.00" from rounding noise
  if min(a["seeds"], b["seeds"]) < 2:
    return f"{diff:+.2f} (1 seed)"
  se = math.sqrt(a_std**2 / a["seeds"] + b_std**2 / b["seeds"])
  star = "*" if se > 0 and abs(diff) > 2 * se else ""
  return f"{diff:+.2f} ± {se:.2f}{star}"


def paired_difference_text(a: dict[str, Any] | None, b: dict[str, Any] | None, split: str) -> str:
  """``a - b`` paired by seed on ``split``: the mean of the per-seed differences over the
  seeds both rows ran, ``± its standard error`` (``sd / sqrt(n)``) and ``*`` beyond 2 SE.

  Rows from reports without ``seed_list`` are paired by position when both have the same
  number of seeds (their runs are listed in seed order); otherwise ``—``.
  """
  if a is None or b is None:
    return "—"
  key = _STAT_KEYS[split][2]
  if a.get(key) is None or b.get(key) is None:
    return "—"
  if a.get("seed_list") and b.get("seed_list"):
    x, y = dict(zip(a["seed_list"], a[key])), dict(zip(b["seed_list"], b[key]))
    shared = sorted(set(x) & set(y))
    diffs = [x[s] - y[s] for s in shared]
  elif len(a[key]) == len(b[key]):
    diffs = [p - q for p, q in zip(a[key], b[key])]
  else:
    return "—"
  if len(diffs) < 2:
    return "—"
  mean = statistics.fmean(diffs)
  se = statistics.stdev(diffs) / math.sqrt(len(diffs))
  if round(mean, 2) == 0:
    mean = 0.0
  star = "*" if se > 0 and abs(mean) > 2 * se else ""
  return f"{mean:+.2f} ± {se:.2f}{star}"


def best_within(
  rows: list[dict[str, Any]],
  series: str,
  dense: dict[str, Any],
  tolerance_points: float,
  split: str,
) -> dict[str, Any] | None:
  """The row of ``series`` with the highest compression whose mean error on ``split``
  stays within ``tolerance_points`` of dense's, or ``None``.

  Choose with ``split=VALIDATION`` and report the chosen row's test error; only runs
  without a validation split are chosen with ``split=TEST`` (and say so).
  """
  limit = split_stats(dense, split)[0] + tolerance_points
  ok = [r for r in rows if row_series(r) == series and split_stats(r, split)[0] <= limit]
  return max(ok, key=lambda r: r["compression"], default=None)


def _percent_pair(row: dict[str, Any], split: str) -> str:
  mean, std = split_stats(row, split)
  return f"{mean:.2f} ± {std:.2f} %"


def no_validation_note(rows: list[dict[str, Any]]) -> list[str]:
  """Lines naming the finished rows without a validation split, when others have one
  (they are left out of every comparison), and the runs left out of mixed cells."""
  lines = []
  finished = [r for r in rows if "rejected" not in r]
  if selection_split(finished) == VALIDATION:
    legacy = [r["cell"] for r in finished if not has_validation(r)]
    if legacy:
      lines += [
        "",
        "Cells without a validation split (runs with `validation_examples=0`, or whose "
        "saved config lacks the field), left out of every comparison and plot: "
        + ", ".join(f"`{c}`" for c in legacy)
        + ". Rerun them to include them.",
      ]
  partial = [r for r in finished if r.get("excluded_runs")]
  if partial:
    lines += [
      "",
      "Runs without a validation split, left out of their cell's numbers: "
      + ", ".join(f"`{name}`" for r in partial for name in r["excluded_runs"])
      + ".",
    ]
  return lines


def comparison_lines(
  rows: list[dict[str, Any]], reference: str = "gradual", tolerance_points: float = 0.5
) -> list[str]:
  """Each method against ``reference`` at the same target, and the best compression
  whose error stays within ``tolerance_points`` of dense.

  Both compare the validation error (rows without a validation split are left out)
  and report the test error of the chosen settings once; rows that all lack a
  validation split are compared on test error, and the lines say so.

  A difference counts as beyond seed noise when it exceeds twice its standard error
  (``sqrt(s1^2/n1 + s2^2/n2)``); with 3 seeds this is a rough screen, not a test.
  """
  lines: list[str] = []
  split = selection_split(rows)
  if split == VALIDATION:
    rows = [r for r in rows if has_validation(r)]
  else:
    lines += [
      "",
      "No run here has a validation split (`validation_examples=0`, or a saved config "
      "without the field): the comparisons below are on the **test** error, so "
      "settings chosen from them are chosen on test.",
    ]
  by_key = {(row_series(r), r["target"]): r for r in rows}
  targets = sorted({r["target"] for r in rows if r["target"] is not None})
  methods = [m for m in dict.fromkeys(row_series(r) for r in rows) if m not in ("dense", reference)]
  if any((reference, t) in by_key for t in targets) and methods:
    lines += [
      "",
      f"{SPLIT_WORDS[split].capitalize()} difference against `{reference}` at the same "
      "target (percentage points, negative = better; * = beyond 2 standard errors):",
      "",
      "| method | " + " | ".join(percent(t) for t in targets) + " |",
      "|---|" + "---|" * len(targets),
    ]
    for method in methods:
      cells = [
        difference_text(by_key.get((method, t)), by_key.get((reference, t)), split) for t in targets
      ]
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
  dense = by_key.get(("dense", None))
  if dense is not None:
    if split == VALIDATION:
      lines += [
        "",
        f"Highest compression with validation error within {tolerance_points} points of "
        f"dense (validation {_percent_pair(dense, VALIDATION)}, test "
        f"{_percent_pair(dense, TEST)}), chosen on validation; the test error of the "
        "chosen setting is reported once:",
        "",
      ]
    else:
      lines += [
        "",
        f"Highest compression with test error within {tolerance_points} points of "
        f"dense ({dense['error_mean']:.2f} %):",
        "",
      ]
    for method in dict.fromkeys(row_series(r) for r in rows):
      if method == "dense":
        continue
      best = best_within(rows, method, dense, tolerance_points, split)
      if best is None:
        chosen = "none of the targets"
      elif split == VALIDATION:
        chosen = (
          f"{best['compression']:.1f}x ({percent(best['target'])}; validation "
          f"{_percent_pair(best, VALIDATION)}; test {_percent_pair(best, TEST)})"
        )
      else:
        chosen = (
          f"{best['compression']:.1f}x ({percent(best['target'])}, "
          f"{best['error_mean']:.2f} ± {best['error_std']:.2f} %)"
        )
      lines.append(f"- `{method}`: {chosen}")
  return lines


def markdown_report(
  study: dict[str, Any],
  rows: list[dict[str, Any]],
  plot: Path | None,
  layers_plot: Path | None = None,
  diverged: list[tuple[str, int, str, str]] | tuple = (),
  cells_plot: Path | None = None,
) -> str:
  lines = [
    f"# Study `{study['name']}`",
    "",
    f"Generated by `python -m experiments.study --study ...` from the run folders; "
    f"config `{study['config']}` with overrides `{json.dumps(study.get('overrides', {}))}`.",
    "",
  ]
  rejected = [r for r in rows if "rejected" in r]
  rows = [r for r in rows if "rejected" not in r]
  if not rows:
    return "\n".join(lines + ["No finished runs yet.", ""])
  split = selection_split(rows)
  if split == VALIDATION:
    counts = sorted({n for r in rows if has_validation(r) for n in r["validation_examples"]})
    lines += [
      f"Protocol: every run holds out the last {' or '.join(f'{n:,}' for n in counts)} "
      "images of the training split as a validation split (never trained on). Cells "
      "are compared and settings chosen on the **validation** error; the **test** "
      "error is reported next to it, never used to choose.",
      "",
    ]
  else:
    lines += [
      "Protocol: **no validation split** (`validation_examples=0`, or a saved config "
      "without the field): every number and comparison below is on the test "
      "error.",
      "",
    ]
  per_device = collections.defaultdict(lambda: [0, 0.0])
  for r in rows:
    for device, seconds in zip(r["devices"], r["wall_times_s"]):
      per_device[device][0] += 1
      per_device[device][1] += seconds
  compute = "; ".join(
    f"{count} runs, {seconds / 60:.1f} min on {device}"
    for device, (count, seconds) in sorted(per_device.items())
  )
  lines += [
    f"Finished runs: {sum(r['seeds'] for r in rows)}; compute (training+evaluation): {compute}.",
    "",
  ]
  if len(per_device) > 1:
    lines += [
      "Runs of one cell on different devices differ in floating-point rounding, not "
      "in the protocol (same config, seeds and data order).",
      "",
    ]
  layer_names = list(rows[0]["layer_sparsity"])
  # Studies without any validation split get no validation column (the protocol line
  # says why); otherwise a cell without one says "no split".
  columns = ["cell", "method", "target", "seeds"]
  if split == VALIDATION:
    columns.append("validation error % (mean ± std)")
  columns.append("test error % (mean ± std)")
  fitted = any(r.get("train_error_mean") is not None for r in rows)
  if fitted:
    columns.append("training error % (last epoch)")
  columns += ["compression", "sparsity", *layer_names]
  lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    target = "—" if r["target"] is None else percent(r["target"])
    cells = [r["cell"], r["method"], target, str(r["seeds"])]
    if split == VALIDATION:
      cells.append(
        f"{r['val_error_mean']:.2f} ± {r['val_error_std']:.2f}" if has_validation(r) else "no split"
      )
    cells.append(f"{r['error_mean']:.2f} ± {r['error_std']:.2f}")
    if fitted:
      train = r.get("train_error_mean")
      cells.append("—" if train is None else f"{train:.2f}")
    cells += [
      f"{r['compression']:.1f}x",
      f"{r['sparsity']:.2%}",
      *(f"{r['layer_sparsity'].get(n, 0):.1%}" for n in layer_names),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += no_validation_note(rows)
  lines += comparison_lines(rows)
  if rejected:
    lines += [
      "",
      "Rejected by the library at construction (expected trajectory cannot follow the schedule):",
      "",
    ]
    lines += [f"- `{r['cell']}`: {r['rejected']}" for r in rejected]
  if diverged:
    lines += [
      "",
      "Diverged (the train loss became non-finite; no result, not in the statistics):",
      "",
    ]
    lines += [f"- `{run}`: {message}" for _, _, run, message in diverged]
  if plot is not None:
    lines += ["", f"![error vs compression]({plot.name})"]
  if cells_plot is not None:
    lines += ["", f"![error per cell]({cells_plot.name})"]
  if layers_plot is not None:
    lines += ["", f"![sparsity per layer]({layers_plot.name})"]
  return "\n".join(lines) + "\n"


def _finished_runs(rows: list[dict[str, Any]]) -> int:
  return sum(r["seeds"] for r in rows if "rejected" not in r)


def diverged_runs(study: dict[str, Any], root: Path) -> list[tuple[str, int, str, str]]:
  """``(cell, seed, run, message)`` of every run of the grid that diverged (``DIVERGED``
  in its folder), in grid order: what the rows' ``diverged_seeds`` and the report's list
  both read."""
  return [
    (cell["name"], cell["seed"], cell["run"], (root / cell["run"] / DIVERGED).read_text().strip())
    for cell in study_cells(study)
    if (root / cell["run"] / DIVERGED).exists()
  ]


def write_report(
  study: dict[str, Any], root: Path, report_dir: Path, allow_fewer_runs: bool = False
) -> Path:
  """Writes ``<name>.md``, ``<name>.json`` and the plot from the run folders.

  Raises:
    ValueError: if the existing report counts more finished runs than ``root`` holds
      (run folders missing on this machine) and ``allow_fewer_runs`` is false: a
      committed report is never silently replaced by a poorer one.
  """
  rows = aggregate(study, root)
  existing = report_dir / f"{study['name']}.json"
  if existing.exists() and not allow_fewer_runs:
    before, now = _finished_runs(json.loads(existing.read_text())), _finished_runs(rows)
    if before > now:
      raise ValueError(
        f"{existing} reports {before} finished runs but {root} holds only {now}; refusing "
        "to overwrite it (are the run folders on this machine?). Pass "
        "--allow_fewer_runs to replace it anyway."
      )
  report_dir.mkdir(parents=True, exist_ok=True)
  from experiments import study_plots  # matplotlib only where a report is written

  plot = cells_plot = None
  finished = [r for r in rows if "rejected" not in r]
  if selection_split(finished) == VALIDATION:
    finished = [r for r in finished if has_validation(r)]  # the plot compares these only
  if finished and len({r["target"] for r in finished if r["target"] is not None}) > 1:
    plot = study_plots.plot_error_vs_compression(
      finished, report_dir / f"{study['name']}.png", study["name"]
    )
  elif finished:  # one target: error against compression would be a single column
    cells_plot = study_plots.plot_cells(
      finished, report_dir / f"{study['name']}_cells.png", study["name"]
    )
  layers_plot = None
  if study.get("layer_plot") and any(r["target"] is not None for r in finished):
    layers_plot = study_plots.plot_layer_sparsity(
      finished, report_dir / f"{study['name']}_layers.png", study["name"]
    )
  (report_dir / f"{study['name']}.json").write_text(json.dumps(rows, indent=1))
  path = report_dir / f"{study['name']}.md"
  path.write_text(
    markdown_report(study, rows, plot, layers_plot, diverged_runs(study, root), cells_plot)
  )
  return path


def permutation_p(a, b) -> float:
  """Two-sided p of ``mean(a) - mean(b)``, exact over every split of the pooled values."""
  pooled = np.asarray([*a, *b], dtype=np.float64)
  n, total = len(a), pooled.sum()
  observed = abs(np.mean(a) - np.mean(b))
  sums = np.fromiter((sum(c) for c in itertools.combinations(pooled, n)), np.float64)
  diffs = np.abs(sums / n - (total - sums) / (len(pooled) - n))
  return float(np.mean(diffs >= observed - 1e-9 * max(1.0, observed)))


def sign_flip_p(a, b) -> float:
  """Two-sided p of the mean paired difference ``a - b``, exact over every sign pattern."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
  means = np.abs(signs @ d) / len(d)
  observed = abs(d.mean())
  return float(np.mean(means >= observed - 1e-9 * max(1.0, observed)))
