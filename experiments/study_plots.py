"""A study's plots: error against compression (validation and test panels) and where each
cell puts the sparsity, drawn from the rows of :mod:`experiments.study_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.study_report import (
  SPLIT_WORDS,
  TEST,
  VALIDATION,
  has_validation,
  percent,
  row_series,
  selection_split,
  split_errors,
  split_stats,
)


def error_panels(rows: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[dict]]:
  """The (split, axis label) panels of an error-vs-compression plot and the rows to draw:
  validation then test for rows with a validation split (rows without are left out), else
  test alone, titled as having none."""
  if selection_split(rows) == VALIDATION:
    panels = [
      (VALIDATION, "validation error (%), held-out training images: choose on this"),
      (TEST, "test error (%): reported, not chosen on"),
    ]
    return panels, [r for r in rows if has_validation(r)]
  return [(TEST, "test error (%), no validation split")], rows


def draw_error_panel(ax, rows: list[dict[str, Any]], split: str, label: str, title: str) -> None:
  """One panel: ``split`` error (mean ± std over seeds) against compression per series."""
  for series in dict.fromkeys(row_series(r) for r in rows):
    points = sorted(
      (r["compression"], *split_stats(r, split)) for r in rows if row_series(r) == series
    )
    xs, ys, es = zip(*points)
    style = "s" if series == "dense" else "o-"
    ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=series)
  ax.set_xscale("log")
  ax.set_xlabel("compression (all params / nonzero params)")
  ax.set_ylabel(label, fontsize=8)
  ax.set_title(f"{title}: {SPLIT_WORDS[split]}")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)


def plot_error_vs_compression(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
  """Error against compression per series: a validation panel and a test panel for
  rows with a validation split (rows without are left out), else one test panel
  titled as having no validation split."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels, rows = error_panels(rows)
  fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
  for ax, (panel_split, label) in zip(axes[0], panels):
    draw_error_panel(ax, rows, panel_split, label, title)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_cells(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
  """Each cell's error on one line, for a study that compares settings at one target
  (where error against compression would be a single column): every seed a dot coloured
  by its seed, so that the pairing across cells shows, and the mean ± std a black bar; a
  validation and a test panel for rows with a validation split, else test alone."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels, rows = error_panels(rows)
  fig, axes = plt.subplots(
    1,
    len(panels),
    figsize=(6.4 * len(panels), 0.4 * len(rows) + 1.8),
    squeeze=False,
    sharey=True,
  )
  # Reports from before seed_list count their seeds from 0.
  seeds_of = {r["cell"]: r.get("seed_list") or list(range(r["seeds"])) for r in rows}
  seeds = sorted({s for row_seeds in seeds_of.values() for s in row_seeds})
  colours = dict(zip(seeds, plt.get_cmap("tab10")(np.arange(len(seeds)) % 10)))
  for ax, (split, label) in zip(axes[0], panels):
    for y, row in enumerate(rows):
      mean, std = split_stats(row, split)
      ax.errorbar(mean, y, xerr=std, fmt="s" if row["method"] == "dense" else "o", color="k")
      for seed, error in zip(seeds_of[row["cell"]], split_errors(row, split)):
        ax.scatter(error, y + 0.15, s=14, color=colours[seed], label=f"seed {seed}")
    ax.set_xlabel(label, fontsize=8)
    ax.set_title(f"{title}: {SPLIT_WORDS[split]}")
    ax.grid(True, axis="x", alpha=0.3)
  axes[0][0].set_yticks(range(len(rows)), [r["cell"] for r in rows], fontsize=7)
  axes[0][0].invert_yaxis()
  handles, labels = axes[0][0].get_legend_handles_labels()
  unique = dict(zip(labels, handles))  # one entry per seed
  fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), fontsize=7)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_layer_sparsity(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
  """Each pruned cell's mean sparsity per layer: one panel per target, one bar per series
  and layer, so that a study shows where each method puts the sparsity."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = [r for r in rows if r["target"] is not None]
  targets = sorted({r["target"] for r in rows})
  layers = list(rows[0]["layer_sparsity"])
  series = list(dict.fromkeys(r["series"] for r in rows))
  fig, axes = plt.subplots(
    1, len(targets), figsize=(5.2 * len(targets), 0.32 * len(layers) + 1.6), squeeze=False
  )
  height = 0.8 / len(series)
  for ax, target in zip(axes[0], targets):
    for i, name in enumerate(series):
      row = next((r for r in rows if r["series"] == name and r["target"] == target), None)
      if row is None:
        continue
      values = [100 * row["layer_sparsity"].get(layer, 0.0) for layer in layers]
      ax.barh(np.arange(len(layers)) + i * height, values, height, label=name)
    ax.set_yticks(np.arange(len(layers)) + 0.4 - height / 2, layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("sparsity %")
    ax.set_xlim(0, 100)
    ax.set_title(f"{title}: {percent(target)}")
    ax.grid(True, axis="x", alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
