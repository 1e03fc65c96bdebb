"""Flax NNX: ``nnx.Optimizer(model, dp.drop_pruning(...), wrt=nnx.Param)`` under ``nnx.jit``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import droppruning_jax as dp

TARGET, END, EVERY = 0.75, 8, 2
STEPS = END + 3


class MLP(nnx.Module):
  def __init__(self, rngs, sharded=False, shard_biases=False):
    kernel_init, bias_init = nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
    if sharded:  # every kernel split over the mesh axis "data" on its last axis
      kernel_init = nnx.with_partitioning(kernel_init, (None, "data"))
    if shard_biases:
      bias_init = nnx.with_partitioning(bias_init, ("data",))
    kw = {"kernel_init": kernel_init, "bias_init": bias_init, "rngs": rngs}
    self.hidden = nnx.Linear(16, 32, **kw)
    self.out = nnx.Linear(32, 4, **kw)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def _tx(**kwargs):
  return dp.drop_pruning(
    optax.adam(1e-2),
    target_sparsity=TARGET,
    end_step=END,
    update_every=EVERY,
    drop_away_prob=1.0,
    seed=0,
    **kwargs,
  )


def _batch(step):
  x = jax.random.normal(jax.random.PRNGKey(step), (8, 16))
  y = jax.random.randint(jax.random.PRNGKey(1000 + step), (8,), 0, 4)
  return x, y


def _loss(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def train_step(model, optimizer, x, y, *, skip_mask_update=False):
  loss, grads = nnx.value_and_grad(_loss)(model, x, y)
  optimizer.update(model, grads, skip_mask_update=skip_mask_update)
  return loss


@pytest.fixture(scope="module")
def simple_run():
  """The simple loop: one ``nnx.jit`` step, ``optimizer.update(model, grads)``."""
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    grads = nnx.grad(_loss)(model, x, y)
    optimizer.update(model, grads)

  for t in range(STEPS):
    step(model, optimizer, *_batch(t))
  return model, optimizer


def _kernels(model):
  return {"hidden": model.hidden.kernel[...], "out": model.out.kernel[...]}


def _masks(optimizer):
  # nnx.Optimizer wraps its state's leaves in nnx variables; get_masks unwraps them.
  masks = dp.get_masks(optimizer.opt_state)
  assert all(isinstance(m, jax.Array) for m in jax.tree.leaves(masks)), masks
  return {"hidden": masks["hidden"]["kernel"], "out": masks["out"]["kernel"]}


def test_nnx_optimizer_prunes_to_the_exact_target_with_pruned_weights_zero(simple_run):
  model, optimizer = simple_run
  masks = _masks(optimizer)
  assert dp.sparsity(dp.get_masks(optimizer.opt_state)) == TARGET
  for name, mask in masks.items():
    assert mask.dtype == jnp.bool_
    assert 1.0 - float(np.mean(mask)) == TARGET, name  # 512 and 128 weights: exact
    kernel = np.asarray(_kernels(model)[name])
    assert np.all(kernel[~np.asarray(mask)] == 0.0), name
    assert np.all(kernel[np.asarray(mask)] != 0.0), name
  # Biases are not pruned: scalar True markers.
  assert dp.get_masks(optimizer.opt_state)["out"]["bias"].shape == ()
  stats = dp.get_stats(optimizer.opt_state)
  assert isinstance(stats, dp.PruningStats)
  assert int(stats.skipped_updates) == 0
  assert int(stats.total_dropped_away) >= round(TARGET * (512 + 128))
  assert int(optimizer.step[...]) == STEPS


def test_layer_names_are_the_same_in_prunable_per_layer_targets_and_layer_sparsity():
  """The names ``dp.layer_sparsity`` reports are the ones ``prunable`` and a per-layer
  target map receive under ``nnx.Optimizer`` (no trailing ``/value`` of the variable)."""
  seen = []

  def prunable(path, leaf):
    seen.append(path)
    return path != "out/kernel" and leaf.ndim >= 2

  tx = dp.drop_pruning(
    optax.sgd(0.1),
    target_sparsity=0.5,
    end_step=0,
    sparsity_distribution={"hidden/kernel": 0.5},
    prunable=prunable,
  )
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  assert sorted(seen) == ["hidden/bias", "hidden/kernel", "out/bias", "out/kernel"]
  nnx.jit(train_step)(model, optimizer, *_batch(0))
  assert dp.layer_sparsity(dp.get_masks(optimizer.opt_state)) == {"hidden/kernel": 0.5}
  assert dp.get_count(optimizer.opt_state) == 1


def test_skip_mask_update_reaches_the_transformation_through_optimizer_update():
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
  skipping = nnx.jit(train_step, static_argnames="skip_mask_update")
  for t in range(3):  # step 0 and 2 are pruning steps; skipped here
    skipping(model, optimizer, *_batch(t), skip_mask_update=True)
  assert dp.sparsity(dp.get_masks(optimizer.opt_state)) == 0.0
  assert int(dp.get_stats(optimizer.opt_state).skipped_updates) == 2
  hlo = skipping.lower(model, optimizer, *_batch(3), skip_mask_update=True).as_text()
  assert "conditional" not in hlo and "case" not in hlo


def test_the_fast_loop_with_nnx_jit_on_a_sharded_model_gives_the_simple_loops_masks(simple_run):
  reference_model, reference_optimizer = simple_run
  mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,))
  with jax.set_mesh(mesh):
    model = MLP(nnx.Rngs(0), sharded=True)
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    assert model.hidden.kernel[...].sharding.spec == PartitionSpec(None, "data")
    step_fn = dp.jit_train_step(train_step, dp.pruning_steps(0, END, EVERY), jit=nnx.jit)
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    for t in range(STEPS):
      x, y = jax.device_put(_batch(t), batch_sharding)
      loss = step_fn(t, model, optimizer, x, y)
      loss.block_until_ready()  # simulated collectives may stall otherwise
  assert model.hidden.kernel[...].sharding.spec == PartitionSpec(None, "data")
  assert int(dp.get_stats(optimizer.opt_state).skipped_updates) == 0
  masks, reference = _masks(optimizer), _masks(reference_optimizer)
  for name in masks:
    np.testing.assert_array_equal(masks[name], reference[name], err_msg=name)
    np.testing.assert_allclose(
      _kernels(model)[name], _kernels(reference_model)[name], rtol=1e-5, atol=1e-6
    )
    assert np.all(np.asarray(_kernels(model)[name])[~np.asarray(masks[name])] == 0.0)
  assert dp.sparsity(dp.get_masks(optimizer.opt_state)) == TARGET


@pytest.mark.parametrize("stash", [False, True])
def test_a_model_with_sharded_biases_trains_on_its_mesh(simple_run, stash):
  """Every parameter annotated, biases too (a 1-D P("data")): the non-pruned biases' scalar
  mask markers (and stash entries) carry no annotation, so nnx.Optimizer can be made and
  trains under nnx.jit on the mesh, to the masks of the unannotated model."""
  mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,))
  tx = _tx(**({"drop_back": "stash", "drop_back_prob": 0.1} if stash else {}))
  with jax.set_mesh(mesh):
    model = MLP(nnx.Rngs(0), sharded=True, shard_biases=True)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    assert model.hidden.bias[...].sharding.spec == PartitionSpec("data")
    step = nnx.jit(train_step)
    for t in range(STEPS):
      step(model, optimizer, *_batch(t)).block_until_ready()
  assert model.hidden.bias[...].sharding.spec == PartitionSpec("data")
  masks = _masks(optimizer)
  assert dp.sparsity(dp.get_masks(optimizer.opt_state)) == TARGET
  if not stash:  # the same masks as the unannotated model's simple loop
    reference = _masks(simple_run[1])
    for name in masks:
      np.testing.assert_array_equal(masks[name], reference[name], err_msg=name)
