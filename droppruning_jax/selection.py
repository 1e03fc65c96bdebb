"""Exact, sort-free selection of the lowest scores: the only way any policy picks weights.

Scores map to ``uint32`` keys with the same order; a 32-step bisection over the key
range finds each array's ``k``-th smallest key (one counting pass per step, ``O(32 n)``
elementwise work instead of an ``O(n log n)`` sort, 20-30x slower on a CPU for a
10^5-weight layer), and ties at the threshold go to the lowest flat index: the
tie-break of a stable sort, identical on every backend.
"""

from __future__ import annotations

import math
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


def is_sharded(*arrays) -> bool:
  """Whether to take the sharded code path (decided at trace time, free).

  ``True`` under a mesh set with ``jax.set_mesh`` that has a non-manual axis of more
  than one device (explicit or auto axes), or when an array's type carries a
  non-replicated explicit sharding. Inside ``shard_map``/``pmap`` over every axis the
  arrays are per-device blocks: ``False``.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    manual = jax.sharding.AxisType.Manual
    if any(t != manual and n > 1 for t, n in zip(mesh.axis_types, mesh.axis_sizes)):
      return True
  return any(sharded_spec(x) for x in arrays)


def sharded_spec(x):
  """The explicit ``PartitionSpec`` of ``x``'s type if it shards an axis, else ``None``."""
  try:
    sharding = jax.typeof(x).sharding
  except (TypeError, AttributeError):
    return None
  spec = getattr(sharding, "spec", None)
  if spec is None or all(axis is None for axis in spec):
    return None
  return spec


def flat_index(x: jax.Array, offset: int = 0) -> jax.Array:
  """``offset +`` the row-major flat index of every entry of ``x``, as uint32 of its shape.

  Built from per-axis iotas with ``x``'s sharding: nothing is flattened or gathered.
  """
  spec = sharded_spec(x)
  sharding = jax.typeof(x).sharding if spec is not None else None
  index, stride = jnp.uint32(offset), 1
  for axis in reversed(range(x.ndim)):
    iota = jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis, out_sharding=sharding)
    index = index + iota * jnp.uint32(stride)
    stride *= x.shape[axis]
  return index


def top_entry(eligible: jax.Array, scores: jax.Array) -> jax.Array:
  """The eligible entry of highest score (the lowest flat index among equals; a NaN score
  is highest), as a bool array of the shape: one ``True``, none if nothing is eligible.

  ``jnp.argmax`` of the flattened scores, written without flattening so that a sharded
  array stays sharded (one max and one min all-reduce).
  """
  masked = jnp.where(eligible, scores, -jnp.inf)
  best = jnp.max(masked)
  at_best = (masked == best) | (jnp.isnan(masked) & jnp.isnan(best))
  index = flat_index(eligible)
  top = jnp.min(jnp.where(at_best, index, jnp.uint32(0xFFFFFFFF)))
  return (index == top) & eligible


def total(arrays, dtype=jnp.int32) -> jax.Array:
  """The sum of every element of ``arrays`` (a list of arrays), in ``dtype``; 0 if empty."""
  return sum((jnp.sum(a, dtype=dtype) for a in arrays), jnp.zeros((), dtype))


def bisect(count_at, wanted: jax.Array, low: jax.Array, high: jax.Array, passes: int):
  """Per group, the smallest uint32 ``v`` in ``[low, high]`` with ``count_at(v) >= wanted``.

  The one bisection loop of the library (thresholds of the exact selection, their tie
  cut, and the weighted drop probabilities): ``count_at`` maps a vector of candidate
  values, one per group, to the vector of counts (or masses), non-decreasing in ``v``.
  ``passes`` halvings of ``high - low``; 32 cover the whole uint32 range.
  """

  def halve(_, bounds):
    low, high = bounds
    mid = low + (high - low) // 2
    enough = count_at(mid) >= wanted
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  return jax.lax.fori_loop(0, passes, halve, (low, high))[0]


def select_lowest_groups(
  keys: Sequence[Sequence[jax.Array]], eligible: Sequence[Sequence[jax.Array]], ks
) -> list[list[jax.Array]]:
  """Selects the ``k`` eligible entries of lowest key of each group of arrays.

  The arrays of a group share one selection of ``k`` entries, ordered by key and then by
  position in the group's concatenated flat order (array, then row-major index); a group
  of one array is one array selected alone. The layout is this function's choice, with
  the same result: unsharded groups are flattened and concatenated
  (:func:`select_lowest_many`); sharded arrays stay in their own shapes
  (:func:`_select_lowest_sharded`): nothing is gathered.

  Args:
    keys: per group, uint32 key arrays (:func:`sortable_keys`) of any shapes.
    eligible: per group, bool arrays of the keys' shapes; only these can be selected.
    ks: numbers to select, one per group (may be traced); clipped to the eligible count.

  Returns:
    Per group, one bool array per key array, of its shape.
  """
  if is_sharded(*[a for group in (*keys, *eligible) for a in group]):
    return _select_lowest_sharded(keys, eligible, ks)
  flat = select_lowest_many(
    [_flat_concat(group) for group in keys], [_flat_concat(group) for group in eligible], ks
  )
  return [_split_like(f, group) for f, group in zip(flat, keys)]


def select_lowest_each(keys: Sequence[jax.Array], eligible: Sequence[jax.Array], ks) -> list:
  """:func:`select_lowest_groups` with one group per array: each array selects alone."""
  groups = select_lowest_groups([[k] for k in keys], [[e] for e in eligible], ks)
  return [group[0] for group in groups]


def _flat_concat(arrays: Sequence[jax.Array]) -> jax.Array:
  return jnp.concatenate([a.reshape(-1) for a in arrays])


def _split_like(flat: jax.Array, arrays: Sequence[jax.Array]) -> list[jax.Array]:
  pieces = jnp.split(flat, list(_offsets(arrays)[1:-1]))
  return [piece.reshape(a.shape) for piece, a in zip(pieces, arrays)]


def _select_lowest_sharded(keys, eligible, ks) -> list[list[jax.Array]]:
  """:func:`select_lowest_groups` on sharded arrays, in their own shapes.

  Every bisection pass is an elementwise compare and one sum per group (an all-reduce of
  an int32 when sharded), and ties at the threshold are resolved by a second bisection
  over the flat index instead of a prefix count (a ``cumsum`` needs the whole array).
  """
  ks = jnp.stack([jnp.asarray(k, jnp.int32) for k in ks])
  groups = range(len(keys))

  def count_keys_at_most(mid):
    return jnp.stack(
      [total([e & (k <= mid[g]) for k, e in zip(keys[g], eligible[g])]) for g in groups]
    )

  thresholds = bisect(
    count_keys_at_most,
    ks,
    jnp.zeros(len(keys), jnp.uint32),
    jnp.full(len(keys), 0xFFFFFFFF, jnp.uint32),
    32,
  )
  below = [[e & (k < thresholds[g]) for k, e in zip(keys[g], eligible[g])] for g in groups]
  at = [[e & (k == thresholds[g]) for k, e in zip(keys[g], eligible[g])] for g in groups]
  rooms = jnp.stack([ks[g] - total(below[g]) for g in groups])
  offsets = [[int(o) for o in _offsets(group)] for group in keys]
  index = [[flat_index(k, offsets[g][i]) for i, k in enumerate(keys[g])] for g in groups]
  totals = [offsets[g][-1] for g in groups]

  def prefix():
    def count_index_below(mid):
      return jnp.stack([total([a & (i < mid[g]) for a, i in zip(at[g], index[g])]) for g in groups])

    passes = max(1, math.ceil(math.log2(max(totals) + 1)))
    start = jnp.zeros(len(keys), jnp.uint32)
    cuts = bisect(count_index_below, rooms, start, jnp.asarray(totals, jnp.uint32), passes)
    return [[a & (i < cuts[g]) for a, i in zip(at[g], index[g])] for g in groups]

  # Usually every entry at the threshold fits; the index bisection runs only on ties.
  fits = jnp.all(jnp.stack([total(at[g]) for g in groups]) <= rooms)
  take_at = jax.lax.cond(fits, lambda: at, prefix)
  return [[(b | t) & (ks[g] > 0) for b, t in zip(below[g], take_at[g])] for g in groups]


def _offsets(arrays) -> list[int]:
  offsets = [0]
  for a in arrays:
    offsets.append(offsets[-1] + a.size)
  if offsets[-1] >= 2**32:
    raise ValueError(f"a selection over {offsets[-1]} entries needs fewer than 2**32.")
  return offsets


def lowest_scores_groups(
  masks: Sequence[Sequence[jax.Array]],
  scores: Sequence[Sequence[jax.Array]],
  ks,
  *,
  pruned_first: bool,
) -> list[list[jax.Array]]:
  """Selects the ``k`` entries of lowest score of each group of masks, ties by position.

  The masks of a group share one selection (:func:`select_lowest_groups`): one group per
  leaf selects per leaf, one group of every leaf is a global pool.

  Args:
    masks: per group, current masks (``True`` = active), any shapes.
    scores: per group, importance scores, one per mask, of its shape.
    ks: numbers to select, one per group (may be traced).
    pruned_first: if ``True`` every pruned entry comes before every active one
      (pruned entries in flat-index order); otherwise only active entries are
      eligible and ``k`` is clipped to the active count.

  Returns:
    Per group, one boolean array per mask, of its shape, ``True`` for the selected entries.
  """
  keys, eligible = [], []
  for group_masks, group_scores in zip(masks, scores):
    keys.append([]), eligible.append([])
    for mask, score in zip(group_masks, group_scores):
      key = sortable_keys(score)
      if pruned_first:
        # Pruned entries get the lowest key, 0, so they come first (in index order); an
        # active entry's key is at least 1 (key 0 is only the all-ones NaN pattern). One
        # bisection then serves both.
        key = jnp.where(mask, jnp.maximum(key, jnp.uint32(1)), jnp.uint32(0))
        mask = jnp.ones_like(mask)
      keys[-1].append(key)
      eligible[-1].append(mask)
  return select_lowest_groups(keys, eligible, ks)


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

  def count_keys_at_most(mid):
    return jnp.stack(
      [jnp.sum(e & (k <= mid[i]), dtype=jnp.int32) for i, (k, e) in enumerate(zip(keys, eligible))]
    )

  low = jnp.zeros(len(keys), jnp.uint32)
  thresholds = bisect(count_keys_at_most, ks, low, jnp.full(len(keys), 0xFFFFFFFF, jnp.uint32), 32)
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
  """:func:`lowest_scores_groups` with one group per mask: each selects alone."""
  groups = lowest_scores_groups(
    [[m] for m in masks], [[s] for s in scores], ks, pruned_first=pruned_first
  )
  return [group[0] for group in groups]


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
