"""The masked-update skeleton shared by every pruning transformation of the library.

:func:`pruning_transformation` turns a :class:`MaskPolicy` (when the masks are updated,
and a pure function that updates them) into an optax transformation. It owns everything
the policies have in common:

* gradients are masked before the inner optimizer, so clipping, norms and moments
  never see pruned weights; extra keyword arguments reach the inner optimizer;
* the returned updates make ``optax.apply_updates(params, updates)`` exactly masked
  (pruned weights are exactly ``0.0`` after every step), and a revived weight restarts
  at zero (or at a stashed value) with zero optimizer moments;
* the mask update runs inside the same jitted update, behind a ``lax.switch`` on the
  step count, unless the caller states that this step updates no mask
  (``skip_mask_update=True``), which compiles the step without the conditional;
* the key of the update at step ``t`` is ``fold_in(PRNGKey(seed), t)``; the prunable
  leaves are handed to the policy as flat lists and the tree is rebuilt here;
* the statistics: weights removed and revived, non-finite weights, running totals;
* packed masks (bits in the state, booleans inside the step).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from droppruning_jax import checks, selection
from droppruning_jax import masks as masks_lib
from droppruning_jax.stats import PruningStats

PyTree = Any


class PruningState(NamedTuple):
  """State of every pruning transformation of the library.

  Attributes:
    count: number of updates applied so far (int32); the schedule is a function of it.
    masks: boolean mask tree mirroring the params (``True`` = kept); with
      ``packed_masks=True`` its prunable leaves are :class:`droppruning_jax.PackedMask`
      (read it with :func:`droppruning_jax.get_masks`, which unpacks).
    inner_state: state of the wrapped transformation.
    stash: only for a policy that keeps one (``drop_pruning`` with
      ``regrow_init="restore"`` or ``drop_back="stash"``): for each prunable leaf, the
      value every weight had when it was last pruned (``0`` for a weight never pruned by
      a mask update); ``None`` otherwise.
    stats: :class:`droppruning_jax.PruningStats` of the most recent mask update.
  """

  count: jax.Array
  masks: PyTree
  inner_state: optax.OptState
  stash: Optional[PyTree]
  stats: PruningStats


class LeafUpdate(NamedTuple):
  """What a policy's mask update returns (flat lists over the prunable leaves).

  Attributes:
    masks: the new boolean masks, one per prunable leaf, of its shape.
    shortfall: how far the expected sparsity stays below the target (float32;
      0 when the policy has no expectation to miss).
  """

  masks: list[jax.Array]
  shortfall: jax.Array


class UpdateContext(NamedTuple):
  """What a mask update sees (flat lists over the prunable leaves, in tree order).

  Attributes:
    key: this update's key, ``fold_in(PRNGKey(policy.seed), count)``.
    count: the transformation's step count (int32, traced).
    params: the prunable params after this step's inner update, before masking.
    masks: their boolean masks before this update.
    paths: their static ``"a/b/kernel"`` names.
    grads: this step's dense gradients, before masking (a pruned weight's gradient is
      there, for gradient-based regrowth).
    stash: the value of every weight when it was last pruned, or ``None`` when the
      policy keeps no stash.
  """

  key: jax.Array
  count: jax.Array
  params: list
  masks: list
  paths: list
  grads: list
  stash: Optional[list]


# A mask update: a pure, traceable function of the context.
MaskUpdateFn = Callable[[UpdateContext], LeafUpdate]


class MaskPolicy(NamedTuple):
  """When and how a pruning method updates the masks: what
  :func:`pruning_transformation` needs to make an optax transformation of a method.

  Attributes:
    seed: the key of the update at step ``t`` is ``fold_in(PRNGKey(seed), t)``.
    updates: the mask updates, each a pure :data:`MaskUpdateFn`
      (``UpdateContext -> LeafUpdate``).
    steps: the step counts (optimizer updates) at which the masks may change, static;
      what the transformation exposes as ``pruning_steps`` for
      :func:`droppruning_jax.jit_train_step`.
    branch_index: ``count -> int32`` (traceable): ``0`` keeps the masks, ``i >= 1`` runs
      ``updates[i - 1]``. ``None``: derived from ``steps`` (the single update runs at
      each of them), which needs exactly one update.
    check_leaves: called at ``init`` with the prunable leaves' paths and shapes;
      raises ``ValueError`` (or warns) for settings that need the shapes.
    keep_stash: keep, for every prunable weight, its value when it was last pruned (the
      state's ``stash``); the updates receive it.
    regrow_from_stash: revived weights restart from their stashed value instead of ``0``
      (needs ``keep_stash``).
    initial_masks: ``(paths, masks) -> masks`` at ``init``, over the prunable leaves (all
      ``True`` in, one boolean mask per leaf out): for methods that start sparse (RigL,
      SET). ``None``: every weight starts active.
  """

  seed: int
  updates: Sequence[MaskUpdateFn]
  steps: Optional[Sequence[int]] = None
  branch_index: Optional[Callable[[jax.Array], jax.Array]] = None
  check_leaves: Optional[Callable[[list[str], list[tuple[int, ...]]], None]] = None
  keep_stash: bool = False
  regrow_from_stash: bool = False
  initial_masks: Optional[Callable[[list[str], list[jax.Array]], list[jax.Array]]] = None


def branch_index_of(policy: MaskPolicy, name: str) -> Callable[[jax.Array], jax.Array]:
  """The policy's ``branch_index``, or the one its static ``steps`` define."""
  if policy.branch_index is not None:
    return policy.branch_index
  if policy.steps is None or len(policy.updates) != 1:
    raise ValueError(
      f"{name}: a MaskPolicy without branch_index needs its steps and exactly one update "
      f"(got steps={policy.steps!r} and {len(policy.updates)} updates)."
    )
  steps = np.asarray(sorted(int(s) for s in policy.steps), np.int32)
  return lambda count: jnp.any(count == steps).astype(jnp.int32)


class PruningTransformation(optax.GradientTransformationExtraArgs):
  """An optax transformation that prunes: ``init``, ``update`` and its schedule.

  Attributes:
    pruning_steps: the step counts at which the masks may change, sorted (a tuple of
      ints): ``dp.jit_train_step(train_step, tx)`` reads them, so a fast loop cannot
      disagree with the transformation.
  """

  # A subclass of the NamedTuple without __slots__: instances take the attribute below
  # and stay GradientTransformationExtraArgs everywhere optax looks.
  pruning_steps: tuple[int, ...]


def prunable_leaves(tree: PyTree, masks: PyTree) -> tuple[list[int], list]:
  """Indices (in ``jax.tree.leaves`` order) and leaves of ``tree`` whose mask is prunable."""
  index = [i for i, m in enumerate(jax.tree.leaves(masks)) if masks_lib.is_prunable_mask(m)]
  leaves = jax.tree.leaves(tree)
  return index, [leaves[i] for i in index]


def prunable_paths(masks: PyTree) -> list[str]:
  """The ``"a/b/kernel"`` paths of the prunable leaves, in ``jax.tree.leaves`` order."""
  return [
    p
    for p, m in zip(masks_lib.leaf_paths(masks), jax.tree.leaves(masks))
    if masks_lib.is_prunable_mask(m)
  ]


def replace_leaves(tree: PyTree, index: Sequence[int], new: Sequence) -> PyTree:
  """``tree`` with the leaves at ``index`` replaced by ``new``."""
  leaves, treedef = jax.tree.flatten(tree)
  for i, leaf in zip(index, new):
    leaves[i] = leaf
  return jax.tree.unflatten(treedef, leaves)


def _update_masks(
  policy: MaskPolicy, fn: MaskUpdateFn, count, candidate, masks, stash, stats: PruningStats, grads
):
  """Runs one policy update on the prunable leaves; the stash and the statistics follow."""
  index, params = prunable_leaves(candidate, masks)
  _, old = prunable_leaves(masks, masks)
  _, leaf_grads = prunable_leaves(grads, masks)
  stashed = None if stash is None else prunable_leaves(stash, masks)[1]
  key = jax.random.fold_in(jax.random.PRNGKey(policy.seed), count)
  if index:
    context = UpdateContext(key, count, params, old, prunable_paths(masks), leaf_grads, stashed)
    new, shortfall = fn(context)
  else:
    new, shortfall = [], jnp.zeros((), jnp.float32)
  new_masks = replace_leaves(masks, index, new)
  if stash is not None:  # remember the value of every weight pruned now
    kept = [jnp.where(o & ~n, c, s) for s, c, n, o in zip(stashed, params, new, old)]
    stash = replace_leaves(stash, index, kept)
  away = selection.total([o & ~n for o, n in zip(old, new)])
  back = selection.total([n & ~o for o, n in zip(old, new)])
  nonfinite = selection.total([~jnp.isfinite(p) for p in params])
  stats = stats.replace(
    last_step=count.astype(jnp.int32),
    dropped_away=away,
    dropped_back=back,
    shortfall=shortfall,
    nonfinite=nonfinite,
    total_dropped_away=stats.total_dropped_away + away,
    total_dropped_back=stats.total_dropped_back + back,
  )
  return new_masks, stash, stats


def _key_entry(entry) -> tuple:
  """A hashable, container-independent form of one key-path entry (dict key, index, field)."""
  for attr in ("key", "idx", "name"):
    if hasattr(entry, attr):
      return (attr, getattr(entry, attr))
  return ("other", str(entry))


def path_key(path) -> tuple:
  """A key path (``jax.tree_util``) in a hashable, container-independent form."""
  return tuple(_key_entry(e) for e in path)


def map_by_param_path(fn, tree, owners: dict, default):
  """Maps every leaf of ``tree`` to ``fn(owners[k], leaf)`` where ``k`` is the longest key of
  ``owners`` (parameter paths, as :func:`path_key`) that the leaf's path ends with, and to
  ``default(leaf)`` where none is: how the state leaves of a parameter (``mu/dense/kernel``
  for ``dense/kernel``) are found in any optax state, masked or partitioned ones included."""

  def visit(path, x):
    key = path_key(path)
    for start in range(len(key) + 1):  # the longest parameter path that the leaf's ends with
      hit = owners.get(key[start:])
      if hit is not None:
        return fn(hit, x)
    return default(x)

  return jax.tree_util.tree_map_with_path(visit, tree)


def _reset_moments(inner_state, new_masks, masks):
  """Zeroes the optimizer moments of weights pruned now or until now.

  A revived weight starts with zero momentum / Adam moments. The state leaves that
  belong to a parameter are found by their key path, which ends with the parameter's
  path (``mu/dense/kernel`` for ``dense/kernel``) in any optax state: plain, chained,
  ``optax.masked`` / ``multi_transform`` / ``partition`` (whose masked-out parts are empty
  ``MaskedNode`` nodes), Muon, ``MultiSteps``, ``inject_hyperparams``. The longest matching
  parameter path wins, and a leaf of another shape (a factored second moment, a
  hyperparameter) is left alone. Fused into the optimizer's own update.
  """
  flat_new, _ = jax.tree_util.tree_flatten_with_path(new_masks)
  owners = {
    path_key(path): (new, old)
    for (path, new), old in zip(flat_new, jax.tree.leaves(masks))
    if masks_lib.is_prunable_mask(new)
  }

  def reset(hit, x):
    new, old = hit
    if not isinstance(x, jax.Array) or x.shape != new.shape:
      return x
    return jnp.where(new & old, x, jnp.zeros_like(x))

  return map_by_param_path(reset, inner_state, owners, default=lambda x: x)


def _initial_masks(policy: MaskPolicy, params: PyTree, prunable) -> PyTree:
  """The masks of ``init``: all ``True`` (each with its parameter's sharding), checked
  against the policy's shape rules, then the policy's ``initial_masks`` if it has one."""
  masks = masks_lib.init_masks(params, prunable, like_params=True)  # mapped with params
  index, leaves = prunable_leaves(masks, masks)
  paths = prunable_paths(masks)
  if policy.check_leaves is not None:
    policy.check_leaves(paths, [np.shape(m) for m in leaves])
  if policy.initial_masks is not None:
    masks = replace_leaves(masks, index, policy.initial_masks(paths, leaves))
  return masks


def _initial_stash(params: PyTree, masks: PyTree) -> PyTree:
  """Zeros for every prunable weight; a scalar for the others (no annotation)."""
  return masks_lib.unannotate_scalars(
    jax.tree.map(
      lambda p, m: jnp.zeros_like(p) if masks_lib.is_prunable_mask(m) else jnp.zeros((), p.dtype),
      params,
      masks,
    )
  )


def pruning_transformation(
  inner: optax.GradientTransformation,
  policy: MaskPolicy,
  *,
  name: str,
  prunable: Optional[masks_lib.PrunablePredicate] = None,
  packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """An optax transformation that trains with masks and updates them by ``policy``.

  Args:
    inner: the optimizer to wrap; it receives the extra keyword arguments of
      ``update`` (e.g. ``value=loss`` for ``optax.contrib.reduce_on_plateau``).
    policy: the :class:`MaskPolicy`.
    name: the policy's public name, for error messages.
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves.
    packed_masks: store the masks in the state as bits (1/8 of the bytes of bool
      masks); every step unpacks them inside the jitted update.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`PruningState`.
    Its ``update(updates, state, params, *, skip_mask_update=False, **extra_args)``
    needs ``params``; ``skip_mask_update=True`` (a Python bool) compiles the step
    without the mask-update conditional, for loops that know on the host that this
    step updates no mask. Skipping a pruning step anyway leaves the masks unchanged
    and counts it in ``stats.skipped_updates``.
  """
  checks.check_bool("packed_masks", packed_masks)
  if policy.regrow_from_stash and not policy.keep_stash:
    raise ValueError(f"{name}: regrow_from_stash needs keep_stash (there is nothing to restore).")
  inner = optax.with_extra_args_support(inner)
  branch_index = branch_index_of(policy, name)

  def init_fn(params: PyTree) -> PruningState:
    masks = _initial_masks(policy, params, prunable)
    return PruningState(
      count=jnp.zeros((), jnp.int32),
      # Stored masks carry no annotation on non-pruned parameters' scalar markers.
      masks=masks_lib.unannotate_scalars(masks_lib.pack_masks(masks) if packed_masks else masks),
      inner_state=inner.init(params),
      stash=_initial_stash(params, masks) if policy.keep_stash else None,
      stats=PruningStats.zeros(),
    )

  def update_fn(
    grads, state: PruningState, params=None, *, skip_mask_update: bool = False, **extra_args
  ):
    if params is None:
      raise ValueError(f"{name} needs params: call tx.update(grads, state, params).")
    if not isinstance(skip_mask_update, bool):
      raise ValueError(
        f"skip_mask_update={skip_mask_update!r} must be a Python bool (it decides what "
        "is compiled); decide it on the host from the step number."
      )
    masks = masks_lib.unpack_masks(state.masks, like=params)
    masks_lib.check_masks_match(params, masks)
    masked_grads = masks_lib.apply_masks(grads, masks)
    inner_updates, inner_state = inner.update(masked_grads, state.inner_state, params, **extra_args)
    index = branch_index(state.count)
    if skip_mask_update:
      # No conditional: on a GPU its predicate is read on the host, which stalls the
      # asynchronous dispatch of the whole step. Nothing is revived, so no moment needs
      # zeroing (pruned weights stay exactly 0 through the masked updates).
      new_masks, stash, stored_masks = masks, state.stash, state.masks
      stats = state.stats.replace(
        skipped_updates=state.stats.skipped_updates + (index != 0).astype(jnp.int32)
      )
    else:
      # Only the mask update sits inside the conditional (it returns small bool masks);
      # the elementwise masking below runs outside it, fused into the optimizer update.
      def keep():
        return masks, state.stash, state.stats

      def run(fn):
        candidate = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, inner_updates)
        return _update_masks(
          policy, fn, state.count, candidate, masks, state.stash, state.stats, grads
        )

      new_masks, stash, stats = jax.lax.switch(
        index, [keep] + [functools.partial(run, fn) for fn in policy.updates]
      )
      inner_state = _reset_moments(inner_state, new_masks, masks)
      stored_masks = masks_lib.pack_masks(new_masks) if packed_masks else new_masks
    regrow = stash if policy.regrow_from_stash else None  # else revived weights restart at 0
    new_updates = masks_lib.masked_updates(inner_updates, params, new_masks, masks, regrow)
    new_state = PruningState(
      count=optax.safe_int32_increment(state.count),
      masks=stored_masks,
      inner_state=inner_state,
      stash=stash,
      stats=stats,
    )
    return new_updates, new_state

  return with_pruning_steps(optax.GradientTransformationExtraArgs(init_fn, update_fn), policy.steps)


def with_pruning_steps(
  tx: optax.GradientTransformationExtraArgs, steps: Optional[Sequence[int]]
) -> optax.GradientTransformationExtraArgs:
  """``tx`` as a :class:`PruningTransformation` exposing ``steps`` (unchanged if None)."""
  if steps is None:
    return tx
  wrapped = PruningTransformation(tx.init, tx.update)
  wrapped.pruning_steps = tuple(sorted(int(s) for s in steps))
  return wrapped


def find_state(opt_state: optax.OptState) -> PruningState:
  """Finds the :class:`PruningState` inside any optimizer state.

  Works when the transformation is nested (e.g. inside ``optax.chain``) and on a
  ``pmap``-replicated state, whose replicas are identical by construction (the key
  does not depend on the device): replica 0 is returned.

  Raises:
    ValueError: if there is no such state, or more than one.
  """
  is_state = lambda x: isinstance(x, PruningState)  # noqa: E731
  found = [leaf for leaf in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(leaf)]
  if len(found) != 1:
    raise ValueError(
      f"expected exactly one PruningState in the optimizer state, found {len(found)}."
    )
  state = found[0]
  if np.ndim(state.count) > 0:  # replicated by pmap: a leading device axis
    state = jax.tree.map(lambda x: x[0], state)
  return state


def unwrap_variables(tree: PyTree) -> PyTree:
  """``tree`` with Flax NNX variables replaced by their values (``nnx.Optimizer`` wraps
  every leaf of its optimizer state in one); other trees are returned as they are."""
  nnx = sys.modules.get("flax.nnx")  # a state can hold nnx variables only if it is loaded
  return tree if nnx is None else nnx.as_pure(tree)


def get_masks(opt_state: optax.OptState) -> PyTree:
  """The boolean mask tree of an optimizer state (replica 0 of a replicated state).

  Packed masks (``packed_masks=True``) are unpacked, so the result always mirrors the
  params; the masks of an ``nnx.Optimizer``'s state come unwrapped, as arrays.
  """
  return masks_lib.unpack_masks(unwrap_variables(find_state(opt_state).masks))


def get_count(opt_state: optax.OptState) -> int:
  """The number of updates the optimizer state has taken, as a host ``int``.

  The step to resume a loop at (``dp.jit_train_step``'s ``step``) after restoring a state;
  reads one scalar from the device. Nested, replicated and ``nnx.Optimizer`` states work
  as for :func:`get_masks`.
  """
  return int(np.asarray(unwrap_variables(find_state(opt_state).count)))


def get_stats(opt_state: optax.OptState) -> PruningStats:
  """The :class:`droppruning_jax.PruningStats` held in an optimizer state (also an
  ``nnx.Optimizer``'s, unwrapped)."""
  return unwrap_variables(find_state(opt_state).stats)
