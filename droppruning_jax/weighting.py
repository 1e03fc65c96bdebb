"""Drop probabilities from importance: per-weight probabilities that follow a score and
sum to the expected count of the uniform rule (``drop_away="importance"``,
``drop_back="gradient"`` / ``"stash"`` of :func:`droppruning_jax.drop_pruning`).

:func:`weighted_probabilities` solves for them exactly with one bisection over float32
values for every group, in one of two layouts of the same arithmetic: flat padded blocks
(few kernels for many leaves) or the arrays in their own shapes and shardings.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from droppruning_jax import checks, selection

# Order-preserving uint32 keys (selection.sortable_keys) of -inf and +inf: the bisection
# of weighted_probabilities searches the float32 values between them.
_KEY_NEG_INF = 0x007FFFFF
_KEY_POS_INF = 0xFF800000
# Bound of the energies of weighted_probabilities: infinite scores map here.
_ENERGY_BOUND = 1e30
# Block length of weighted_probabilities' flat layout (padding per group: < one block).
_BLOCK = 256


def _key_to_float(key: jax.Array) -> jax.Array:
  """The inverse of :func:`droppruning_jax.selection.sortable_keys`."""
  bits = jnp.where(key >> 31 == 1, key ^ jnp.uint32(0x80000000), ~key)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


class _ArrayLayout:
  """Groups kept as lists of arrays in their own shapes: nothing is reshaped or gathered.

  For sharded leaves. Every reduction is one sum per array; on a CPU the compile time
  of the bisection loop grew faster than the number of arrays (0.8 s for 2, 11.6 s for 8
  on a busy 2-core machine), hence :class:`_BlockLayout` elsewhere.
  """

  def __init__(self, groups):
    self.groups = groups

  def pack(self, groups, fill):
    del fill
    return [list(group) for group in groups]

  def unpack(self, field):
    return field

  def sum(self, field):
    return jnp.stack([selection.total(group, jnp.float32) for group in field])

  def min(self, field):
    return jnp.stack(
      [functools.reduce(jnp.minimum, [jnp.min(a) for a in group]) for group in field]
    )

  def spread(self, values):
    """A per-group vector as a field: each array gets its group's scalar."""
    return [[values[g]] * len(group) for g, group in enumerate(self.groups)]


class _BlockLayout:
  """Groups flattened into one ``(blocks, _BLOCK)`` array, each group padded to whole blocks.

  Per-group reductions are one reduction over the blocks and a segment sum over their
  ``n / _BLOCK`` partial results, so the compiled update has the same few kernels for
  any number of leaves.
  """

  def __init__(self, groups):
    self.groups = groups
    self.sizes = [[a.size for a in group] for group in groups]
    blocks = [-(-sum(sizes) // _BLOCK) for sizes in self.sizes]
    self.block_group = jnp.asarray(np.repeat(np.arange(len(groups)), blocks), jnp.int32)

  def pack(self, groups, fill):
    pieces = []
    for group, sizes in zip(groups, self.sizes):
      pieces += [a.reshape(-1) for a in group]
      pieces.append(jnp.full(-sum(sizes) % _BLOCK, fill, group[0].dtype))
    return jnp.concatenate(pieces).reshape(-1, _BLOCK)

  def unpack(self, field):
    flat, out, offset = field.reshape(-1), [], 0
    for group, sizes in zip(self.groups, self.sizes):
      out.append([])
      for a, size in zip(group, sizes):
        out[-1].append(flat[offset : offset + size].reshape(a.shape))
        offset += size
      offset += -sum(sizes) % _BLOCK
    return out

  def sum(self, field):
    return jax.ops.segment_sum(
      jnp.sum(field.astype(jnp.float32), axis=1),
      self.block_group,
      len(self.groups),
      indices_are_sorted=True,
    )

  def min(self, field):
    return jax.ops.segment_min(
      jnp.min(field, axis=1), self.block_group, len(self.groups), indices_are_sorted=True
    )

  def spread(self, values):
    return values[self.block_group][:, None]


def weighted_probabilities(
  scores: Sequence[Sequence[jax.Array]],
  candidates: Sequence[Sequence[jax.Array]],
  totals,
  temperature,
  *,
  layout: Optional[str] = None,
) -> list[list[jax.Array]]:
  """Per-weight probabilities ``min(1, lam exp(-z_i / T))`` that sum to a given total.

  For each group (a list of arrays of any shapes, e.g. one leaf, or every leaf of a
  global pool), over its candidates: ``z_i`` are the scores standardised over the
  group's finite candidate scores (``(s_i - mean) / std``; a NaN score counts as
  ``+inf``), so ``T`` is in units of their spread and adding a constant to every score
  or scaling them changes nothing. ``lam`` makes ``sum_i p_i = total`` (``0 <= total <=``
  the number of candidates). Low scores get high probabilities; ``T -> inf`` gives every
  candidate ``total / count``, ``T -> 0`` probability 1 to the ``total`` lowest.

  ``lam`` is exact, without a sort: with ``x_i = z_i / T`` and ``lam = exp(tau)``,
  ``f(tau) = sum_i min(1, exp(tau - x_i))`` increases with ``tau``; a 32-step bisection
  over the float32 values (their order-preserving uint32 keys, as in
  :mod:`droppruning_jax.selection`) finds the smallest float32 ``tau_hi`` with ``f >=
  total``. The capped set is then ``U = {x_i < tau_hi}`` (the real solution lies in
  ``(previous float, tau_hi]``, and no ``x_i`` lies strictly inside), and the others get
  ``(total - |U|) w_i / sum_j w_j`` with ``w_i = exp(min_j x_j - x_i)`` over them:
  ``f(tau) = total`` solved in closed form, each ``<= 1``, without overflow. Non-candidates
  get 0. One bisection loop serves every group.

  Args:
    scores: per group, float score arrays (low = more likely).
    candidates: per group, bool arrays of the scores' shapes.
    totals: per group, the wanted sum of the probabilities (may be traced).
    temperature: ``T > 0``.
    layout: ``"blocks"`` (flatten every group into one padded array: few kernels for
      any number of arrays), ``"arrays"`` (keep the arrays' shapes and shardings), or
      ``None``: ``"arrays"`` for sharded arrays, else ``"blocks"``. Same result.

  Returns:
    Per group, one float32 probability array per score array.
  """
  if layout is None:
    sharded = selection.is_sharded(*[a for group in scores for a in group])
    layout = "arrays" if sharded else "blocks"
  checks.check_choice("layout", layout, ("blocks", "arrays"))
  lay = (_ArrayLayout if layout == "arrays" else _BlockLayout)(scores)
  t = jnp.asarray(temperature, jnp.float32)
  totals = jnp.stack([jnp.asarray(total, jnp.float32) for total in totals])
  tiny = jnp.finfo(jnp.float32).tiny
  s = jax.tree.map(
    lambda x: jnp.where(jnp.isnan(x), jnp.inf, x.astype(jnp.float32)), lay.pack(scores, 0.0)
  )
  c = lay.pack(candidates, False)
  finite = jax.tree.map(lambda s, c: c & jnp.isfinite(s), s, c)
  count = jnp.maximum(lay.sum(finite), 1.0)
  mean = lay.spread(lay.sum(jax.tree.map(lambda s, f: jnp.where(f, s, 0.0), s, finite)) / count)
  var = lay.sum(jax.tree.map(lambda s, f, m: jnp.where(f, (s - m) ** 2, 0.0), s, finite, mean))
  scale = lay.spread(jnp.maximum(jnp.sqrt(var / count), tiny))  # equal scores: all alike
  # Finite energies: ``tau - x`` is never NaN, even at tau = +-inf. An infinite score
  # becomes +-_ENERGY_BOUND, far beyond any finite standardised score, so it keeps its
  # rank and a probability of 0 or 1 unless the total needs it.
  x = jax.tree.map(
    lambda s, m, d: jnp.clip((s - m) / d / t, -_ENERGY_BOUND, _ENERGY_BOUND), s, mean, scale
  )

  def mass_at(mid):
    # f(tau) = sum_i min(1, exp(tau - x_i)) over each group's candidates.
    tau = lay.spread(_key_to_float(mid))
    return lay.sum(
      jax.tree.map(lambda x, c, u: jnp.where(c, jnp.exp(jnp.minimum(u - x, 0.0)), 0.0), x, c, tau)
    )

  groups = len(scores)
  low = jnp.full(groups, _KEY_NEG_INF, jnp.uint32)
  keys = selection.bisect(mass_at, totals, low, jnp.full(groups, _KEY_POS_INF, jnp.uint32), 32)
  tau = lay.spread(_key_to_float(keys))
  capped = jax.tree.map(lambda x, c, u: c & (x < u), x, c, tau)
  rest = jax.tree.map(lambda c, u: c & ~u, c, capped)
  lowest = lay.spread(lay.min(jax.tree.map(lambda x, r: jnp.where(r, x, jnp.inf), x, rest)))
  weights = jax.tree.map(lambda x, r, m: jnp.where(r, jnp.exp(m - x), 0.0), x, rest, lowest)
  share = jnp.maximum(totals - lay.sum(capped), 0.0) / jnp.maximum(lay.sum(weights), tiny)
  probs = jax.tree.map(
    lambda u, w, a: jnp.where(u, 1.0, jnp.minimum(1.0, a * w)), capped, weights, lay.spread(share)
  )
  return lay.unpack(probs)


def back_evidence(drop_back: str, grads, stash) -> Optional[list[jax.Array]]:
  """Drop-back evidence per leaf, or ``None`` for the uniform drop back.

  ``drop_back="gradient"``: ``|g|``, this step's dense gradient; ``"stash"``: ``|stash|``,
  the magnitude a weight had when it was last pruned (``0`` for one that never had a
  value when pruned: it has the least evidence). A non-finite value is no evidence (``0``).
  """
  if drop_back == "uniform":
    return None
  values = grads if drop_back == "gradient" else stash
  return [jnp.where(jnp.isfinite(v), jnp.abs(v.astype(jnp.float32)), 0.0) for v in values]


def global_back_evidence(drop_back: str, masks, grads, stash) -> Optional[list[jax.Array]]:
  """:func:`back_evidence` divided per leaf by its mean over the leaf's pruned weights.

  One global drop back compares gradients (or stashed magnitudes) across layers, whose
  scales differ; as the scores of the global pool are normalised per leaf, so is the
  evidence.
  """
  evidence = back_evidence(drop_back, grads, stash)
  if evidence is None:
    return None
  return [divide_by_mean(e, ~mask) for e, mask in zip(evidence, masks)]


def divide_by_mean(values: jax.Array, where: jax.Array) -> jax.Array:
  """``values`` divided by their mean over ``where`` (a leaf's scale, for a global pool).

  The global pool divides each leaf's scores by their mean over its active finite
  weights, and its drop-back evidence by the mean over its pruned weights, so that layers
  of larger weights or gradients (e.g. small fan-in) do not win the pool. An empty
  ``where`` or a zero mean divides by the smallest normal float32.
  """
  count = jnp.maximum(jnp.sum(where, dtype=jnp.int32), 1)
  mean = jnp.sum(jnp.where(where, values, 0.0)) / count
  return values / jnp.maximum(mean, jnp.finfo(jnp.float32).tiny)
