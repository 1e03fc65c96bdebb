"""A finished run folder's weights, read for another run: the teacher of distillation
(``config.teacher_workdir``, experiments/distill.py) or the starting point of a run
(``config.init_workdir``: e.g. prune a trained dense model).

Both must share the other run's data and validation split, so that no image the new run is
selected on was trained on by the run it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments import checkpoints, report, run_folder

PyTree = Any

# Fields a run read by another must share with it: the same data, and above all the same
# validation split.
SHARED_FIELDS = (
  "dataset",
  "validation_examples",
  "max_train_examples",
  "max_test_examples",
  "standardize",  # a teacher's logits, a trained start's weights, are for its inputs
)


def load_variables(
  config: ml_collections.ConfigDict, field: str
) -> tuple[ml_collections.ConfigDict, dict[str, PyTree]]:
  """The config and the final variables (``params``, and ``batch_stats`` when the model
  has them) of the finished run folder that ``config.<field>`` names.

  Raises:
    ValueError: naming the field and the folder, if it holds no finished run, or a run on
      other data or another validation split than ``config``'s.
  """
  folder = Path(config[field])
  if not (folder / report.SUMMARY_FILE).is_file():
    raise ValueError(
      f"{field}={str(folder)!r} holds no finished run (no {report.SUMMARY_FILE}); "
      "train it to the end first."
    )
  saved = ml_collections.ConfigDict(run_folder.saved_config(folder))
  for name in SHARED_FIELDS:
    if saved.get(name) != config.get(name):
      raise ValueError(
        f"{field}={str(folder)!r} was trained with {name}={saved.get(name)!r}, this run has "
        f"{config.get(name)!r}: it must share this run's data and validation split."
      )
  restored = checkpoints.restore_checkpoint(folder)
  if restored is None:
    raise ValueError(f"{field}={str(folder)!r} has no checkpoint to read the weights from.")
  state = restored["state"]
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return saved, variables


def start_from(
  config: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree
) -> tuple[PyTree, PyTree]:
  """``(params, batch_stats)`` of ``config.init_workdir``'s finished run, in place of the
  fresh ones given (whose tree and shapes they must have: the same model).

  Raises:
    ValueError: naming ``init_workdir``, as ``load_variables`` does, or the first weight
      whose path or shape differs from this run's model.
  """
  _, variables = load_variables(config, "init_workdir")
  loaded = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  keystr = jax.tree_util.keystr
  found = {keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  fresh, treedef = jax.tree_util.tree_flatten_with_path(
    {"params": params, "batch_stats": batch_stats}
  )
  for path, value in fresh:
    name = keystr(path)
    if name not in found or np.shape(found[name]) != np.shape(value):
      shape = np.shape(found[name]) if name in found else "missing"
      raise ValueError(
        f"init_workdir={config.init_workdir!r} holds another model: its weight {name} is "
        f"{shape}, this run's is {np.shape(value)} (model={config.model!r})."
      )
  if len(found) != len(fresh):
    raise ValueError(
      f"init_workdir={config.init_workdir!r} holds another model: {len(found)} weight "
      f"arrays, this run's has {len(fresh)} (model={config.model!r})."
    )
  # The fresh tree's containers and dtypes, the finished run's values.
  values = [np.asarray(found[keystr(p)], np.asarray(v).dtype) for p, v in fresh]
  started = jax.tree_util.tree_unflatten(treedef, values)
  return started["params"], started["batch_stats"]
