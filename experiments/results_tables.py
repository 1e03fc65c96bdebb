"""Fills the generated tables of ``docs/results.md`` and ``README.md`` from the study JSON.

Both pages are written by hand around tables that must never be: each table sits between
markers and is rebuilt from ``docs/studies/<study>.json`` (written by
``python -m experiments.study ... --report_only``)::

  <!-- table:STUDY+STUDY -->      method x target: error mean ± std over seeds
  <!-- diffs:NET=STUDY+STUDY;NET=STUDY -->   every method against gradual, per network
                                            (``NET=STUDY@SERIES``: against SERIES)
  <!-- within:NET=STUDY+STUDY;NET=STUDY -->  highest compression within 0.5 points of dense
  <!-- tests:STUDY:SERIES:FIRST -->         SERIES against gradual, seed by seed: exact
                                            permutation tests on all seeds and on the seeds
                                            after the first FIRST (a replication)
  <!-- plot:NET=STUDY+STUDY -->             error against compression on Fashion-MNIST
                                            (docs/studies/error_vs_compression_NET.png)
                                            beside the published MNIST points, quoted
  <!-- glance:NET=STUDY/CELL@CONFIG+STUDY/CELL;NET=STUDY/CELL -->
                                            one row per named cell (the README's results
                                            at a glance): network, method, compression,
                                            validation and test error (mean ± SD over
                                            seeds), dataset (from the study's file), seeds;
                                            @CONFIG marks the cell a config ships
  ...
  <!-- /table -->

Several studies joined by ``+`` (after ``table:`` or ``NET=``) are merged by series (the
first study holding a series at a target wins), so that a follow-up study's new rows join
its parent grid.

Validation protocol: runs hold out the last ``validation_examples`` (10,000) images of
the training split as a validation split. For studies whose runs have it, ``table``
shows validation / test error per cell, ``diffs`` compares the validation error,
``within`` chooses the highest compression on validation error and reports the chosen
setting's test error once, and ``tests`` tests the test error of a series the text
names. Studies without a validation split have test-error tables (test error only; the
text around them must say that they were compared on test). Merging
studies with and without a validation split into one table is refused.

  python -m experiments.results_tables            # rewrites docs/results.md and README.md
  python -m experiments.results_tables --check    # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import study as study_lib
from experiments import study_plots, study_report
from experiments.table_labels import GLANCE_LABELS, LABELS

REFERENCE = "gradual"
# Published results on MNIST (test error %, compression = all / nonzero parameters), quoted
# from the papers: Han et al. 2015 ("Learning both Weights and Connections"), DNS (Guo et
# al. 2016, "Dynamic Network Surgery") and SparseVD (Molchanov et al. 2017, "Variational
# Dropout Sparsifies Deep Neural Networks"). Another dataset than our studies': shown in a
# panel and table of their own, as a reference, never compared with our numbers.
PUBLISHED_MNIST = {
  "LeNet-300-100": (
    ("dense (Han et al. 2015)", 1.0, 1.64),
    ("Han et al. 2015", 12.0, 1.59),
    ("DNS (Guo et al. 2016)", 56.0, 1.99),
    ("SparseVD (Molchanov et al. 2017)", 68.0, 1.92),
  ),
  "LeNet-5": (
    ("dense (Han et al. 2015)", 1.0, 0.80),
    ("Han et al. 2015", 12.0, 0.77),
    ("DNS (Guo et al. 2016)", 108.0, 0.91),
    ("SparseVD (Molchanov et al. 2017)", 280.0, 0.75),
  ),
}
TOLERANCE_POINTS = 0.5
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# Where a glance row's study file (for its dataset) and a recipe's config are found.
STUDY_MODULES = Path(study_lib.__file__).resolve().parent / "studies"
CONFIGS = Path(study_lib.__file__).resolve().parent / "configs"
VALIDATION, TEST = study_report.VALIDATION, study_report.TEST

# A block: an opening marker on its own line, anything that is not another opening
# marker, and the closing marker on its own line.
KINDS = "table|diffs|within|tests|plot|glance"  # the marker kinds, in the three patterns below
OPENER = re.compile(rf"^<!--\s*({KINDS}):\s*(.*?)\s*-->[ \t]*$", re.MULTILINE)
CLOSER = re.compile(r"^<!--\s*/table\s*-->[ \t]*$", re.MULTILINE)
BLOCK = re.compile(
  rf"^<!--\s*({KINDS}):\s*(.*?)\s*-->[ \t]*\n"
  rf"(?:(?!<!--\s*(?:{KINDS}):).)*?"
  r"^<!--\s*/table\s*-->[ \t]*$",
  re.DOTALL | re.MULTILINE,
)


def load_rows(studies_dir: Path, names: list[str]) -> list[dict[str, Any]]:
  """Finished cells of several studies, merged by (series, target); first study wins."""
  merged: dict[tuple[str, Any], dict[str, Any]] = {}
  for name in names:
    path = studies_dir / f"{name}.json"
    if not path.exists():
      raise ValueError(f"no report {path}: run python -m experiments.study --report_only first.")
    for row in json.loads(path.read_text()):
      if "rejected" in row:
        continue
      merged.setdefault((row["series"], row["target"]), row)
  rows = list(merged.values())
  legacy = [r["cell"] for r in rows if not study_report.has_validation(r)]
  if legacy and len(legacy) < len(rows):
    raise ValueError(
      f"studies {names} mix cells with and without a validation split (without: "
      f"{', '.join(legacy)}); validation and test errors must not be compared with each "
      "other: rerun those cells, or tabulate the studies separately."
    )
  return rows


def _stats_text(row: dict[str, Any], split: str) -> str:
  mean, std = study_report.split_stats(row, split)
  return f"{mean:.2f} ± {std:.2f}"


def _ordered_series(rows: list[dict[str, Any]]) -> list[str]:
  present = list(dict.fromkeys(r["series"] for r in rows))
  ordered = [s for s in LABELS if s in present] + [s for s in present if s not in LABELS]
  return sorted(ordered, key=lambda s: not s.startswith("dense"))  # dense first (stable)


def _targets(rows):
  return sorted({r["target"] for r in rows if r["target"] is not None})


def method_table(rows: list[dict[str, Any]]) -> list[str]:
  """Method x target table; a cell with fewer seeds than the fullest cell says so."""
  targets = _targets(rows)
  by_key = {(r["series"], r["target"]): r for r in rows}
  if not rows:
    raise ValueError("no finished runs to tabulate.")
  full = max(r["seeds"] for r in rows)

  def compression(target):
    at = [r for r in rows if r["target"] == target]
    reference = by_key.get((REFERENCE, target), at[0])
    return reference["compression"]

  validated = study_report.selection_split(rows) == VALIDATION

  def cell(row, always_seeds=False):
    text = _stats_text(row, TEST)
    if validated:
      text = f"{_stats_text(row, VALIDATION)} / {text}"
    if always_seeds or row["seeds"] < full:
      text += f" ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})"
    return text

  first = "method: validation / test error %" if validated else "method"
  lines = [
    f"| {first} | "
    + " | ".join(f"{study_report.percent(t)} ({compression(t):.1f}x)" for t in targets)
    + " |",
    "|---|" + "---|" * len(targets),
  ]
  for series in _ordered_series(rows):
    label = LABELS.get(series, series)
    if (series, None) in by_key:  # dense (also a budget's dense_e<E>): no target
      lines.append(
        f"| {label} (1.0x) | {cell(by_key[(series, None)], True)} |" + " |" * (len(targets) - 1)
      )
      continue
    cells = [cell(by_key[(series, t)]) if (series, t) in by_key else "—" for t in targets]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines


def _study_names(spec: str) -> list[str]:
  """``STUDY+STUDY`` -> the study names, in order."""
  return [s.strip() for s in spec.split("+")]


def _networks(spec: str) -> list[tuple[str, list[str]]]:
  networks = []
  for part in spec.split(";"):
    network, _, studies = part.partition("=")
    if not studies:
      raise ValueError(f"marker part {part!r} must look like 'NETWORK=study+study'.")
    networks.append((network.strip(), _study_names(studies)))
  return networks


def diffs_table(studies_dir: Path, spec: str) -> list[str]:
  """Every method against gradual at the same target, one block of rows per network; a
  network written ``NET=STUDY+STUDY@SERIES`` is compared with ``SERIES`` instead."""
  networks, references = [], {}
  for net, names in _networks(spec):
    names[-1], _, reference = names[-1].partition("@")
    networks.append((net, load_rows(studies_dir, names)))
    references[net] = reference or REFERENCE
  targets = sorted({t for _, rows in networks for t in _targets(rows)})
  splits = {study_report.selection_split(rows) for _, rows in networks}
  if len(splits) > 1:
    raise ValueError(
      f"diffs marker {spec!r} mixes networks with and without a validation split; "
      "tabulate them separately."
    )
  split = splits.pop()
  first = "method (validation error)" if split == VALIDATION else "method"
  first += ": unpaired / paired by seed"
  lines = [
    f"| network | {first} | " + " | ".join(study_report.percent(t) for t in targets) + " |",
    "|---|---|" + "---|" * len(targets),
  ]
  for network, rows in networks:
    by_key = {(r["series"], r["target"]): r for r in rows}
    reference = references[network]
    for series in _ordered_series(rows):
      if series == reference or series.startswith("dense"):
        continue
      cells = [
        _both_differences(by_key.get((series, t)), by_key.get((reference, t)), split)
        for t in targets
      ]
      lines.append(f"| {network} | {series} | " + " | ".join(cells) + " |")
  return lines


def _both_differences(a, b, split: str) -> str:
  """The unpaired screen and the difference paired by seed, side by side."""
  unpaired = study_report.difference_text(a, b, split)
  if unpaired == "—" or "(1 seed)" in unpaired:  # nothing to pair
    return unpaired
  return f"{unpaired} / {study_report.paired_difference_text(a, b, split)}"


def within_lines(studies_dir: Path, spec: str) -> list[str]:
  """Per network: each method's highest compression within the tolerance of dense,
  chosen on validation error with the chosen setting's test error (on test error for
  studies without a validation split)."""
  lines = []
  for network, names in _networks(spec):
    rows = load_rows(studies_dir, names)
    split = study_report.selection_split(rows)
    dense = next((r for r in rows if r["series"] == "dense"), None)
    if dense is None:
      raise ValueError(f"{network}: studies {names} have no dense row to compare against.")
    parts = []
    for series in _ordered_series(rows):
      if series == "dense":
        continue
      best = study_report.best_within(rows, series, dense, TOLERANCE_POINTS, split)
      if best is None:
        chosen = "none"
      elif split == VALIDATION:
        chosen = (
          f"{best['compression']:.1f}x ({study_report.percent(best['target'])}; validation "
          f"{best['val_error_mean']:.2f} %, test {best['error_mean']:.2f} %)"
        )
      else:
        target = study_report.percent(best["target"])
        chosen = f"{best['compression']:.1f}x ({target}, {best['error_mean']:.2f} %)"
      parts.append(f"`{series}` {chosen}")
    if split == VALIDATION:
      reference = (
        f"dense: validation {_stats_text(dense, VALIDATION)} %, test "
        f"{_stats_text(dense, TEST)} %; chosen on validation"
      )
    else:
      reference = f"dense {_stats_text(dense, TEST)} %"
    lines.append(f"- {network} ({reference}): " + "; ".join(parts) + ".")
  return lines


def tests_table(studies_dir: Path, spec: str) -> list[str]:
  """``STUDY:SERIES:FIRST``: SERIES against gradual at each shared target, same seeds.

  The study's runs are listed in seed order (``errors``), so run i of both series used
  seed i: a paired test is valid. FIRST is the size of the first batch of seeds; the
  seeds after it are tested on their own as a replication of what the first batch showed.
  """
  try:
    study, series, first = (part.strip() for part in spec.split(":"))
    first = int(first)
  except ValueError:
    raise ValueError(f"tests marker {spec!r} must look like 'STUDY:SERIES:FIRST'.") from None
  rows = load_rows(studies_dir, [study])
  by_key = {(r["series"], r["target"]): r for r in rows}
  targets = sorted(t for (s, t) in by_key if s == series and (REFERENCE, t) in by_key)
  if not targets:
    raise ValueError(f"{study}: no target holds both {series!r} and {REFERENCE!r}.")
  # The test error of a series the text names (chosen on validation where runs have it).
  what = "test error: " if study_report.selection_split(rows) == VALIDATION else ""
  lines = [
    f"| target | seeds | {what}{series} − {REFERENCE} (points) | test, two-sided | p |",
    "|---|---|---|---|---|",
  ]
  for target in targets:
    a, b = by_key[(series, target)]["errors"], by_key[(REFERENCE, target)]["errors"]
    if len(a) != len(b) or not 0 < first < len(a):
      raise ValueError(
        f"{study} at {study_report.percent(target)}: {len(a)} and {len(b)} runs cannot be paired "
        f"or split after the first {first}."
      )
    for label, lo in (
      (f"all {len(a)}", 0),
      (f"the {len(a) - first} after the first {first}", first),
    ):
      x, y = a[lo:], b[lo:]
      diff = f"{np.mean(x) - np.mean(y):+.2f}"
      splits = math.comb(2 * len(x), len(x))
      lines.append(
        f"| {study_report.percent(target)} | {label} | {diff} | unpaired: permutation of the "
        f"means, all {splits:,} splits | {study_report.permutation_p(x, y):.3f} |"
      )
      lines.append(
        f"| {study_report.percent(target)} | {label} | {diff} | paired by seed: sign flips, "
        f"all {2 ** len(x):,} patterns | {study_report.sign_flip_p(x, y):.3f} |"
      )
  return lines


def plot_name(network: str) -> str:
  """The file of a network's error-vs-compression figure (in the studies folder)."""
  return "error_vs_compression_" + re.sub(r"[^a-z0-9]+", "-", network.lower()).strip("-") + ".png"


def plot_block(studies_dir: Path, spec: str, results_dir: Path, write: bool) -> list[str]:
  """``NET=STUDY+STUDY`` (one network): the figure's link and the published MNIST table.

  The figure has the studies' error panels (validation and test, see
  ``study_plots.error_panels``) and a third panel with the published MNIST points; it is written
  to ``studies_dir`` only when ``write`` (``--check`` compares text, not pixels).
  """
  networks = _networks(spec)
  if len(networks) != 1:
    raise ValueError(f"plot marker {spec!r} must name one network: 'NETWORK=study+study'.")
  ((network, names),) = networks
  if network not in PUBLISHED_MNIST:
    raise ValueError(
      f"plot marker {spec!r}: no published MNIST points for {network!r}; "
      f"known: {sorted(PUBLISHED_MNIST)}."
    )
  rows = load_rows(studies_dir, names)
  path = studies_dir / plot_name(network)
  if write:
    _draw_with_published(rows, network, path)
  link = Path(os.path.relpath(path, results_dir)).as_posix()
  lines = [
    f"![{network}: Fashion-MNIST error against compression, published MNIST points beside]({link})",
    "",
    f"| {network}, published on MNIST (quoted; another dataset, not comparable) "
    "| compression | test error % |",
    "|---|---|---|",
  ]
  lines += [f"| {who} | {x:g}x | {err:.2f} |" for who, x, err in PUBLISHED_MNIST[network]]
  return lines


def _draw_with_published(rows: list[dict[str, Any]], network: str, path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels, rows = study_plots.error_panels(rows)
  fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.6 * (len(panels) + 1), 4.4))
  for ax, (split, label) in zip(axes, panels):
    study_plots.draw_error_panel(ax, rows, split, label, f"{network}, Fashion-MNIST")
    _clip_outliers(ax, rows, split)
  ax = axes[-1]
  for who, x, err in PUBLISHED_MNIST[network]:
    ax.plot([x], [err], "s" if x == 1.0 else "D", label=f"{who}: {err:.2f} % at {x:g}x")
  ax.set_xscale("log")
  ax.set_xlabel("compression (all params / nonzero params)")
  ax.set_ylabel("test error (%), as published", fontsize=8)
  ax.set_title(f"{network}, MNIST, published (quoted): not comparable", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _clip_outliers(ax, rows: list[dict[str, Any]], split: str) -> None:
  """Cuts the error axis at twice the median cell, so that a collapsed cell (tens of
  points above the rest) does not flatten the differences that matter; the cells above
  the cut are named in the panel with their errors (the tables have them all)."""
  means = {
    (r["series"], r["target"]): study_report.split_stats(r, split)[0]
    for r in rows
    if r["target"] is not None
  }
  top = 2.0 * float(np.median(list(means.values())))
  above = {key: value for key, value in means.items() if value > top}
  if not above:
    return
  ax.set_ylim(top=top)
  note = "off the chart: " + ", ".join(
    f"{series} {study_report.percent(target)} {value:.1f} %"
    for (series, target), value in sorted(above.items())
  )
  ax.text(0.01, 0.99, note, transform=ax.transAxes, fontsize=7, va="top")


def study_dataset(study_name: str, cell_name: str) -> str:
  """The dataset a study's cell trained on, from the study's file (``STUDY_MODULES``):
  the cell's or the study's override, else its base config's field."""
  path = STUDY_MODULES / f"{study_name}.py"
  if not path.exists():
    raise ValueError(f"no study file {path} for the report {study_name!r}.")
  study = study_lib.load_module(str(path)).get_study()
  cells = {c["name"]: c for c in study_report.study_cells(study)}
  if cell_name not in cells:
    raise ValueError(f"study {study_name!r} has no cell {cell_name!r}; cells: {sorted(cells)}.")
  settings = {**study.get("overrides", {}), **cells[cell_name]}
  if "dataset" not in settings:
    config = study_lib.load_module(str(CONFIGS.parents[1] / study["config"])).get_config()
    settings["dataset"] = config.dataset
  return DATASETS.get(settings["dataset"], settings["dataset"])


def glance_table(studies_dir: Path, spec: str) -> list[str]:
  """``NET=STUDY/CELL@CONFIG+STUDY/CELL;...``: one row per named cell, in the order given.

  Each row shows the cell's compression (and target), its validation and test error
  (mean ± SD over seeds; "—" for a run without a validation split, whose dataset column
  says so), the dataset its study trained on, and its seed count. ``@CONFIG`` marks the
  cell that ``experiments/configs/CONFIG.py`` ships.
  """
  lines = [
    "| network | method | compression (sparsity) | validation error % (± SD over seeds) "
    "| test error % (± SD over seeds) | dataset | seeds |",
    "|---|---|---|---|---|---|---|",
  ]
  for network, entries in _networks(spec):
    for entry in entries:
      where, _, recipe = (part.strip() for part in entry.partition("@"))
      study, slash, cell = (part.strip() for part in where.partition("/"))
      if not (slash and study and cell) or ("@" in entry and not recipe):
        raise ValueError(
          f"glance entry {entry!r} must look like 'STUDY/CELL' or 'STUDY/CELL@CONFIG'."
        )
      row = next((r for r in load_rows(studies_dir, [study]) if r["cell"] == cell), None)
      if row is None:
        raise ValueError(f"report {study!r} has no finished cell {cell!r}.")
      label = GLANCE_LABELS.get(row["series"], LABELS.get(row["series"], row["series"]))
      if recipe:
        if not (CONFIGS / f"{recipe}.py").exists():
          raise ValueError(f"glance entry {entry!r}: no config {CONFIGS / recipe}.py.")
        label = f"**`{recipe}` recipe**: {label}"
      compression = f"{row['compression']:.1f}x"
      if row["target"] is not None:
        compression += f" ({study_report.percent(row['target'])})"
      dataset = study_dataset(study, cell)
      if study_report.has_validation(row):
        validation = _stats_text(row, VALIDATION)
      else:
        validation = "—"
        dataset += ", no validation split"
      lines.append(
        f"| {network} | {label} | {compression} | {validation} | {_stats_text(row, TEST)} "
        f"| {dataset} | {row['seeds']} |"
      )
  return lines


def fill(
  text: str, studies_dir: Path, results_dir: Path | None = None, write_plots: bool = False
) -> str:
  """``text`` with every marked block rebuilt from the JSON reports; figures are drawn
  into ``studies_dir`` when ``write_plots`` (links are relative to ``results_dir``, by
  default the studies folder's parent)."""
  results_dir = studies_dir.parent if results_dir is None else results_dir

  def rebuild(match: re.Match) -> str:
    kind, spec = match.group(1), match.group(2).strip()
    if kind == "table":
      body = method_table(load_rows(studies_dir, _study_names(spec)))
    elif kind == "diffs":
      body = diffs_table(studies_dir, spec)
    elif kind == "tests":
      body = tests_table(studies_dir, spec)
    elif kind == "plot":
      body = plot_block(studies_dir, spec, results_dir, write_plots)
    elif kind == "glance":
      body = glance_table(studies_dir, spec)
    else:
      body = within_lines(studies_dir, spec)
    return f"<!-- {kind}:{spec} -->\n" + "\n".join(body) + "\n<!-- /table -->"

  openers, closers = len(OPENER.findall(text)), len(CLOSER.findall(text))
  blocks = len(BLOCK.findall(text))
  if not openers == closers == blocks:
    raise ValueError(
      f"unbalanced table markers: {openers} opening, {closers} closing '<!-- /table -->', "
      f"{blocks} well-formed blocks; every marker must be on its own line and every "
      "block closed before the next one opens."
    )
  return BLOCK.sub(rebuild, text)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--results",
    nargs="+",
    default=["docs/results.md", "README.md"],
    help="the pages whose marked tables to rebuild",
  )
  parser.add_argument("--studies", default="docs/studies")
  parser.add_argument(
    "--check",
    action="store_true",
    help="only report whether the tables are up to date (exit 1 if not)",
  )
  args = parser.parse_args(argv)
  stale = 0
  for name in args.results:
    path = Path(name)
    text = path.read_text()
    new = fill(text, Path(args.studies), path.parent, write_plots=not args.check)
    if args.check:
      if new != text:
        print(f"{path} is out of date: run python -m experiments.results_tables")
        stale += 1
      else:
        print(f"{path} is up to date.")
      continue
    path.write_text(new)
    print(f"wrote {path} ({len(BLOCK.findall(text))} tables)")
  return 1 if stale else 0


if __name__ == "__main__":
  sys.exit(main())
