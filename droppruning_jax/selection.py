"""Exact, sort-free selection of the lowest scores: the only way any policy picks weights.

Scores map to ``uint32`` keys with the same order; a 32-step bisection over the key
range finds each array's ``k``-th smallest key (one counting pass per step, ``O(32 n)``
elementwise work instead of an ``O(n log n)`` sort, 20-30x slower on a CPU for a
10^5-weight layer), and ties at the threshold go to the lowest flat index: the
tie-break of a stable sort, identical on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def sortable_keys(scores: jax.Array) -> jax.Array:
  """Maps float32 scores to uint32 keys of the same order (``-inf < ... < -0 < +0 < ... < inf``).

  The usual IEEE-754 trick: flip every bit of negative numbers and only the sign bit
  of the others. A positive NaN maps above ``+inf``.
  """
  bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
  flip = jnp.where(bits >> 31 == 1, jnp.uint32(0xFFFFFFFF), jnp.uint32(0x80000000))
  return bits ^ flip


def select_lowest_many(
  keys: Sequence[jax.Array], eligible: Sequence[jax.Array], ks
) -> list[jax.Array]:
  """Selects the ``k`` eligible entries of lowest key in each of several flat arrays.

  Each array gets its own threshold, exactly as if selected alone; one bisection loop
  serves all of them.

  Args:
    keys: flat uint32 key arrays (any lengths), from :func:`sortable_keys`.
    eligible: flat bool arrays, one per key array; only these can be selected.
    ks: numbers to select, one per array (may be traced); clipped to the eligible count.

  Returns:
    One flat bool array per input array.
  """
  if not len(keys) == len(eligible) == len(ks):
    raise ValueError(
      f"select_lowest_many got {len(keys)} key arrays, {len(eligible)} eligible arrays "
      f"and {len(ks)} counts; they must match."
    )
  ks = jnp.stack([jnp.asarray(k, jnp.int32) for k in ks])

  def bisect(_, bounds):
    low, high = bounds
    mid = low + (high - low) // 2
    counts = jnp.stack(
      [jnp.sum(e & (k <= mid[i]), dtype=jnp.int32) for i, (k, e) in enumerate(zip(keys, eligible))]
    )
    enough = counts >= ks
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  start = (jnp.zeros(len(keys), jnp.uint32), jnp.full(len(keys), 0xFFFFFFFF, jnp.uint32))
  thresholds, _ = jax.lax.fori_loop(0, 32, bisect, start)
  return [
    select_at_threshold(k, e, thresholds[i], ks[i]) for i, (k, e) in enumerate(zip(keys, eligible))
  ]


def select_at_threshold(keys: jax.Array, eligible: jax.Array, threshold, k) -> jax.Array:
  """The ``k`` lowest eligible keys, given ``threshold`` = the ``k``-th smallest of them.

  Every eligible key below the threshold is selected, then the first entries equal to
  it in flat-index order until ``k`` are selected. Shared by every exact selection
  method (also the radix select of ``benchmarks/selection.py``), so they agree.

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
  take_at = jax.lax.platform_dependent(at, room, cpu=tie_prefix_unless_all_fit, default=tie_prefix)
  return (below | take_at) & (k > 0)


def tie_prefix(at: jax.Array, room) -> jax.Array:
  """The first ``room`` entries of ``at`` in flat-index order (a prefix count)."""
  return at & (jnp.cumsum(at, dtype=jnp.int32) <= room)


def tie_prefix_unless_all_fit(at: jax.Array, room) -> jax.Array:
  """:func:`tie_prefix`, skipping the prefix count when every entry fits (the usual case).

  On a CPU the cumsum was 40 % of a whole selection (1.8 of 4.7 ms at 235,200
  weights), and a threshold is usually hit by one weight. CPU only: on a GPU a
  conditional's predicate is read on the host, once per leaf here, while the cumsum
  is a fast parallel scan.
  """
  return jax.lax.cond(
    jnp.sum(at, dtype=jnp.int32) <= room, lambda: at, lambda: tie_prefix(at, room)
  )


def lowest_scores_many(
  masks: Sequence[jax.Array], scores: Sequence[jax.Array], ks, *, pruned_first: bool
) -> list[jax.Array]:
  """Selects the ``k`` entries of lowest score of each mask, ties by flat index.

  Args:
    masks: current masks (``True`` = active), any shapes.
    scores: importance scores, one per mask, of its shape.
    ks: numbers to select, one per mask (may be traced).
    pruned_first: if ``True`` every pruned entry comes before every active one
      (pruned entries in flat-index order); otherwise only active entries are
      eligible and ``k`` is clipped to the active count.

  Returns:
    One boolean array per mask, of its shape, ``True`` for the selected entries.
  """
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


def final_pruned_count(size: int, target_sparsity: float) -> int:
  """Weights a leaf of ``size`` has pruned after the exact final step.

  ``round(size * target)``, but never all of them: a leaf keeps at least its most
  important weight unless it is empty, so a small output layer cannot vanish at a
  high target (the transformations warn at ``init`` when this rule binds).
  """
  return min(int(round(size * float(target_sparsity))), max(size - 1, 0))


def prune_exact_many(
  masks: Sequence[jax.Array], scores: Sequence[jax.Array], target_sparsities: Sequence[float]
) -> list[jax.Array]:
  """The exact final step for several masks, each with its own static target.

  Already pruned weights stay pruned first (``p = 1, q = 0``), then the least important
  active weights are removed; ties break by flat index. Only when more weights are
  pruned than the target allows (a stochastic overshoot) do some pruned weights come
  back: those with the highest flat indices.

  Returns:
    Masks with exactly :func:`final_pruned_count` ``False`` entries each.
  """
  counts = [final_pruned_count(m.size, t) for m, t in zip(masks, target_sparsities)]
  return [~sel for sel in lowest_scores_many(masks, scores, counts, pruned_first=True)]


def prune_exact(mask: jax.Array, scores: jax.Array, target_sparsity: float) -> jax.Array:
  """:func:`prune_exact_many` for one mask: exactly ``round(n * target)`` weights end up pruned.

  Args:
    mask: current mask (``True`` = active).
    scores: importance of every weight (low = unimportant), of the mask's shape.
    target_sparsity: static final sparsity in ``[0, 1)``.

  Returns:
    The new mask; at least one weight stays active (see :func:`final_pruned_count`).
  """
  return prune_exact_many([mask], [scores], [target_sparsity])[0]
