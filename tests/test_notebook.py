"""The Colab notebook runs end to end on this machine's CPU (nbclient, a real kernel):
its install cell on the CPU branch (the project installed from this checkout), device
discovery with no device-count assertion, the data cell with local IDX files, a
smoke-budget Drop Pruning run on one CPU device, and the results cell."""

import json
import os

import nbformat
import pytest

from tests import helpers
from tests.helpers import REPO_ROOT

NOTEBOOK = REPO_ROOT / "experiments" / "colab.ipynb"
SMOKE = (
  "--config.num_epochs=1 --config.validation_examples=256 "
  "--config.max_test_examples=200 --config.batch_size=64 --config.eval_batch_size=100 "
  "--config.prune_begin_epoch=0 --config.prune_end_epoch=1 --config.update_every=1 "
  "--config.target_sparsity=0.9 --config.progress=False"
)


def _with_parameters(notebook, values: dict):
  """Papermill's convention: a cell after the one tagged "parameters" sets the values."""
  index = next(
    i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
  )
  source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
  return notebook


def test_the_notebook_is_clean_and_asks_for_no_device_count():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  text = "\n".join(cell.source for cell in notebook.cells)
  assert "device_count() ==" not in text and "assert" not in text
  assert all(cell.get("outputs", []) == [] for cell in notebook.cells if cell.cell_type == "code")
  assert "--config.parallel=jit" in text and "jax[tpu]" in text


def test_the_notebook_runs_end_to_end_on_the_cpu(tmp_path):
  from nbclient import NotebookClient

  (tmp_path / "idx").mkdir()
  idx_dir = helpers.write_learnable_idx_dir(tmp_path / "idx", 2816, 200)
  workdir = tmp_path / "run"
  notebook = _with_parameters(
    nbformat.read(NOTEBOOK, as_version=4),
    {
      "SOURCE": str(REPO_ROOT),
      "DATASET": "fashion_mnist",
      "IDX_DIR": str(idx_dir),
      "WORKDIR": str(workdir),
      "EXTRA": SMOKE,
    },
  )
  env = helpers.subprocess_env()
  # The kernel runs this interpreter (jupyter_client maps the kernelspec's "python" to it).
  os.environ.update({k: v for k, v in env.items() if k.startswith(("JAX", "XLA"))})
  NotebookClient(
    notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  outputs = "\n".join(
    output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
  )
  assert "accelerator: cpu" in outputs and "JAX's backend: cpu" in outputs
  assert "device(s) of kind cpu" in outputs
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["config"]["method"] == "drop" and summary["config"]["parallel"] == "jit"
  assert summary["sparsity"] == pytest.approx(0.9, abs=1e-3)
  assert f"test error {100 * summary['test_error']:.2f} %" in outputs  # the results cell
