"""Fills the generated tables of ``docs/results.md`` from the study reports' JSON.

``docs/results.md`` is written by hand around tables that must never be: each table sits
between markers and is rebuilt from ``docs/studies/<study>.json`` (written by
``python -m experiments.study ... --report_only``)::

  <!-- table:STUDY -->            method x target: test error mean ± std over seeds
  <!-- diffs:NET=STUDY+STUDY;NET=STUDY -->   every method against gradual, per network
  <!-- within:NET=STUDY+STUDY;NET=STUDY -->  highest compression within 0.5 points of dense
  <!-- tests:STUDY:SERIES:FIRST -->         SERIES against gradual, seed by seed: exact
                                            permutation tests on all seeds and on the seeds
                                            after the first FIRST (a replication)
  ...
  <!-- /table -->

Several studies after ``NET=`` are merged by series (the first study holding a series at
a target wins), so that a follow-up study's new rows join its parent grid.

Validation protocol: runs hold out the last ``validation_examples`` (10,000) images of
the training split as a validation split. For studies whose runs have it, ``table``
shows validation / test error per cell, ``diffs`` compares the validation error,
``within`` chooses the highest compression on validation error and reports the chosen
setting's test error once, and ``tests`` tests the test error of a series the text
names. Studies from before the validation split keep their tables as they were (test
error only; the text around them must say that they were compared on test). Merging
studies with and without a validation split into one table is refused.

  python -m experiments.results_tables            # rewrites docs/results.md in place
  python -m experiments.results_tables --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import study as study_lib

# Row labels, in table order; a series missing here is shown by its own name, last.
LABELS = {
  "dense": "dense",
  "gradual": "gradual (p = 1, q = 0)",
  "drop_away_only": "drop away only (p = 0.5)",
  "drop_back_only": "drop back only (q = 0.1)",
  "drop": "drop (p = 0.5, q = 0.1, constant)",
  "han": "han (5 cycles)",
  "random": "random",
  "drop_cosine": "drop, cosine-annealed (p 0.25→1, q 0.2→0)",
  "drop_weighted": "drop, cosine-annealed, importance-weighted (away: importance, back: gradient)",
  "gradual_uniform": "gradual, per-layer targets",
  "rigl": "RigL, per-layer targets (uniform)",
  "rigl_erk": "RigL, per-layer targets (ERK)",
  "set": "SET, per-layer targets (uniform)",
  "set_erk": "SET, per-layer targets (ERK)",
}
REFERENCE = "gradual"
TOLERANCE_POINTS = 0.5
VALIDATION, TEST = study_lib.VALIDATION, study_lib.TEST

# A block: an opening marker on its own line, anything that is not another opening
# marker, and the closing marker on its own line.
OPENER = re.compile(r"^<!--\s*(table|diffs|within|tests):\s*(.*?)\s*-->[ \t]*$", re.MULTILINE)
CLOSER = re.compile(r"^<!--\s*/table\s*-->[ \t]*$", re.MULTILINE)
BLOCK = re.compile(
  r"^<!--\s*(table|diffs|within|tests):\s*(.*?)\s*-->[ \t]*\n"
  r"(?:(?!<!--\s*(?:table|diffs|within|tests):).)*?"
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
  legacy = [r["cell"] for r in rows if not study_lib.has_validation(r)]
  if legacy and len(legacy) < len(rows):
    raise ValueError(
      f"studies {names} mix cells with and without a validation split (without: "
      f"{', '.join(legacy)}); validation and test errors must not be compared with each "
      "other: rerun those cells, or tabulate the studies separately."
    )
  return rows


def _split(rows: list[dict[str, Any]]) -> str:
  """The split to compare on: validation for runs that have one (load_rows refuses a
  mix), test for runs from before the validation split."""
  return study_lib.selection_split(rows)


def _stats_text(row: dict[str, Any], split: str) -> str:
  mean, std = study_lib.split_stats(row, split)
  return f"{mean:.2f} ± {std:.2f}"


def _ordered_series(rows: list[dict[str, Any]]) -> list[str]:
  present = list(dict.fromkeys(r["series"] for r in rows))
  return [s for s in LABELS if s in present] + [s for s in present if s not in LABELS]


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

  validated = _split(rows) == VALIDATION

  def cell(row, always_seeds=False):
    text = _stats_text(row, TEST)
    if validated:
      text = f"{_stats_text(row, VALIDATION)} / {text}"
    if always_seeds or row["seeds"] < full:
      text += f" ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})"
    return text

  first = "method: validation / test error %" if validated else "method"
  lines = [
    f"| {first} | " + " | ".join(f"{t:.0%} ({compression(t):.1f}x)" for t in targets) + " |",
    "|---|" + "---|" * len(targets),
  ]
  for series in _ordered_series(rows):
    label = LABELS.get(series, series)
    if series == "dense":
      lines.append(
        f"| {label} (1.0x) | {cell(by_key[('dense', None)], True)} |" + " |" * (len(targets) - 1)
      )
      continue
    cells = [cell(by_key[(series, t)]) if (series, t) in by_key else "—" for t in targets]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines


def _networks(spec: str) -> list[tuple[str, list[str]]]:
  networks = []
  for part in spec.split(";"):
    network, _, studies = part.partition("=")
    if not studies:
      raise ValueError(f"marker part {part!r} must look like 'NETWORK=study+study'.")
    networks.append((network.strip(), [s.strip() for s in studies.split("+")]))
  return networks


def diffs_table(studies_dir: Path, spec: str) -> list[str]:
  """Every method against gradual at the same target, one block of rows per network."""
  networks = [(net, load_rows(studies_dir, names)) for net, names in _networks(spec)]
  targets = sorted({t for _, rows in networks for t in _targets(rows)})
  splits = {_split(rows) for _, rows in networks}
  if len(splits) > 1:
    raise ValueError(
      f"diffs marker {spec!r} mixes networks with and without a validation split; "
      "tabulate them separately."
    )
  split = splits.pop()
  first = "method (validation error)" if split == VALIDATION else "method"
  lines = [
    f"| network | {first} | " + " | ".join(f"{t:.0%}" for t in targets) + " |",
    "|---|---|" + "---|" * len(targets),
  ]
  for network, rows in networks:
    by_key = {(r["series"], r["target"]): r for r in rows}
    for series in _ordered_series(rows):
      if series in ("dense", REFERENCE):
        continue
      cells = [
        study_lib.difference_text(by_key.get((series, t)), by_key.get((REFERENCE, t)), split)
        for t in targets
      ]
      lines.append(f"| {network} | {series} | " + " | ".join(cells) + " |")
  return lines


def within_lines(studies_dir: Path, spec: str) -> list[str]:
  """Per network: each method's highest compression within the tolerance of dense,
  chosen on validation error with the chosen setting's test error (on test error for
  studies from before the validation split)."""
  lines = []
  for network, names in _networks(spec):
    rows = load_rows(studies_dir, names)
    split = _split(rows)
    dense = next((r for r in rows if r["series"] == "dense"), None)
    if dense is None:
      raise ValueError(f"{network}: studies {names} have no dense row to compare against.")
    parts = []
    for series in _ordered_series(rows):
      if series == "dense":
        continue
      best = study_lib.best_within(rows, series, dense, TOLERANCE_POINTS, split)
      if best is None:
        chosen = "none"
      elif split == VALIDATION:
        chosen = (
          f"{best['compression']:.1f}x ({best['target']:.0%}; validation "
          f"{best['val_error_mean']:.2f} %, test {best['error_mean']:.2f} %)"
        )
      else:
        chosen = f"{best['compression']:.1f}x ({best['target']:.0%}, {best['error_mean']:.2f} %)"
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
  what = "test error: " if _split(rows) == VALIDATION else ""
  lines = [
    f"| target | seeds | {what}{series} − {REFERENCE} (points) | test, two-sided | p |",
    "|---|---|---|---|---|",
  ]
  for target in targets:
    a, b = by_key[(series, target)]["errors"], by_key[(REFERENCE, target)]["errors"]
    if len(a) != len(b) or not 0 < first < len(a):
      raise ValueError(
        f"{study} at {target:.0%}: {len(a)} and {len(b)} runs cannot be paired "
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
        f"| {target:.0%} | {label} | {diff} | unpaired: permutation of the means, "
        f"all {splits:,} splits | {permutation_p(x, y):.3f} |"
      )
      lines.append(
        f"| {target:.0%} | {label} | {diff} | paired by seed: sign flips, "
        f"all {2 ** len(x):,} patterns | {sign_flip_p(x, y):.3f} |"
      )
  return lines


def fill(text: str, studies_dir: Path) -> str:
  """``text`` with every marked block rebuilt from the JSON reports."""

  def rebuild(match: re.Match) -> str:
    kind, spec = match.group(1), match.group(2).strip()
    if kind == "table":
      body = method_table(load_rows(studies_dir, [spec]))
    elif kind == "diffs":
      body = diffs_table(studies_dir, spec)
    elif kind == "tests":
      body = tests_table(studies_dir, spec)
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
  parser.add_argument("--results", default="docs/results.md")
  parser.add_argument("--studies", default="docs/studies")
  parser.add_argument(
    "--check",
    action="store_true",
    help="only report whether the tables are up to date (exit 1 if not)",
  )
  args = parser.parse_args(argv)
  path = Path(args.results)
  text = path.read_text()
  new = fill(text, Path(args.studies))
  if args.check:
    if new != text:
      print(f"{path} is out of date: run python -m experiments.results_tables")
      return 1
    print(f"{path} is up to date.")
    return 0
  path.write_text(new)
  print(f"wrote {path} ({len(BLOCK.findall(text))} tables)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
