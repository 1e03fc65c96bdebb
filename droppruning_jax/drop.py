"""The pure ``jax.random`` transforms of Drop Pruning on one mask.

Each function takes a boolean mask (``True`` = kept) of any shape and returns a new
mask of the same shape; nothing here knows about pytrees or optimizers, so the
functions compose under ``jit``, ``vmap`` and ``pmap``. The wrapper in
:mod:`droppruning_jax.wrapper` applies them per leaf (or to all leaves at once for
global pruning).
"""

from __future__ import annotations

from collections.abc import Sequence
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
  return select_lowest_many([keys], [eligible], [k])[0]


def select_lowest_many(keys: Sequence[jax.Array], eligible: Sequence[jax.Array], ks) -> list[jax.Array]:
  """:func:`select_lowest` for several independent arrays in one bisection loop.

  Each array gets its own threshold, exactly as if selected alone; sharing the loop
  means one loop for a whole model instead of one per layer (faster to compile, and
  on a GPU 32 loop-condition round trips instead of 32 per layer).

  Args:
    keys: flat uint32 key arrays (any lengths).
    eligible: flat bool arrays, one per key array.
    ks: numbers to select, one per array (may be traced).

  Returns:
    One flat bool array per input array.
  """
  if not len(keys) == len(eligible) == len(ks):
    raise ValueError(
        f"select_lowest_many got {len(keys)} key arrays, {len(eligible)} eligible arrays "
        f"and {len(ks)} counts; they must match.")
  ks = jnp.stack([jnp.asarray(k, jnp.int32) for k in ks])
  count = len(keys)

  def bisect(_, bounds):
    low, high = bounds
    mid = low + (high - low) // 2
    counts = jnp.stack([
        jnp.sum(e & (k <= mid[i]), dtype=jnp.int32) for i, (k, e) in enumerate(zip(keys, eligible))
    ])
    enough = counts >= ks
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  thresholds, _ = jax.lax.fori_loop(
      0, 32, bisect,
      (jnp.zeros(count, jnp.uint32), jnp.full(count, 0xFFFFFFFF, jnp.uint32)),
  )
  return [select_at_threshold(k, e, thresholds[i], ks[i])
          for i, (k, e) in enumerate(zip(keys, eligible))]


def select_at_threshold(keys: jax.Array, eligible: jax.Array, threshold, k) -> jax.Array:
  """The ``k`` lowest eligible keys, given ``threshold`` = the ``k``-th smallest of them.

  Every eligible key below the threshold is selected, then the first entries equal to
  it in flat-index order until ``k`` are selected: the tie-break of a stable sort.
  Shared by every exact selection method, so they select identically.

  Args:
    keys: flat uint32 keys.
    eligible: flat bool array.
    threshold: the ``k``-th smallest eligible key (uint32, may be traced).
    k: number to select (may be traced; ``<= 0`` selects nothing).

  Returns:
    A flat bool array.
  """
  below = eligible & (keys < threshold)
  at = eligible & (keys == threshold)
  room = k - jnp.sum(below, dtype=jnp.int32)
  take_at = jax.lax.platform_dependent(at, room, cpu=tie_prefix_unless_all_fit,
                                       default=tie_prefix)
  return (below | take_at) & (k > 0)


def tie_prefix(at: jax.Array, room) -> jax.Array:
  """The first ``room`` entries of ``at`` in flat-index order (a prefix count)."""
  return at & (jnp.cumsum(at, dtype=jnp.int32) <= room)


def tie_prefix_unless_all_fit(at: jax.Array, room) -> jax.Array:
  """:func:`tie_prefix`, skipping the prefix count when every entry fits (the usual case).

  On a CPU the cumsum was 40 % of a whole selection (1.8 of 4.7 ms at 235,200 weights),
  and a threshold is usually hit by one weight. Used on CPUs only: on a GPU a
  conditional's predicate is read on the host, once per leaf here, while the cumsum
  is a fast parallel scan.
  """
  return jax.lax.cond(jnp.sum(at, dtype=jnp.int32) <= room, lambda: at,
                      lambda: tie_prefix(at, room))


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
  return lowest_scores_many([mask], [scores], [k], pruned_first=pruned_first)[0]


def lowest_scores_many(masks: Sequence[jax.Array], scores: Sequence[jax.Array], ks, *,
                       pruned_first: bool) -> list[jax.Array]:
  """:func:`lowest_scores` for several independent masks, in one selection loop."""
  keys, eligible = [], []
  for mask, score in zip(masks, scores):
    flat_mask = mask.reshape(-1)
    key = sortable_keys(score.reshape(-1))
    if pruned_first:
      # Pruned entries get the lowest key, 0, so they come first (in index order); an
      # active entry's key is at least 1 (key 0 is only the all-ones NaN pattern). One
      # bisection then serves both groups.
      key = jnp.where(flat_mask, jnp.maximum(key, jnp.uint32(1)), jnp.uint32(0))
      flat_mask = jnp.ones_like(flat_mask)
    keys.append(key)
    eligible.append(flat_mask)
  selected = select_lowest_many(keys, eligible, ks)
  return [sel.reshape(mask.shape) for sel, mask in zip(selected, masks)]


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
  return prune_exact_many([mask], [scores], [target_sparsity])[0]


def prune_exact_many(masks: Sequence[jax.Array], scores: Sequence[jax.Array],
                     target_sparsities: Sequence[float]) -> list[jax.Array]:
  """:func:`prune_exact` for several masks (each with its own static target), in one loop."""
  counts = [int(round(m.size * float(t))) for m, t in zip(masks, target_sparsities)]
  return [~sel for sel in lowest_scores_many(masks, scores, counts, pruned_first=True)]


def pool_size_for_target(mask_size, pruned_count, target, drop_away_prob, drop_back_prob):
  """``c = n (s' - s (1 - q)) / p`` rounded: the pool whose expected outcome is the target."""
  s = pruned_count / mask_size
  return jnp.round(mask_size * (target - s * (1.0 - drop_back_prob)) / drop_away_prob)


def _check_drop_back_scale(drop_back_scale: str) -> None:
  if drop_back_scale not in schedules.DROP_BACK_SCALES:
    raise ValueError(
        f"drop_back_scale={drop_back_scale!r} is not one of {schedules.DROP_BACK_SCALES}."
    )


def drop_step(
    key: jax.Array,
    mask: jax.Array,
    scores: jax.Array,
    *,
    target_sparsity,
    drop_away_prob,
    drop_back_prob,
    drop_back_scale: str = "active",
    uniforms: jax.Array | None = None,
) -> tuple[jax.Array, DropInfo]:
  """One stochastic pruning step: drop away and drop back, sized to hit the target in expectation.

  With ``n`` weights, pruned set ``P`` (sparsity ``s = |P| / n``), target ``s'``,
  drop-away probability ``p`` and per-weight drop-back probability ``q``, the pool
  size is ``c = round(n (s' - s (1 - q)) / p)`` clipped to ``[0, |A|]`` so that
  ``E[s_new] = s (1 - q) + p c / n = s'`` whenever the clip does not bind.

  Args:
    key: a ``jax.random`` key (unused when ``uniforms`` is given).
    mask: current mask (``True`` = active).
    scores: importance scores (low = unimportant).
    target_sparsity: ``s'`` (may be traced).
    drop_away_prob: ``p`` in ``(0, 1]`` (may be traced).
    drop_back_prob: drop-back rate (may be traced); see ``drop_back_scale``.
    drop_back_scale: ``"active"``: ``q * |A|`` weights are revived in expectation
      (per-weight probability ``min(1, q |A| / |P|)``); ``"pruned"``: every pruned
      weight is revived with probability ``q``.
    uniforms: optional ``U[0, 1)`` draws of ``mask``'s shape to use instead of
      drawing them from ``key`` (the wrapper draws once for all leaves: one
      random-bit generator compiles several times faster than one per leaf).

  Returns:
    ``(new_mask, DropInfo)``.
  """
  _check_drop_back_scale(drop_back_scale)
  if uniforms is None:
    uniforms = jax.random.uniform(key, mask.shape)
  new_masks, infos = drop_steps(
      [mask], [scores], [uniforms], target_sparsities=[target_sparsity],
      drop_away_prob=drop_away_prob, drop_back_prob=drop_back_prob,
      drop_back_scale=drop_back_scale)
  return new_masks[0], infos[0]


def drop_steps(
    masks: Sequence[jax.Array],
    scores: Sequence[jax.Array],
    uniforms: Sequence[jax.Array],
    *,
    target_sparsities: Sequence,
    drop_away_prob,
    drop_back_prob,
    drop_back_scale: str = "active",
) -> tuple[list[jax.Array], list[DropInfo]]:
  """:func:`drop_step` for several independent masks, with one selection loop for all.

  Args:
    masks, scores, uniforms: one per mask, each of the mask's shape (``uniforms``
      are ``U[0, 1)`` draws).
    target_sparsities: one target per mask (may be traced).
    drop_away_prob, drop_back_prob, drop_back_scale: as in :func:`drop_step`,
      shared by all masks.

  Returns:
    ``(new_masks, infos)``, one of each per mask.
  """
  _check_drop_back_scale(drop_back_scale)
  for mask, u in zip(masks, uniforms):
    if u.shape != mask.shape:
      raise ValueError(f"uniforms has shape {u.shape}, expected the mask's {mask.shape}.")
  p = jnp.asarray(drop_away_prob, jnp.float32)
  plans = []
  for mask, target in zip(masks, target_sparsities):
    n = mask.size
    active_count = jnp.sum(mask, dtype=jnp.int32)
    pruned_count = n - active_count
    q = schedules.effective_drop_back_prob(
        jnp.asarray(drop_back_prob, jnp.float32), active_count, pruned_count, drop_back_scale
    )
    wanted = pool_size_for_target(n, pruned_count, target, p, q)
    pool_size = jnp.clip(wanted, 0, active_count).astype(jnp.int32)
    plans.append((n, active_count, pruned_count, q, wanted, pool_size))
  pools = lowest_scores_many(masks, scores, [plan[-1] for plan in plans], pruned_first=False)

  new_masks, infos = [], []
  for mask, u, pool, target, plan in zip(masks, uniforms, pools, target_sparsities, plans):
    n, active_count, pruned_count, q, wanted, pool_size = plan
    # The active and the pruned set are disjoint, so one uniform draw per weight serves
    # both drops independently: it decides removal for pool members and revival for
    # pruned weights. Half the random bits of two draws, and half the compile time.
    after_away = mask & ~(pool & (u < p))
    revived = ~mask & (u < q)
    new_masks.append(after_away | revived)
    expected = (pruned_count * (1.0 - q) + p * pool_size) / n
    infos.append(DropInfo(
        pool_size=pool_size,
        dropped_away=jnp.sum(mask & ~after_away, dtype=jnp.int32),
        dropped_back=jnp.sum(revived, dtype=jnp.int32),
        target=jnp.asarray(target, jnp.float32),
        expected_sparsity=expected.astype(jnp.float32),
        # Only the clip at |A| counts: rounding c to an integer is not a shortfall.
        shortfall=(p * jnp.maximum(wanted - active_count, 0) / n).astype(jnp.float32),
    ))
  return new_masks, infos
