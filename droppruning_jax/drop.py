"""The pure ``jax.random`` transforms of Drop Pruning on one mask.

Each function takes a boolean mask (``True`` = kept) of any shape and returns a new
mask of the same shape; nothing here knows about pytrees or optimizers, so the
functions compose under ``jit``, ``vmap`` and ``pmap``. The wrapper in
:mod:`droppruning_jax.wrapper` applies them per leaf (or to all leaves at once for
global pruning).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from droppruning_jax import schedules


class DropInfo(NamedTuple):
  """What one drop step did to one mask.

  Attributes:
    pool_size: ``c``, the number of drop-away candidates after clipping.
    dropped_away: weights removed by this step.
    dropped_back: weights revived by this step.
    target: scheduled sparsity after the step.
    expected_sparsity: expected sparsity after the step given ``c``, ``p``, ``q``.
    shortfall: expected sparsity missing because the pool was clipped at the
      active count, i.e. the target was not reachable at this step (0 otherwise).
  """

  pool_size: jax.Array
  dropped_away: jax.Array
  dropped_back: jax.Array
  target: jax.Array
  expected_sparsity: jax.Array
  shortfall: jax.Array


def lowest_scores(mask: jax.Array, scores: jax.Array, k, *, pruned_first: bool) -> jax.Array:
  """Selects the ``k`` entries of lowest score, with a deterministic tie-break.

  Args:
    mask: current mask; decides which group sorts first.
    scores: importance scores, same shape as ``mask``.
    k: number of entries to select (may be traced).
    pruned_first: if ``True`` pruned entries (``mask == False``) come before every
      active entry; otherwise active entries come first. Within a group entries
      are ordered by score and then by flat index, so equal scores never make the
      result depend on the backend.

  Returns:
    A boolean array, ``True`` for the ``k`` selected entries.
  """
  flat_mask = mask.reshape(-1)
  flat_scores = scores.reshape(-1).astype(jnp.float32)
  group = flat_mask if pruned_first else ~flat_mask
  # lexsort is stable and its last key is the primary key: group, then score, then index.
  order = jnp.lexsort((flat_scores, group))
  selected_sorted = jnp.arange(flat_mask.size) < k
  selected = jnp.zeros_like(flat_mask).at[order].set(selected_sorted)
  return selected.reshape(mask.shape)


def drop_away(key: jax.Array, mask: jax.Array, scores: jax.Array, pool_size, prob) -> jax.Array:
  """Drop away: each of the ``pool_size`` least important active weights is removed with probability ``prob``.

  Args:
    key: a ``jax.random`` key.
    mask: current mask (``True`` = active).
    scores: importance of every weight (low = unimportant).
    pool_size: ``c``; clipped to the number of active weights.
    prob: drop-away probability ``p``.

  Returns:
    The new mask (a subset of ``mask``).
  """
  pool_size = jnp.clip(pool_size, 0, jnp.sum(mask))
  pool = lowest_scores(mask, scores, pool_size, pruned_first=False)
  removed = pool & jax.random.bernoulli(key, prob, mask.shape)
  return mask & ~removed


def drop_back(key: jax.Array, mask: jax.Array, prob) -> jax.Array:
  """Drop back: each pruned weight is revived independently with probability ``prob``.

  Args:
    key: a ``jax.random`` key.
    mask: current mask (``True`` = active).
    prob: per-weight revival probability ``q``.

  Returns:
    The new mask (a superset of ``mask``).
  """
  return mask | jax.random.bernoulli(key, prob, mask.shape)


def prune_exact(mask: jax.Array, scores: jax.Array, target_sparsity: float) -> jax.Array:
  """The final exact step: exactly ``round(n * target_sparsity)`` weights end up pruned.

  Already pruned weights stay pruned first (``p = 1, q = 0``), then the least
  important active weights are removed; ties break by flat index. Only when more
  weights are pruned than the target allows (a stochastic overshoot) do the
  lowest-index pruned weights come back.

  Args:
    mask: current mask.
    scores: importance of every weight.
    target_sparsity: static final sparsity.

  Returns:
    A mask with exactly ``n - round(n * target_sparsity)`` ``True`` entries.
  """
  num_pruned = int(round(mask.size * float(target_sparsity)))
  return ~lowest_scores(mask, scores, num_pruned, pruned_first=True)


def pool_size_for_target(mask_size, pruned_count, target, drop_away_prob, drop_back_prob):
  """``c = n (s' - s (1 - q)) / p`` rounded: the pool whose expected outcome is the target."""
  s = pruned_count / mask_size
  return jnp.round(mask_size * (target - s * (1.0 - drop_back_prob)) / drop_away_prob)


def drop_step(
    key: jax.Array,
    mask: jax.Array,
    scores: jax.Array,
    *,
    target_sparsity,
    drop_away_prob,
    drop_back_prob,
    drop_back_scale: str = "active",
) -> tuple[jax.Array, DropInfo]:
  """One stochastic pruning step: drop away and drop back, sized to hit the target in expectation.

  With ``n`` weights, pruned set ``P`` (sparsity ``s = |P| / n``), target ``s'``,
  drop-away probability ``p`` and per-weight drop-back probability ``q``, the pool
  size is ``c = round(n (s' - s (1 - q)) / p)`` clipped to ``[0, |A|]`` so that
  ``E[s_new] = s (1 - q) + p c / n = s'`` whenever the clip does not bind.

  Args:
    key: a ``jax.random`` key.
    mask: current mask (``True`` = active).
    scores: importance scores (low = unimportant).
    target_sparsity: ``s'`` (may be traced).
    drop_away_prob: ``p`` in ``(0, 1]`` (may be traced).
    drop_back_prob: drop-back rate (may be traced); see ``drop_back_scale``.
    drop_back_scale: ``"active"``: ``q * |A|`` weights are revived in expectation
      (per-weight probability ``min(1, q |A| / |P|)``); ``"pruned"``: every pruned
      weight is revived with probability ``q``.

  Returns:
    ``(new_mask, DropInfo)``.
  """
  if drop_back_scale not in schedules.DROP_BACK_SCALES:
    raise ValueError(
        f"drop_back_scale={drop_back_scale!r} is not one of {schedules.DROP_BACK_SCALES}."
    )
  n = mask.size
  active_count = jnp.sum(mask, dtype=jnp.int32)
  pruned_count = n - active_count
  q = schedules.effective_drop_back_prob(
      jnp.asarray(drop_back_prob, jnp.float32), active_count, pruned_count, drop_back_scale
  )
  p = jnp.asarray(drop_away_prob, jnp.float32)
  wanted = pool_size_for_target(n, pruned_count, target_sparsity, p, q)
  pool_size = jnp.clip(wanted, 0, active_count).astype(jnp.int32)

  away_key, back_key = jax.random.split(key)
  after_away = drop_away(away_key, mask, scores, pool_size, p)
  revived = drop_back(back_key, mask, q) & ~mask
  new_mask = after_away | revived

  expected = (pruned_count * (1.0 - q) + p * pool_size) / n
  info = DropInfo(
      pool_size=pool_size,
      dropped_away=jnp.sum(mask & ~after_away, dtype=jnp.int32),
      dropped_back=jnp.sum(revived, dtype=jnp.int32),
      target=jnp.asarray(target_sparsity, jnp.float32),
      expected_sparsity=expected.astype(jnp.float32),
      # Only the clip at |A| counts: rounding c to an integer is not a shortfall.
      shortfall=(p * jnp.maximum(wanted - active_count, 0) / n).astype(jnp.float32),
  )
  return new_mask, info
