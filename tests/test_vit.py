"""The ViT (``experiments.models.ViT``: every parameter annotated for a ``("data",
"model")`` mesh, biases and LayerNorm scales included) pruned on a 2x2 mesh of 4 simulated
CPU devices: with the library in a user's NNX loop (``nnx.Optimizer`` with
``dp.drop_pruning(optax.adamw(...))``), and with the runner (``--config.model=vit``, jit).

The checks run in one subprocess with 4 devices (the suite itself has 2); it prints a JSON
report that the tests read. Every step blocks on its result: simulated collectives stall
when many steps are queued.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET, END, EVERY, STEPS = 0.8, 10, 2, 12


def _library_run(mesh):
  """``STEPS`` steps of the ViT in a user's NNX loop; with ``mesh`` built and trained under
  ``jax.set_mesh`` (the annotations shard it), else on one device without sharding."""
  import jax
  import numpy as np
  import optax
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec

  import droppruning_jax as dp
  from experiments import models

  def loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  @nnx.jit
  def step(model, optimizer, x, y):
    optimizer.update(model, nnx.grad(loss)(model, x, y))

  def build():
    model = models.ViT(rngs=nnx.Rngs(0))
    tx = dp.drop_pruning(
      optax.adamw(1e-3), target_sparsity=TARGET, end_step=END, update_every=EVERY, seed=0
    )
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  if mesh is None:
    with nnx.use_eager_sharding(False):
      model, optimizer = build()
  else:
    with jax.set_mesh(mesh):
      model, optimizer = build()
  for t in range(STEPS):
    x = jax.random.normal(jax.random.PRNGKey(t), (8, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(1000 + t), (8,), 0, 10)
    if mesh is not None:
      x, y = (jax.device_put(a, NamedSharding(mesh, PartitionSpec("data"))) for a in (x, y))
      with jax.set_mesh(mesh):
        step(model, optimizer, x, y)
    else:
      step(model, optimizer, x, y)
    jax.block_until_ready(nnx.state(model))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  masks = nnx.to_pure_dict(nnx.state(dp.get_masks(optimizer.opt_state)))
  paths = dp.masks.leaf_paths(params)
  return {
    "paths": paths,
    "params": [np.asarray(p) for p in jax.tree.leaves(params)],
    "masks": [np.asarray(m) for m in jax.tree.leaves(masks)],
    "mask_specs": {
      path: str(m.sharding.spec)
      for path, m in zip(paths, jax.tree.leaves(masks))
      if np.ndim(m) and mesh is not None
    },
  }


def _library_report() -> dict:
  import jax
  import numpy as np

  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  one, sharded = _library_run(None), _library_run(mesh)
  assert one["paths"] == sharded["paths"]
  return {
    "paths": one["paths"],
    "masks_equal": [bool(np.array_equal(a, b)) for a, b in zip(one["masks"], sharded["masks"])],
    "pruned": [int(np.sum(~m)) if m.ndim else None for m in sharded["masks"]],
    "sizes": [int(p.size) for p in sharded["params"]],
    "pruned_weights_max": max(
      float(np.max(np.abs(p[~m]), initial=0.0))
      for p, m in zip(sharded["params"], sharded["masks"])
      if m.ndim
    ),
    "mask_specs": sharded["mask_specs"],
  }


def _cli_report(idx_dir: str, workdir: Path) -> dict:
  import jax
  import numpy as np

  from experiments import methods, steps, train
  from experiments import placement as placement_lib
  from experiments.configs import vit
  from tests import helpers

  def config(**overrides):
    return helpers.small_config(
      vit.get_config(),
      idx_dir=idx_dir,
      max_train_examples=None,
      max_test_examples=None,
      batch_size=16,
      eval_batch_size=100,
      **overrides,
    )

  one = train.train_and_evaluate(config(num_devices=1), workdir / "one")
  mesh = dict(mesh_shape=(2, 2), mesh_axes=("data", "model"))
  sharded = train.train_and_evaluate(config(**mesh), workdir / "mesh")
  masks = [
    [
      np.asarray(m)
      for m in jax.tree.leaves(helpers.final_state(workdir / name)["opt_state"]["masks"])
    ]
    for name in ("one", "mesh")
  ]
  # The placement of the mesh run: params, masks and Adam moments by the annotations.
  cfg = config(**mesh)
  model = methods.make_model(cfg, 10)
  host = helpers.final_state(workdir / "mesh")
  state = steps.TrainState(host["params"], {}, host["opt_state"])
  placement = placement_lib.JitPlacement(cfg, jax.devices(), state, model.param_specs())
  flat = jax.tree_util.tree_flatten_with_path(placement.state_sharding)[0]
  specs = {jax.tree_util.keystr(path): str(s.spec) for path, s in flat}
  return {
    "sparsity": [one["sparsity"], sharded["sparsity"]],
    "layer_sparsity": sharded["layer_sparsity"],
    "devices": [one["device_count"], sharded["device_count"]],
    "masks_equal": [bool(np.array_equal(a, b)) for a, b in zip(*masks)],
    "specs": {k: v for k, v in specs.items() if "mlp1" in k and "block0" in k},
  }


@pytest.fixture(scope="module")
def report(idx_dir, tmp_path_factory) -> dict:
  folder = tmp_path_factory.mktemp("vit")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  env["PYTHONPATH"] = str(ROOT)
  result = subprocess.run(
    [sys.executable, str(Path(__file__)), str(idx_dir), str(folder / "runs")],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=400,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _is_kernel_or_embedding(path: str) -> bool:
  return path.endswith("kernel") or path.endswith("embedding")


def test_vit_has_every_parameter_annotated_and_the_default_prunes_only_kernels_and_embeddings():
  import jax
  from flax import nnx
  from jax.sharding import PartitionSpec as P

  import droppruning_jax as dp
  from experiments import methods, models

  model = methods.FunctionalNNX("vit", num_classes=10)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), None))["params"]
  specs = model.param_specs()
  paths = dp.masks.leaf_paths(params)
  assert len(paths) == 40 and models.num_params(params) == 72_074
  assert all(spec != P() for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)))
  with nnx.use_eager_sharding(False):
    real = nnx.to_pure_dict(nnx.state(models.ViT(rngs=nnx.Rngs(0)), nnx.Param))
  prunable = [p for p, m in zip(paths, jax.tree.leaves(dp.masks.init_masks(real))) if m.ndim]
  assert prunable == [p for p in paths if _is_kernel_or_embedding(p)]
  assert "block0/attn/query/kernel" in prunable and "pos_embedding" in prunable
  assert not any(p.endswith(("bias", "scale", "cls_token")) for p in prunable)


def test_library_on_a_2x2_mesh_prunes_the_annotated_vit_like_one_device(report):
  lib = report["library"]
  # The block trains on the mesh with every parameter annotated, to the masks of the
  # unannotated one-device run, bit for bit.
  assert all(lib["masks_equal"]), lib
  for path, pruned, size in zip(lib["paths"], lib["pruned"], lib["sizes"]):
    if _is_kernel_or_embedding(path):
      assert pruned == round(size * TARGET), path  # the exact target, layer by layer
    else:
      assert pruned is None, path  # biases, norm scales, the class token: never pruned
  assert lib["pruned_weights_max"] == 0.0
  # Masks live where their parameters do (tensor parallel x FSDP).
  assert lib["mask_specs"]["block0/mlp1/kernel"] == "P('data', 'model')"
  assert lib["mask_specs"]["block0/attn/out/kernel"] == "P('model', None, 'data')"


def test_runner_trains_the_vit_on_one_device_and_on_a_2x2_mesh_to_the_same_masks(report):
  cli = report["cli"]
  assert cli["devices"] == [1, 4]
  assert all(cli["masks_equal"]) and len(cli["masks_equal"]) == 40
  assert cli["sparsity"][0] == cli["sparsity"][1] > 0.85
  assert set(cli["layer_sparsity"]) == {
    p for p in report["library"]["paths"] if _is_kernel_or_embedding(p)
  }
  specs = cli["specs"]
  want = "P('data', 'model')"
  kernel = [v for k, v in specs.items() if k.endswith("['mlp1']['kernel']")]
  bias = [v for k, v in specs.items() if k.endswith("['mlp1']['bias']")]
  # The param, its mask and its two Adam moments: sharded like the param.
  assert kernel.count(want) == 4, specs
  # The bias: its param and moments sharded over "model"; its mask, a scalar, replicated.
  assert sorted(bias) == sorted(["P()"] + ["P('model',)"] * 3), specs


if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))
  print(
    json.dumps({"library": _library_report(), "cli": _cli_report(sys.argv[1], Path(sys.argv[2]))})
  )
