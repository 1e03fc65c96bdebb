"""README.md: its first code example runs as written, its API table names the public API,
its links resolve, and it keeps the two commands users and CI run."""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np

import droppruning_jax as dp
from tests import helpers

README = (helpers.REPO_ROOT / "README.md").read_text()


def _first_python_block(text: str) -> str:
  match = re.search(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
  assert match, "README.md has no ```python block"
  return match.group(1)


def test_the_first_python_block_runs_as_written(capsys):
  """The README's loop, with a toy model: a 20x10 kernel (200 weights, so 0.9 is exact)
  and a bias that stays dense, one fixed batch, one step past the last pruning step."""
  kernel = jax.random.normal(jax.random.PRNGKey(0), (20, 10))
  params = {"dense": {"kernel": kernel, "bias": jnp.zeros(10)}}

  def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((x @ params["dense"]["kernel"] + params["dense"]["bias"] - y) ** 2)

  batch = (jnp.ones((4, 20)), jnp.zeros((4, 10)))
  namespace = {
    "params": params,
    "loss_fn": loss_fn,
    "batches": itertools.repeat(batch),
    "num_steps": 10_001,
  }
  exec(compile(_first_python_block(README), "README.md", "exec"), namespace)
  opt_state, trained = namespace["opt_state"], namespace["params"]
  masks = dp.get_masks(opt_state)
  assert dp.sparsity(masks) == 0.9
  assert capsys.readouterr().out.strip() == "0.9"
  assert dp.get_count(opt_state) == 10_001
  assert int(dp.get_stats(opt_state).skipped_updates) == 0
  kept = np.asarray(masks["dense"]["kernel"])
  assert np.all(np.asarray(trained["dense"]["kernel"])[~kept] == 0.0)
  assert isinstance(namespace["step_fn"], dp.TrainStep)
  assert namespace["step_fn"].pruning_steps == namespace["tx"].pruning_steps


def test_the_api_table_names_every_public_name_once():
  section = README.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
  names = re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.MULTILINE)
  assert sorted(names) == sorted(dp.__all__)
  assert len(names) == len(set(names))


def test_every_local_link_resolves():
  links = re.findall(r"\]\(([^)\s]+)\)", README)
  local = [link.split("#", 1)[0] for link in links if "://" not in link]
  assert local, "README.md links no local file"
  missing = [link for link in local if link and not (helpers.REPO_ROOT / link).exists()]
  assert not missing


def test_it_keeps_make_demo_and_make_test():
  makefile = (helpers.REPO_ROOT / "Makefile").read_text()
  for target in ("demo", "test"):
    assert f"make {target}" in README
    assert re.search(rf"^{target}:", makefile, re.MULTILINE)


def test_its_results_table_is_generated():
  """The numbers of "Results at a glance" sit in a generated block (experiments.
  results_tables; tests/test_study.py checks that it matches the study reports)."""
  section = README.split("\n## Results at a glance\n", 1)[1].split("\n## ", 1)[0]
  block = re.search(r"^<!-- glance:.*?-->\n(.*?)^<!-- /table -->", section, re.S | re.M)
  assert block and block.group(1).count("\n| ") >= 4
