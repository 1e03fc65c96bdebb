"""The masked-update skeleton shared by every pruning transformation of the library.

:func:`masked_pruning` turns a *mask-update policy* (when the masks change, and how)
into an optax transformation. It owns everything the policies have in common:

* gradients are masked before the inner optimizer, so clipping, norms and moments
  never see pruned weights;
* the returned updates make ``optax.apply_updates(params, updates)`` exactly masked
  (pruned weights are exactly ``0.0`` after every step), and a revived weight restarts
  at zero (or at a stashed value) with zero optimizer moments;
* the mask change runs inside the same jitted update, behind a ``lax.switch`` on the
  step count, unless the caller states that this step changes no mask
  (``skip_mask_update=True``), which compiles the step without the conditional.

:func:`droppruning_jax.drop_pruning` and :func:`droppruning_jax.han_pruning` are
policies on top of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from droppruning_jax import masks as masks_lib

PyTree = Any


# The fields of DropStats, in the order of its vector.
STATS_FIELDS = ("last_step", "dropped_away", "dropped_back", "shortfall",
                "total_dropped_away", "total_dropped_back", "skipped_updates")
_FLOAT_FIELDS = ("shortfall",)


class DropStats(NamedTuple):
  """What the most recent pruning step did, summed over leaves, plus running totals.

  All fields live in one ``int32`` vector (``shortfall`` as the bits of a float32):
  every state leaf is a buffer that goes in and out of every jitted train step, and
  seven scalar buffers cost 1.5 % of a LeNet-300-100 step on a CPU, one vector 0.2 %
  (``docs/performance.md``). Read the fields as attributes; they index the last
  axis, so a replicated (pmap) state reads one value per replica.

  Attributes:
    values: ``int32[..., 7]``, the fields below in :data:`STATS_FIELDS` order.
  """

  values: jax.Array

  @classmethod
  def create(cls, **fields) -> "DropStats":
    """Stats from every field by name.

    Args:
      **fields: one value per name in :data:`STATS_FIELDS`, all of the same shape
        (scalars, or one value per replica).

    Returns:
      The :class:`DropStats`.

    Raises:
      ValueError: if a field is missing or unknown.
    """
    if set(fields) != set(STATS_FIELDS):
      raise ValueError(f"DropStats.create needs exactly the fields {STATS_FIELDS}, "
                       f"got {tuple(fields)}.")
    return cls(jnp.stack([_to_int32(name, fields[name]) for name in STATS_FIELDS], axis=-1))

  def replace(self, **fields) -> "DropStats":
    """A copy with the named fields set, the other fields unchanged.

    Args:
      **fields: new values by field name (see :data:`STATS_FIELDS`).

    Returns:
      The new :class:`DropStats`.

    Raises:
      ValueError: if a name is not a field.
    """
    values = jnp.asarray(self.values)  # also when the state was moved to NumPy
    for name, value in fields.items():
      if name not in STATS_FIELDS:
        raise ValueError(f"{name!r} is not a DropStats field; fields: {STATS_FIELDS}.")
      values = values.at[..., STATS_FIELDS.index(name)].set(_to_int32(name, value))
    return DropStats(values)

  def _field(self, name: str) -> jax.Array:
    value = self.values[..., STATS_FIELDS.index(name)]
    if name in _FLOAT_FIELDS:
      return jax.lax.bitcast_convert_type(value, jnp.float32)
    return value

  @property
  def last_step(self) -> jax.Array:
    """Step count of the most recent pruning step (``-1`` before the first)."""
    return self._field("last_step")

  @property
  def dropped_away(self) -> jax.Array:
    """Weights removed at that step."""
    return self._field("dropped_away")

  @property
  def dropped_back(self) -> jax.Array:
    """Weights revived at that step."""
    return self._field("dropped_back")

  @property
  def shortfall(self) -> jax.Array:
    """Largest ``target - expected sparsity`` over leaves at that step (float32).

    Positive when the target was not reachable with the given ``p`` and ``q``.
    """
    return self._field("shortfall")

  @property
  def total_dropped_away(self) -> jax.Array:
    """Weights removed since the start."""
    return self._field("total_dropped_away")

  @property
  def total_dropped_back(self) -> jax.Array:
    """Weights revived since the start."""
    return self._field("total_dropped_back")

  @property
  def skipped_updates(self) -> jax.Array:
    """Pruning steps whose mask update did not run (``skip_mask_update=True``).

    A correct loop keeps it 0.
    """
    return self._field("skipped_updates")


def _to_int32(name: str, value) -> jax.Array:
  if name in _FLOAT_FIELDS:
    return jax.lax.bitcast_convert_type(jnp.asarray(value, jnp.float32), jnp.int32)
  return jnp.asarray(value, jnp.int32)


class DropPruningState(NamedTuple):
  """State of :func:`droppruning_jax.drop_pruning` (and of ``han_pruning``).

  Attributes:
    count: number of updates applied so far (int32); the pruning schedule is a
      function of it.
    masks: boolean mask tree mirroring the params (``True`` = kept); with
      ``packed_masks=True`` its prunable leaves are
      :class:`droppruning_jax.PackedMask` (read it with
      :func:`droppruning_jax.get_masks`, which unpacks).
    inner_state: state of the wrapped transformation.
    stash: only with ``regrow_init="restore"``: for each prunable leaf, the value
      every weight had when it was last pruned; ``None`` otherwise.
    stats: :class:`DropStats` of the most recent pruning step.
  """

  count: jax.Array
  masks: PyTree
  inner_state: optax.OptState
  stash: Optional[PyTree]
  stats: DropStats


def zero_stats() -> DropStats:
  return DropStats.create(
      last_step=-1, dropped_away=0, dropped_back=0, shortfall=0.0,
      total_dropped_away=0, total_dropped_back=0, skipped_updates=0)


class MaskChange(NamedTuple):
  """What a mask-update branch receives (all traced, inside the jitted update).

  Attributes:
    count: the step count of this update.
    candidate: the params after this step's inner update, before masking; the
      weights whose importance the branch judges.
    masks: the current masks.
    stash: the current stash (``None`` unless the policy keeps one).
    stats: the current :class:`DropStats`.
  """

  count: jax.Array
  candidate: PyTree
  masks: PyTree
  stash: Optional[PyTree]
  stats: DropStats


# A branch returns (new_masks, new_stash, new_stats).
MaskBranch = Callable[[MaskChange], tuple[PyTree, Optional[PyTree], DropStats]]


def masked_pruning(
    inner: optax.GradientTransformation,
    *,
    name: str,
    branch_index: Callable[[jax.Array], jax.Array],
    branches: Sequence[MaskBranch],
    prunable: Optional[masks_lib.PrunablePredicate] = None,
    keep_stash: bool = False,
    check_masks: Optional[Callable[[PyTree], None]] = None,
    packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """An optax transformation that trains with masks and changes them by a policy.

  Args:
    inner: the optimizer to wrap.
    name: the policy's public name, for error messages.
    branch_index: ``count -> int32`` (traceable): ``0`` keeps the masks,
      ``i >= 1`` runs ``branches[i - 1]``.
    branches: the mask updates, each a :data:`MaskBranch`.
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves.
    keep_stash: keep, for every prunable weight, its value when it was last
      pruned; revived weights restart from it instead of ``0``.
    check_masks: called on the fresh mask tree at ``init`` (static shapes only);
      raises ``ValueError`` for settings that need the shapes to be checked.
    packed_masks: store the masks in the state as bits (1/8 of the bytes of
      bool masks); every step unpacks them inside the jitted update, and steps
      that may change them pack them again.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`DropPruningState`. Its ``update(updates, state, params,
    skip_mask_update=False)`` needs ``params``; ``skip_mask_update=True`` (a
    Python bool) compiles the step without the mask-update conditional, for
    loops that know on the host that this step changes no mask (see
    :func:`droppruning_jax.pruning_steps`). Skipping a pruning step anyway
    leaves the masks unchanged and counts it in ``stats.skipped_updates``.
  """

  if not isinstance(packed_masks, bool):
    raise ValueError(f"packed_masks={packed_masks!r} must be a bool.")

  def init_fn(params: PyTree) -> DropPruningState:
    masks = masks_lib.init_masks(params, prunable)
    if check_masks is not None:
      check_masks(masks)
    stash = None
    if keep_stash:
      stash = jax.tree.map(
          lambda p, m: jnp.zeros_like(p) if masks_lib.is_prunable_mask(m) else jnp.zeros((), p.dtype),
          params, masks,
      )
    return DropPruningState(
        count=jnp.zeros((), jnp.int32),
        masks=masks_lib.pack_masks(masks) if packed_masks else masks,
        inner_state=inner.init(params),
        stash=stash,
        stats=zero_stats(),
    )

  def update_fn(updates, state: DropPruningState, params=None, *, skip_mask_update: bool = False,
                **extra_args):
    del extra_args  # arguments meant for other members of an optax.chain
    if params is None:
      raise ValueError(f"{name} needs params: call tx.update(grads, state, params).")
    if not isinstance(skip_mask_update, bool):
      raise ValueError(
          f"skip_mask_update={skip_mask_update!r} must be a Python bool (it decides what "
          "is compiled); decide it on the host from the step number.")
    masks = masks_lib.unpack_masks(state.masks)
    masks_lib.check_masks_match(params, masks)
    grads = masks_lib.apply_masks(updates, masks)
    inner_updates, inner_state = inner.update(grads, state.inner_state, params)
    count = state.count
    index = branch_index(count)

    if skip_mask_update:
      # No conditional: on a GPU its predicate is read on the host, which stalls the
      # asynchronous dispatch of the whole step.
      new_masks, stash = masks, state.stash
      stats = state.stats.replace(
          skipped_updates=state.stats.skipped_updates + (index != 0).astype(jnp.int32))
    else:
      # Only the mask change sits inside the conditional (it returns small bool
      # masks); the elementwise masking below runs every step outside it, where XLA
      # fuses it into the optimizer update.
      def keep():
        return masks, state.stash, state.stats

      def change(branch):
        candidate = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, inner_updates)
        return branch(MaskChange(count, candidate, masks, state.stash, state.stats))

      new_masks, stash, stats = jax.lax.switch(
          index, [keep] + [functools.partial(change, branch) for branch in branches])

    new_updates = masks_lib.masked_updates(inner_updates, params, new_masks, masks, stash)
    if not skip_mask_update:
      # Moments of weights that are pruned, or were pruned until now, are zeroed (fused
      # into the optimizer's own elementwise update): a revived weight starts with zero
      # momentum / Adam moments, for any optax transformation with params-shaped state.
      # A skipped step changes no mask, so nothing is revived and nothing needs zeroing
      # (pruned weights stay exactly 0 through the masked updates whatever their moments).
      inner_state = optax.tree_utils.tree_map_params(
          inner,
          lambda x, new, old: jnp.where(new & old, x, jnp.zeros_like(x))
          if isinstance(x, jax.Array) and masks_lib.is_prunable_mask(new) and x.shape == new.shape
          else x,
          inner_state,
          new_masks,
          masks,
      )
    if skip_mask_update:
      stored_masks = state.masks  # unchanged: no repacking
    else:
      stored_masks = masks_lib.pack_masks(new_masks) if packed_masks else new_masks
    new_state = DropPruningState(
        count=optax.safe_int32_increment(count),
        masks=stored_masks,
        inner_state=inner_state,
        stash=stash,
        stats=stats,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
