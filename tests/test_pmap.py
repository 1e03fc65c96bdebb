"""Under pmap the masks are identical on every replica and equal the 1-device masks."""

import functools

import chex
import flax.jax_utils
import jax
import jax.numpy as jnp
import optax
import pytest

import droppruning_jax as dp

STEPS = 26


def _loss(params, x, y):
  hidden = jax.nn.relu(x @ params["w1"]["kernel"] + params["w1"]["bias"])
  return jnp.mean((hidden @ params["w2"]["kernel"] - y) ** 2)


def _setup(packed_masks=False):
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {
    "w1": {"kernel": jax.random.normal(k1, (16, 32)) * 0.3, "bias": jnp.zeros(32)},
    "w2": {"kernel": jax.random.normal(k2, (32, 4)) * 0.3},
  }
  x = jax.random.normal(k3, (STEPS, 2, 8, 16))  # step, shard, batch, features
  y = jax.random.normal(k4, (STEPS, 2, 8, 4))
  tx = dp.drop_pruning(
    optax.adam(1e-2),
    target_sparsity=0.8,
    end_step=20,
    update_every=2,
    drop_back_prob=0.2,
    seed=11,
    packed_masks=packed_masks,
  )
  return params, x, y, tx


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
@pytest.mark.parametrize("packed_masks", [False, True], ids=["bool_masks", "packed_masks"])
def test_pmap_replicas_identical_and_equal_to_one_device(packed_masks):
  params, x, y, tx = _setup(packed_masks)

  @functools.partial(jax.pmap, axis_name="batch")
  def pmap_step(params, state, x, y):
    loss, grads = jax.value_and_grad(_loss)(params, x, y)
    grads = jax.lax.pmean(grads, "batch")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, jax.lax.pmean(loss, "batch")

  @jax.jit
  def single_step(params, state, x, y):
    # The same arithmetic as pmean over 2 shards: mean of the per-shard gradients.
    grads = [jax.grad(_loss)(params, x[i], y[i]) for i in range(2)]
    grads = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  devices = jax.local_devices()[:2]
  rep_params = flax.jax_utils.replicate(params, devices)
  rep_state = flax.jax_utils.replicate(tx.init(params), devices)
  one_params, one_state = params, tx.init(params)
  for t in range(STEPS):
    rep_params, rep_state, loss = pmap_step(rep_params, rep_state, x[t], y[t])
    float(loss[0])  # block every step: simulated-CPU collectives stall otherwise
    one_params, one_state = single_step(one_params, one_state, x[t], y[t])
    masks_by_replica = [jax.tree.map(lambda m, i=i: m[i], rep_state.masks) for i in range(2)]
    chex.assert_trees_all_equal(masks_by_replica[0], masks_by_replica[1])
    chex.assert_trees_all_equal(dp.get_masks(rep_state), dp.get_masks(one_state))
    chex.assert_trees_all_close(jax.tree.map(lambda p: p[0], rep_params), one_params, atol=1e-5)
  # Past the exact step at end_step: round(0.8 n) per kernel, 410 of 512 and 102 of 128.
  assert dp.sparsity(dp.get_masks(rep_state)) == (410 + 102) / 640
  assert dp.get_count(rep_state) == dp.get_count(one_state) == STEPS
  assert int(dp.get_stats(rep_state).total_dropped_back) > 0
