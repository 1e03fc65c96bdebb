"""``packed_masks=True``: masks stored as bits, with results identical to bool masks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import droppruning_jax as dp
from tests.helpers import make_step, random_grads, toy_params


@settings(max_examples=40, deadline=None)
@given(
  shape=st.lists(st.integers(1, 9), min_size=1, max_size=4),
  seed=st.integers(0, 2**16),
  density=st.floats(0.0, 1.0),
)
def test_pack_unpack_round_trip_is_exact(shape, seed, density):
  mask = np.random.default_rng(seed).random(shape) < density
  masks = {"kernel": jnp.asarray(mask), "bias": jnp.ones((), jnp.bool_)}
  packed = dp.pack_masks(masks)
  leaf = packed["kernel"]
  assert isinstance(leaf, dp.PackedMask) and leaf.shape == tuple(shape)
  assert leaf.bits.dtype == jnp.uint8 and leaf.bits.shape == (-(-mask.size // 8),)
  assert packed["bias"] is masks["bias"]  # markers stay as they are
  unpacked = dp.unpack_masks(packed)
  chex.assert_trees_all_equal(unpacked, masks)
  chex.assert_trees_all_equal(dp.unpack_masks(masks), masks)  # bool trees pass through
  chex.assert_trees_all_equal(dp.pack_masks(packed), packed)  # packing twice is harmless


def _loop(tx, prune_at, steps, jit=True):
  """A loop as experiments/train.py runs it: the conditional only on pruning steps."""

  variants = {
    skip: (jax.jit if jit else lambda f: f)(make_step(tx, skip_mask_update=skip))
    for skip in (False, True)
  }
  params = toy_params()
  state = tx.init(params)
  history = []
  for t in range(steps):
    params, state = variants[t not in prune_at](params, state, random_grads(params, t))
    history.append((params, dp.get_masks(state)))
  return history, state


def _transforms(packed):
  return {
    "drop_restore_adam": (
      dp.drop_pruning(
        optax.adam(1e-2),
        target_sparsity=0.7,
        begin_step=2,
        end_step=18,
        update_every=2,
        drop_back_prob=0.2,
        regrow_init="restore",
        seed=5,
        packed_masks=packed,
      ),
      set(dp.pruning_steps(2, 18, 2)),
    ),
    "drop_global": (
      dp.drop_pruning(
        optax.sgd(0.05, momentum=0.9),
        target_sparsity=0.8,
        end_step=12,
        update_every=2,
        sparsity_distribution="global",
        packed_masks=packed,
      ),
      set(dp.pruning_steps(0, 12, 2)),
    ),
    "han": (
      dp.han_pruning(optax.sgd(0.05), pruning_steps=[3, 8, 14], quality=0.6, packed_masks=packed),
      {3, 8, 14},
    ),
  }


# Eagerly (without jit) only for han: an eager drop update takes about a minute on a
# 2-core CPU, and jit = no-jit is tested for bool masks in test_wrapper.py.
@pytest.mark.parametrize(
  "name, jit",
  [("drop_restore_adam", True), ("drop_global", True), ("han", True), ("han", False)],
  ids=["jit-drop_restore_adam", "jit-drop_global", "jit-han", "nojit-han"],
)
def test_packed_masks_give_identical_training(name, jit):
  bool_history, bool_state = _loop(*_transforms(False)[name], 24, jit=jit)
  packed_history, packed_state = _loop(*_transforms(True)[name], 24, jit=jit)
  for t, (expected, got) in enumerate(zip(bool_history, packed_history)):
    chex.assert_trees_all_equal(got, expected, custom_message=f"step {t}")
  assert dp.sparsity(packed_history[-1][1]) > 0.5
  chex.assert_trees_all_equal(dp.get_stats(packed_state), dp.get_stats(bool_state))
  # The state really holds bits: 1/8 of the bytes of the bool masks.
  stored = jax.tree.leaves(packed_state.masks, is_leaf=lambda x: isinstance(x, dp.PackedMask))
  for leaf, mask in zip(stored, jax.tree.leaves(dp.get_masks(packed_state))):
    if mask.ndim:
      assert isinstance(leaf, dp.PackedMask)
      assert leaf.bits.nbytes == -(-mask.size // 8)


def test_packed_state_checkpoints_and_resumes_identically(tmp_path):
  tx, prune_at = _transforms(True)["drop_restore_adam"]
  history, state = _loop(tx, prune_at, 9)
  params = history[-1][0]
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
  checkpointer.wait_until_finished()
  loaded = checkpointer.restore(
    tmp_path / "ckpt", {"params": params, "opt_state": tx.init(toy_params())}
  )
  chex.assert_trees_all_equal(loaded["opt_state"], state)
  assert isinstance(loaded["opt_state"].masks["dense"]["kernel"], dp.PackedMask)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  chex.assert_trees_all_equal(
    step(params, state, random_grads(params, 9)),
    step(loaded["params"], loaded["opt_state"], random_grads(params, 9)),
  )


@pytest.mark.parametrize("value", [1, "yes", None])
def test_packed_masks_must_be_a_bool(value):
  with pytest.raises(ValueError, match=f"packed_masks={value!r}"):
    dp.drop_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=4, packed_masks=value)
  with pytest.raises(ValueError, match=f"packed_masks={value!r}"):
    dp.han_pruning(optax.sgd(0.1), pruning_steps=[2], quality=0.5, packed_masks=value)


def test_public_mask_functions_accept_a_states_packed_masks():
  tx, prune_at = _transforms(True)["drop_restore_adam"]
  history, state = _loop(tx, prune_at, 12)
  params, bool_masks = history[-1]
  packed = state.masks  # raw state field: PackedMask leaves
  assert dp.sparsity(packed) == dp.sparsity(bool_masks) > 0.3
  assert dp.layer_sparsity(packed) == dp.layer_sparsity(bool_masks)
  assert dp.count_params(params, packed) == dp.count_params(params, bool_masks)
  chex.assert_trees_all_equal(dp.apply_masks(params, packed), dp.apply_masks(params, bool_masks))
  chex.assert_trees_all_equal(
    dp.sparse_to_dense(dp.export_sparse(params, packed)),
    dp.sparse_to_dense(dp.export_sparse(params, bool_masks)),
  )


def test_unpacking_a_replicated_tree_is_a_clear_error():
  packed = dp.pack_masks({"kernel": jnp.ones((5, 7), jnp.bool_)})
  replicated = jax.tree.map(lambda x: jnp.stack([x, x]), packed)
  with pytest.raises(ValueError, match=r"shape \(2, 5\), expected one axis"):
    dp.unpack_masks(replicated)
  # One replica, as dp.get_masks takes it, unpacks.
  one = jax.tree.map(lambda x: x[0], replicated)
  chex.assert_trees_all_equal(dp.unpack_masks(one), {"kernel": jnp.ones((5, 7), jnp.bool_)})
