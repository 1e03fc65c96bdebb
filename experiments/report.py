"""Reports of a run folder: a Markdown results row and PNG plots.

Every function here is a pure function of the files a run writes
(``metrics.jsonl`` and ``summary.json``), so a study script can rebuild the reports
of many runs, or one table over all of them, without touching JAX::

  rows = [report.read_summary(folder) for folder in folders]
  print(report.markdown_table(rows))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESULTS_ROW_FILE = "results_row.md"
CURVES_FILE = "curves.png"
LAYERS_FILE = "layers.png"

# (column header, function of the summary) for the results table.
_COLUMNS = (
  ("run", lambda s: s["name"]),
  ("model", lambda s: s["model"]),
  ("dataset", lambda s: s["dataset"]),
  ("method", lambda s: s["method"]),
  ("epochs", lambda s: str(s["epochs"])),
  # Validation = the held-out last training images (choose on it); test = reported only.
  ("val error (%)", lambda s: _validation_percent(s)),
  ("test error (%)", lambda s: _percent(s["test_error"])),
  ("sparsity (%)", lambda s: _percent(s["sparsity"])),
  ("compression", lambda s: f"{s['compression']:.1f}x"),
  ("nonzero / total", lambda s: f"{s['nonzero_params']:,} / {s['total_params']:,}"),
  ("wall time (s)", lambda s: f"{s['wall_time_s']:.0f}"),
  ("devices", lambda s: f"{s['device_count']}x {s['device_kind']}"),
)


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.2f}"


def _validation_percent(summary: Mapping[str, Any]) -> str:
  """The validation error, or why there is none: a run without a validation split
  (``validation_examples`` 0, or a summary without the field)."""
  if summary.get("val_error") is not None:
    return _percent(summary["val_error"])
  if not summary.get("validation_examples"):
    return "no split"
  return "n/a"


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
  """The per-epoch lines of ``workdir/metrics.jsonl`` (``[]`` if there is none)."""
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(workdir: str | Path) -> dict[str, Any]:
  """``workdir/summary.json`` as a dict.

  Raises:
    FileNotFoundError: if the run has not finished.
  """
  return json.loads((Path(workdir) / SUMMARY_FILE).read_text())


def markdown_header() -> str:
  """The header and separator lines of the results table."""
  names = [name for name, _ in _COLUMNS]
  return "| " + " | ".join(names) + " |\n|" + "|".join("---" for _ in names) + "|\n"


def markdown_row(summary: Mapping[str, Any]) -> str:
  """One results-table line for a run's summary."""
  return "| " + " | ".join(cell(summary) for _, cell in _COLUMNS) + " |\n"


def markdown_table(summaries: Iterable[Mapping[str, Any]]) -> str:
  """A whole results table, one row per summary."""
  return markdown_header() + "".join(markdown_row(s) for s in summaries)


def plot_curves(metrics: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
  """Validation error (if the run has a validation split), test error and sparsity
  against the step, one point per epoch, saved as a PNG."""
  steps = [line["step"] for line in metrics]
  figure, (error_axis, sparsity_axis) = plt.subplots(1, 2, figsize=(10, 4))
  has_validation = bool(metrics) and all(line.get("val_error") is not None for line in metrics)
  if has_validation:
    error_axis.plot(
      steps,
      [100 * line["val_error"] for line in metrics],
      marker="s",
      color="tab:green",
      label="validation (held-out training images)",
    )
  error_axis.plot(steps, [100 * line["test_error"] for line in metrics], marker="o", label="test")
  error_axis.set_xlabel("step")
  error_axis.set_ylabel("error (%)")
  error_axis.set_title(
    "Validation and test error" if has_validation else "Test error (no validation split)"
  )
  error_axis.legend(fontsize=8)
  error_axis.grid(alpha=0.3)
  sparsity_axis.plot(
    steps, [100 * line["sparsity"] for line in metrics], marker="o", color="tab:orange"
  )
  sparsity_axis.set_xlabel("step")
  sparsity_axis.set_ylabel("sparsity of prunable weights (%)")
  sparsity_axis.set_title("Sparsity")
  sparsity_axis.set_ylim(0, 100)
  sparsity_axis.grid(alpha=0.3)
  figure.tight_layout()
  path = Path(path)
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_layers(layer_sparsity: Mapping[str, float], path: str | Path, title: str = "") -> Path:
  """Final sparsity of every prunable layer as horizontal bars, saved as a PNG."""
  names = list(layer_sparsity)
  values = [100 * layer_sparsity[name] for name in names]
  figure, axis = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
  bars = axis.barh(range(len(names)), values, color="tab:blue")
  axis.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
  axis.set_yticks(range(len(names)), names, fontsize=8)
  axis.invert_yaxis()  # first layer on top
  axis.set_xlim(0, 105)
  axis.set_xlabel("sparsity (%)")
  axis.set_title(title or "Per-layer sparsity")
  figure.tight_layout()
  path = Path(path)
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def write_report(workdir: str | Path) -> dict[str, Path]:
  """Writes ``results_row.md``, ``curves.png`` and ``layers.png`` into a finished run folder.

  Returns:
    ``{"results_row": path, "curves": path, "layers": path}``.
  """
  workdir = Path(workdir)
  summary = read_summary(workdir)
  row_path = workdir / RESULTS_ROW_FILE
  row_path.write_text(markdown_header() + markdown_row(summary))
  title = f"{summary['model']} / {summary['method']}: {100 * summary['sparsity']:.1f}% sparse"
  return {
    "results_row": row_path,
    "curves": plot_curves(read_metrics(workdir), workdir / CURVES_FILE),
    "layers": plot_layers(summary["layer_sparsity"], workdir / LAYERS_FILE, title),
  }
