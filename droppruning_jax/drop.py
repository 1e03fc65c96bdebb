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


def sortable_keys(scores: jax.Array) -> jax.Array:
  """Maps float32 scores to uint32 keys with the same order (``-inf < ... < -0 < +0 < ... < inf``).

  The usual IEEE-754 trick: flip every bit of negative numbers and only the sign
  bit of the others. Integer keys make an exact threshold search possible.
  """
  bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
  flip = jnp.where(bits >> 31 == 1, jnp.uint32(0xFFFFFFFF), jnp.uint32(0x80000000))
  return bits ^ flip


def select_lowest(keys: jax.Array, eligible: jax.Array, k) -> jax.Array:
  """Selects the ``k`` eligible entries of lowest key; ties go to the lowest flat index.

  Exact and sort-free: a 32-step bisection over the uint32 key range finds the
  ``k``-th smallest eligible key ``T`` (each step is one pass counting keys
  ``<= mid``), then every eligible key ``< T`` is selected plus the first entries
  equal to ``T`` in index order. ``O(32 n)`` elementwise work instead of an
  ``O(n log n)`` sort, which is 20-30x slower on CPU for a 10^5-weight layer.

  Args:
    keys: flat uint32 keys from :func:`sortable_keys`.
    eligible: flat bool array; only these entries can be selected.
    k: number to select (may be traced); clipped to the eligible count.

  Returns:
    A flat bool array with ``min(k, eligible.sum())`` ``True`` entries.
  """
  k = jnp.asarray(k, jnp.int32)

  def bisect(_, bounds):
    low, high = bounds
    mid = low + (high - low) // 2
    enough = jnp.sum(eligible & (keys <= mid), dtype=jnp.int32) >= k
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  threshold, _ = jax.lax.fori_loop(
      0, 32, bisect, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
  )
  below = eligible & (keys < threshold)
  at = eligible & (keys == threshold)
  room = k - jnp.sum(below, dtype=jnp.int32)
  take_at = at & (jnp.cumsum(at, dtype=jnp.int32) <= room)
  return (below | take_at) & (k > 0)


def lowest_scores(mask: jax.Array, scores: jax.Array, k, *, pruned_first: bool) -> jax.Array:
  """Selects the ``k`` entries of lowest score, with a deterministic tie-break.

  Args:
    mask: current mask; decides which group comes first.
    scores: importance scores, same shape as ``mask``.
    k: number of entries to select (may be traced).
    pruned_first: if ``True`` every pruned entry (``mask == False``) comes before
      every active entry, pruned entries in flat-index order; otherwise only
      active entries are eligible (``k`` is clipped to the active count). Active
      entries are ordered by score, then by flat index, so equal scores never
      make the result depend on the backend.

  Returns:
    A boolean array of ``mask``'s shape, ``True`` for the selected entries.
  """
  flat_mask = mask.reshape(-1)
  keys = sortable_keys(scores.reshape(-1))
  k = jnp.asarray(k, jnp.int32)
  if not pruned_first:
    return select_lowest(keys, flat_mask, k).reshape(mask.shape)
  # Pruned entries get the lowest key, 0, so they come first (in index order); an
  # active entry's key is at least 1 (key 0 is only the all-ones NaN pattern). One
  # bisection then serves both groups.
  keys = jnp.where(flat_mask, jnp.maximum(keys, jnp.uint32(1)), jnp.uint32(0))
  return select_lowest(keys, jnp.ones_like(flat_mask), k).reshape(mask.shape)


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
  weights are pruned than the target allows (a stochastic overshoot) do some pruned
  weights come back: those with the highest flat indices.

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

  # The active and the pruned set are disjoint, so one uniform draw per weight serves
  # both drops independently: it decides removal for pool members and revival for
  # pruned weights. Half the random bits of two draws, and half the compile time.
  uniforms = jax.random.uniform(key, mask.shape)
  pool = lowest_scores(mask, scores, pool_size, pruned_first=False)
  after_away = mask & ~(pool & (uniforms < p))
  revived = ~mask & (uniforms < q)
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
