"""Study grids for ``python -m experiments.study``.

The LeNet studies share one protocol so that their numbers are comparable: 20 epochs,
pruning from epoch 1 to 14 every 100 steps, then 6 epochs with frozen masks.
"""

FASHION_MNIST_PROTOCOL = {
  "dataset": "fashion_mnist",
  "num_epochs": 20,
  "prune_begin_epoch": 1.0,
  "prune_end_epoch": 14.0,
  "update_every": 100,
  "progress": False,
  # The recorded runs of these studies trained under jax.pmap (the default then): a run
  # added to a study stays comparable with them, seed for seed.
  "parallel": "pmap",
}
ALL_METHODS = ["dense", "han", "gradual", "random", "drop_away_only", "drop_back_only", "drop"]

# The drops of the validation-protocol studies: p and q cosine-annealed from (0.25, 0.2) to
# (1, 0) over the pruning window (chosen on test error by pq_sweep_lenet300, which has no
# validation split; lenet300_fmnist_weighted_sweep checks it on validation), and the
# weighted rules.
ANNEALED_DROP = {"drop_away_prob": 0.25, "drop_back_prob": 0.2, "drop_anneal": "cosine"}
WEIGHTED_DROP = {"drop_away": "importance", "drop_back": "gradient"}
# The weighted drop's settings chosen on validation by lenet300_fmnist_weighted_sweep
# (p 0.5 -> 1, q 0.4 -> 0, temperature 1): what configs/lenet300.py ships.
TUNED_WEIGHTED_DROP = {
  "drop_away_prob": 0.5,
  "drop_back_prob": 0.4,
  "drop_anneal": "cosine",
  "temperature": 1.0,
  **WEIGHTED_DROP,
}
# Every method compared under the validation protocol, by series name. Gradual and the
# drops use one global pool; RigL and SET keep per-layer targets (uniform or ERK), and
# gradual_uniform is gradual with the same uniform per-layer targets.
METHOD_SERIES = {
  "gradual": {"method": "gradual", "sparsity_distribution": "global"},
  "drop_cosine": {"method": "drop", "sparsity_distribution": "global", **ANNEALED_DROP},
  "drop_weighted": {
    "method": "drop",
    "sparsity_distribution": "global",
    **ANNEALED_DROP,
    **WEIGHTED_DROP,
  },
  "drop_weighted_tuned": {
    "method": "drop",
    "sparsity_distribution": "global",
    **TUNED_WEIGHTED_DROP,
  },
  "rigl": {"method": "rigl", "sparsity_distribution": "uniform"},
  "set": {"method": "set", "sparsity_distribution": "uniform"},
  "gradual_uniform": {"method": "gradual", "sparsity_distribution": "uniform"},
  "rigl_erk": {"method": "rigl", "sparsity_distribution": "erk"},
  "set_erk": {"method": "set", "sparsity_distribution": "erk"},
}


def cell_named(study: dict, name: str) -> dict:
  """The cell of ``study`` called ``name`` (a follow-up study reuses it as its reference)."""
  (cell,) = [cell for cell in study["cells"] if cell["name"] == name]
  return cell


def method_cells(series: list[str], targets: tuple[float, ...]) -> list[dict]:
  """Cells ``<series>_t<target>``, series by series, each at every target."""
  return [
    {"name": f"{name}_t{t:g}", "target_sparsity": t, **METHOD_SERIES[name]}
    for name in series
    for t in targets
  ]


def budget(epochs: int) -> dict:
  """A training budget of ``epochs`` with the protocol's shape: masks change from 5 % to
  70 % of the training (epochs 1-14 of 20, 3-42 of 60, 10-140 of 200), then stay frozen;
  the cosine learning rate decays to 0 over the whole budget."""
  return {
    "num_epochs": epochs,
    "prune_begin_epoch": epochs / 20,
    "prune_end_epoch": 0.7 * epochs,
  }


def rewound_cells(
  series: list[str],
  settings: dict[str, dict],
  targets: tuple[float, ...],
  epochs: int,
  *,
  epochs_in_name: bool = False,
) -> list[dict]:
  """Cells ``<series>_rewind<setting>_t<target>`` (``_e<epochs>`` appended with
  ``epochs_in_name``): the series with learning-rate rewinding (``lr_rewind_epoch=0``: the
  cosine restarts over the frozen-mask epochs) on ``budget(epochs)``, plus each setting's
  overrides (``{"": {}}`` for none); target by target, then series, then setting."""
  return [
    {
      "name": f"{name}_rewind{setting}_t{t:g}" + (f"_e{epochs}" if epochs_in_name else ""),
      "target_sparsity": t,
      **METHOD_SERIES[name],
      **budget(epochs),
      "lr_rewind_epoch": 0.0,
      **overrides,
    }
    for t in targets
    for name in series
    for setting, overrides in settings.items()
  ]


# Where the runs of the LeNet-300-100 recipe's series live, by budget: the 60-epoch screens
# share lenet300_fmnist_finetune's run folders and names; the 200-epoch checks share
# lenet300_fmnist_budget's, whose cell names carry the budget (that study mixes budgets).
RECIPE_SERIES_ROOTS = {
  60: ("runs/studies/lenet300_fmnist_finetune", False),
  200: ("runs/studies/lenet300_fmnist_budget", True),
}


def recipe_series_study(
  name: str,
  settings: dict[str, dict],
  epochs: int,
  *,
  series: tuple[str, ...] = ("gradual",),
  seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
  """A LeNet-300-100 study of ``rewound_cells(series, settings)`` at 99 % and 98.5 % on
  ``budget(epochs)`` (60 or 200), in the run folders its budget shares
  (``RECIPE_SERIES_ROOTS``), under the Fashion-MNIST protocol."""
  root, epochs_in_name = RECIPE_SERIES_ROOTS[epochs]
  cells = rewound_cells(
    list(series), settings, (0.99, 0.985), epochs, epochs_in_name=epochs_in_name
  )
  return {
    "name": name,
    "root": root,
    "config": "experiments/configs/lenet300_base.py",
    "overrides": dict(FASHION_MNIST_PROTOCOL),
    "cells": cells,
    "seeds": list(seeds),
  }


def budget_cells(series: list[str], targets: tuple[float, ...], epochs: tuple[int, ...]) -> list:
  """Cells ``<series>_t<target>_e<epochs>`` (and ``dense_e<epochs>`` for ``"dense"``),
  longest budget first, so that a time-boxed or sharded grid starts the long runs first."""
  cells = []
  for e in sorted(epochs, reverse=True):
    for name in series:
      if name == "dense":
        cells.append({"name": f"dense_e{e}", "method": "dense", **budget(e)})
        continue
      for t in targets:
        cells.append(
          {"name": f"{name}_t{t:g}_e{e}", "target_sparsity": t, **METHOD_SERIES[name], **budget(e)}
        )
  return cells
