"""The experiment loop under ``parallel="jit"`` (a device mesh, optionally FSDP) and with
the NNX models (``model_api="nnx"``), against the pmap loop.

Tiny runs (LeNet-300-100, 16 steps of synthetic IDX data) on the two simulated CPU
devices of tests/conftest.py; the idx data and configs come from tests/helpers.py.
"""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from experiments import checkpoints, errors, input_pipeline, methods, report, steps, train
from experiments import placement as placement_lib
from experiments.configs import default
from tests import helpers

# Trains real runs, shared through ``finished_run``: XLA's default passes (conftest.py).
DEFAULT_COMPILER_PASSES = True

needs_two_devices = pytest.mark.skipif(
  jax.local_device_count() < 2, reason="needs 2 (simulated) devices"
)
STEPS_PER_EPOCH = 256 // 16


def _config(idx_dir, **overrides):
  return helpers.idx_config(idx_dir, update_every=2, **overrides)


def _masks(workdir):
  return helpers.final_state(workdir)["opt_state"]["masks"]


@pytest.mark.parametrize("devices", [1, 2])
def test_jit_run_matches_pmap_and_resumes_bitwise(idx_dir, tmp_path, finished_run, devices):
  if devices > jax.local_device_count():
    pytest.skip("needs 2 (simulated) devices")
  overrides = dict(num_devices=devices)
  jit_summary, jit_dir = finished_run(_config(idx_dir, parallel="jit", **overrides))
  assert jit_summary["device_count"] == devices
  helpers.assert_exact_final_sparsity(jit_summary, jit_dir, 0.9)
  if devices == 2:  # compared with pmap on 2 devices only (one compile less)
    pmap_summary, pmap_dir = finished_run(_config(idx_dir, parallel="pmap", **overrides))
    # Same masks for the same seed; the params agree to rounding (another reduction order).
    chex.assert_trees_all_equal(_masks(pmap_dir), _masks(jit_dir))
    chex.assert_trees_all_close(
      helpers.final_state(pmap_dir)["params"], helpers.final_state(jit_dir)["params"], atol=1e-5
    )
    assert jit_summary["sparsity"] == pmap_summary["sparsity"]
    assert jit_summary["test_error"] == pytest.approx(pmap_summary["test_error"], abs=0.02)

  # Stopped mid-epoch (a mid-epoch checkpoint), resumed, finished: the same bits.
  resumed_dir = tmp_path / "resumed"
  first = train.train_and_evaluate(
    _config(
      idx_dir,
      parallel="jit",
      stop_after_steps=7,
      checkpoint_every_steps=3,
      **overrides,
    ),
    resumed_dir,
  )
  assert first == {"stopped": True, "last_epoch": 0}
  assert checkpoints.restore_checkpoint(resumed_dir)["step"] == 6
  resumed = train.train_and_evaluate(_config(idx_dir, parallel="jit", **overrides), resumed_dir)
  chex.assert_trees_all_equal(helpers.final_state(jit_dir), helpers.final_state(resumed_dir))
  assert resumed["test_error"] == jit_summary["test_error"]

  def without_times(lines):
    return [{k: v for k, v in line.items() if not k.endswith("_time_s")} for line in lines]

  assert without_times(report.read_metrics(resumed_dir)) == without_times(
    report.read_metrics(jit_dir)
  )
  # The parallel mode changes results in the last bits: a resume cannot switch it.
  with pytest.raises(errors.ConfigError, match="parallel 'jit' -> 'pmap'"):
    train.train_and_evaluate(_config(idx_dir, parallel="pmap", **overrides), resumed_dir)


@needs_two_devices
def test_fsdp_shards_the_state_and_matches_data_parallel(idx_dir, tmp_path, finished_run):
  fsdp = dict(
    parallel="jit",
    mesh_shape=(1, 2),
    mesh_axes=("data", "fsdp"),
    fsdp_axis="fsdp",
    num_devices=2,
  )
  config = _config(idx_dir, **fsdp)
  _, pmap_dir = finished_run(_config(idx_dir, parallel="pmap", num_devices=2))
  summary = train.train_and_evaluate(config, tmp_path / "fsdp")
  chex.assert_trees_all_equal(_masks(pmap_dir), _masks(tmp_path / "fsdp"))
  chex.assert_trees_all_close(
    helpers.final_state(pmap_dir)["params"],
    helpers.final_state(tmp_path / "fsdp")["params"],
    atol=1e-5,
  )
  helpers.assert_exact_final_sparsity(summary, tmp_path / "fsdp", 0.9)

  # The placement shards every kernel and its mask over "fsdp" (largest divisible axis).
  data = input_pipeline.load_data(config)
  model = methods.make_model(config, data.num_classes)
  params, batch_stats = methods.init_variables(config, model, data.image_shape)
  tx = methods.make_optimizer(config, STEPS_PER_EPOCH, params)
  state = steps.TrainState(params, batch_stats, tx.init(params))
  placement = placement_lib.make_placement(config, train.select_devices(config), state)
  on_mesh = placement.put_state(jax.tree.map(np.asarray, state))
  kernel = on_mesh.params["dense1"]["kernel"]  # (784, 300)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  assert [s.data.shape for s in kernel.addressable_shards] == [(392, 300)] * 2
  mask = on_mesh.opt_state.masks["dense1"]["kernel"]
  assert mask.sharding.spec == kernel.sharding.spec
  chex.assert_trees_all_equal(placement.get_state(on_mesh), jax.tree.map(np.asarray, state))

  # The run's checkpoint restores straight onto the mesh, each leaf in its sharding,
  # with the values of a restore onto the host; put_state copies them on the devices.
  def target(state):
    partial = np.zeros(len(checkpoints.PARTIAL_FIELDS), np.float64)
    step = np.array(0, np.int64)
    return {"state": state, "step": step, "epoch": step, "partial": partial}

  host = jax.tree.map(np.asarray, state)
  restored = checkpoints.restore_checkpoint(
    tmp_path / "fsdp", target(placement.restore_target(host))
  )
  restored = restored["state"]
  for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(placement.state_sharding)):
    assert isinstance(leaf, jax.Array) and leaf.sharding == sharding
  assert restored.params["dense1"]["kernel"].sharding.spec == kernel.sharding.spec
  placed = placement.put_state(restored)
  for copy, leaf in zip(jax.tree.leaves(placed), jax.tree.leaves(restored)):
    assert copy is not leaf and copy.sharding == leaf.sharding
  on_host = checkpoints.restore_checkpoint(tmp_path / "fsdp", target(host))["state"]
  chex.assert_trees_all_equal(placement.get_state(restored), on_host)


def test_fsdp_spec_picks_the_largest_divisible_axis():
  P = jax.sharding.PartitionSpec
  assert placement_lib.fsdp_spec((784, 300), "f", 2) == P("f", None)
  assert placement_lib.fsdp_spec((100, 300), "f", 4) == P(None, "f")
  assert placement_lib.fsdp_spec((5, 5, 1, 20), "f", 4) == P(None, None, None, "f")
  assert placement_lib.fsdp_spec((3, 7), "f", 2) == P()
  assert placement_lib.fsdp_spec((), "f", 2) == P()


def test_nnx_lenet300_trains_to_the_exact_sparsity(idx_dir, tmp_path):
  config = _config(idx_dir, model_api="nnx", parallel="jit")
  summary = train.train_and_evaluate(config, tmp_path / "nnx")
  helpers.assert_exact_final_sparsity(summary, tmp_path / "nnx", 0.9)
  state = helpers.final_state(tmp_path / "nnx")
  assert sorted(state["params"]) == ["dense1", "dense2", "dense3"]
  for param, mask in zip(
    jax.tree.leaves(state["params"]), jax.tree.leaves(state["opt_state"]["masks"])
  ):
    if np.ndim(mask):
      assert np.all(param[~mask] == 0)
  # The reported error is the saved params' (one model.apply over the test set).
  data = input_pipeline.load_data(config)
  logits = methods.make_model(config, data.num_classes).apply(
    {"params": state["params"]}, data.test_images
  )
  assert summary["test_error"] == pytest.approx(
    float(np.mean(np.argmax(logits, -1) != data.test_labels)), abs=1e-6
  )


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"parallel": "shard"}, "parallel='shard'"),
    ({"parallel": "jit", "mesh_shape": (3,), "num_devices": 2}, "mesh_shape=(3,) holds 3"),
    ({"parallel": "jit", "mesh_shape": (-1, -1), "mesh_axes": ("a", "b")}, "cannot be completed"),
    ({"parallel": "jit", "mesh_axes": ("data", "fsdp")}, "of equal length"),
    ({"parallel": "jit", "fsdp_axis": "model"}, "fsdp_axis='model' is not one of"),
    ({"model_api": "nnx", "model": "vgg16", "dataset": "cifar10"}, "no NNX version"),
    ({"model_api": "haiku"}, "model_api='haiku'"),
  ],
)
def test_invalid_parallel_and_model_api_configs(overrides, message, tmp_path):
  with pytest.raises(ValueError, match="^invalid config: ") as error:
    train.train_and_evaluate(_config(tmp_path / "no-data", **overrides), tmp_path / "run")
  assert message in str(error.value)
  assert not (tmp_path / "run").exists()


@needs_two_devices
def test_jit_over_two_processes_matches_one_process(idx_dir, tmp_path, finished_run):
  """2 processes x 1 CPU device on one mesh (jax.distributed), stopped mid-epoch and
  resumed by two new processes == 1 process x 2 devices."""
  config = _config(idx_dir, parallel="jit")
  defaults = default.get_config()
  fields = {name: value for name, value in config.items() if value != defaults[name]}
  extra = {"stop_after_steps": 7, "checkpoint_every_steps": 3}
  helpers.run_two_processes({**fields, **extra}, tmp_path / "multi")
  assert checkpoints.restore_checkpoint(tmp_path / "multi")["step"] == 6
  helpers.run_two_processes(fields, tmp_path / "multi")  # resumes
  single, single_dir = finished_run(_config(idx_dir, parallel="jit", num_devices=2))
  multi = report.read_summary(tmp_path / "multi")
  assert multi["process_count"] == 2 and multi["device_count"] == 2
  assert [start["step"] for start in multi["starts"]] == [0, 6]
  state_multi = helpers.final_state(tmp_path / "multi")
  state_single = helpers.final_state(single_dir)
  chex.assert_trees_all_close(state_multi["params"], state_single["params"], atol=1e-6)
  chex.assert_trees_all_equal(state_multi["opt_state"]["masks"], state_single["opt_state"]["masks"])
  assert multi["test_error"] == pytest.approx(single["test_error"], abs=1e-6)
