"""``han_pruning``: iterative prune-retrain of Han et al. (2015) as an optax transformation.

"Learning both Weights and Connections for Efficient Neural Networks" (Han, Pool,
Tran & Dally, NIPS 2015) trains a network, removes the weights whose magnitude is
below a threshold, retrains the survivors, and repeats. Here the whole procedure is
one training run: at every step listed in ``prune_steps`` the masks shrink, and the
steps in between are the retraining. Pruned weights never come back, which is the
difference to Drop Pruning that the paper's comparisons are about.

Two ways of choosing the threshold:

* ``quality=q``: prune the active weights with ``|w| < q * std(active weights of
  the layer)``, the rule of the paper ("the threshold is a quality parameter
  multiplied by the standard deviation of a layer's weights"). The final sparsity
  then depends on the weights; repeating the step prunes more each time because
  the standard deviation of the survivors grows.
* ``layer_rates={path or pattern: sparsity}``: prune each layer by magnitude to a
  given sparsity, reached in equal increments: after cycle ``k`` of ``K`` a layer
  with rate ``r`` has exactly ``round(n * r * k / K)`` pruned weights (Han et al.'s
  per-layer LeNet rates can be given this way).

The masked update is the one of :func:`droppruning_jax.drop_pruning` (both are
policies of :func:`droppruning_jax.masked.masked_pruning`): gradients are masked
before the inner optimizer, and the returned updates are ``-p`` on pruned entries so
that ``optax.apply_updates`` leaves them exactly ``0.0``. The masks change inside the
same jitted update.

The state is a :class:`droppruning_jax.DropPruningState` (``stash`` is always
``None`` and ``stats.dropped_back`` always 0), so :func:`droppruning_jax.get_masks`
and :func:`droppruning_jax.get_stats` work on it unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from droppruning_jax import drop
from droppruning_jax import masks as masks_lib
from droppruning_jax import masked
from droppruning_jax.masked import DropPruningState

PyTree = Any

# The state of han_pruning; an alias so that get_masks / get_stats find it.
HanPruningState = DropPruningState


def _check_prune_steps(prune_steps: Sequence[int]) -> tuple[int, ...]:
  if isinstance(prune_steps, (str, bytes)) or not isinstance(prune_steps, Sequence):
    raise ValueError(f"prune_steps={prune_steps!r} must be a sequence of step counts.")
  if not prune_steps:
    raise ValueError("prune_steps=[] is empty; give at least one pruning step.")
  for step in prune_steps:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
      raise ValueError(
          f"prune_steps={list(prune_steps)!r} contains {step!r}; every step must be an "
          "integer >= 0."
      )
  steps = tuple(int(s) for s in prune_steps)
  if any(b <= a for a, b in zip(steps, steps[1:])):
    raise ValueError(f"prune_steps={list(steps)!r} must be strictly increasing.")
  return steps


def _check_quality(quality: Any) -> float:
  if (
      isinstance(quality, bool)
      or not isinstance(quality, numbers.Real)
      or not np.isfinite(quality)
      or quality <= 0
  ):
    raise ValueError(f"quality={quality!r} must be a finite number > 0.")
  return float(quality)


def _check_layer_rates(layer_rates: Any) -> dict[str, float]:
  if not isinstance(layer_rates, Mapping) or not layer_rates:
    raise ValueError(
        f"layer_rates={layer_rates!r} must be a non-empty mapping "
        "{path or fnmatch pattern: sparsity}."
    )
  rates = {}
  for name, rate in layer_rates.items():
    if (
        isinstance(rate, bool)
        or not isinstance(rate, numbers.Real)
        or not np.isfinite(rate)
        or not 0.0 <= rate < 1.0
    ):
      raise ValueError(f"layer_rates[{name!r}]={rate!r} is outside [0, 1).")
    rates[str(name)] = float(rate)
  return rates


def han_pruning(
    inner: optax.GradientTransformation,
    *,
    prune_steps: Sequence[int],
    quality: Optional[float] = None,
    layer_rates: Optional[Mapping[str, float]] = None,
    prunable: Optional[masks_lib.PrunablePredicate] = None,
    packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optax transformation with Han et al.'s iterative magnitude pruning.

  At each step count in ``prune_steps`` the weights after this step's update are
  examined and the pruned set grows; it never shrinks. Give exactly one of
  ``quality`` and ``layer_rates``.

  Args:
    inner: the optimizer to wrap.
    prune_steps: strictly increasing step counts of the pruning steps (one per
      prune-retrain cycle).
    quality: prune active weights with ``|w| < quality * std`` of the layer's
      active weights, at every pruning step.
    layer_rates: ``{path or fnmatch pattern: final sparsity}`` covering every
      prunable leaf; after cycle ``k`` of ``K`` each leaf has exactly
      ``round(n * rate * k / K)`` pruned weights (the lowest magnitudes).
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves; defaults to
      leaves with ``ndim >= 2``.
    packed_masks: keep the masks in the state as bits, as in
      :func:`droppruning_jax.drop_pruning`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`droppruning_jax.DropPruningState`. Its ``update`` needs ``params`` and
    takes ``skip_mask_update`` like :func:`droppruning_jax.drop_pruning`'s (pass
    ``True`` on steps not in ``prune_steps``).

  Raises:
    ValueError: for invalid arguments (at construction), or ``layer_rates`` that
      miss a prunable leaf or match none (at ``init``).
  """
  steps = _check_prune_steps(prune_steps)
  if (quality is None) == (layer_rates is None):
    raise ValueError(
        f"give exactly one of quality={quality!r} and layer_rates={layer_rates!r}."
    )
  if quality is not None:
    quality = _check_quality(quality)
  rates = None if layer_rates is None else _check_layer_rates(layer_rates)
  num_cycles = len(steps)

  def leaf_rates(masks: PyTree) -> list[float]:
    """Final sparsity of every prunable leaf, in leaf order (static)."""
    by_name = masks_lib.resolve_leaf_targets(masks, rates)
    return list(by_name.values())

  def quality_mask(candidate: jax.Array, mask: jax.Array) -> jax.Array:
    active = jnp.sum(mask, dtype=jnp.int32)
    count = jnp.maximum(active, 1).astype(jnp.float32)
    values = jnp.where(mask, candidate, 0.0).astype(jnp.float32)
    mean = jnp.sum(values) / count
    variance = jnp.sum(jnp.where(mask, (candidate - mean) ** 2, 0.0)) / count
    threshold = quality * jnp.sqrt(variance)
    return mask & (jnp.abs(candidate) >= threshold)

  def rate_mask(candidate: jax.Array, mask: jax.Array, rate: float, cycle) -> jax.Array:
    # Exact integer targets per cycle, precomputed on the host.
    targets = jnp.asarray(
        [round(mask.size * rate * (k + 1) / num_cycles) for k in range(num_cycles)],
        jnp.int32,
    )
    pruned = jnp.sum(~mask, dtype=jnp.int32)
    extra = jnp.maximum(targets[cycle] - pruned, 0)
    # Only active weights are eligible, so nothing pruned ever comes back.
    newly_pruned = drop.lowest_scores(mask, jnp.abs(candidate), extra, pruned_first=False)
    return mask & ~newly_pruned

  def prune(change: masked.MaskChange):
    count, masks = change.count, change.masks
    cycle = jnp.argmax(count == jnp.asarray(steps, jnp.int32))
    mask_leaves, treedef = jax.tree.flatten(masks)
    candidate_leaves = jax.tree.leaves(change.candidate)
    prunable_idx = [i for i, m in enumerate(mask_leaves) if masks_lib.is_prunable_mask(m)]
    new_leaves = list(mask_leaves)
    if rates is not None:
      for i, rate in zip(prunable_idx, leaf_rates(masks)):
        new_leaves[i] = rate_mask(candidate_leaves[i], mask_leaves[i], rate, cycle)
    else:
      for i in prunable_idx:
        new_leaves[i] = quality_mask(candidate_leaves[i], mask_leaves[i])
    dropped = sum(
        (jnp.sum(mask_leaves[i] & ~new_leaves[i], dtype=jnp.int32) for i in prunable_idx),
        jnp.zeros((), jnp.int32),
    )
    stats = change.stats.replace(
        last_step=count.astype(jnp.int32),
        dropped_away=dropped,
        dropped_back=jnp.zeros((), jnp.int32),
        shortfall=jnp.zeros((), jnp.float32),
        total_dropped_away=change.stats.total_dropped_away + dropped,
    )
    return jax.tree.unflatten(treedef, new_leaves), None, stats

  def branch_index(count):
    return jnp.any(count == jnp.asarray(steps, jnp.int32)).astype(jnp.int32)

  def check_masks(masks):
    if rates is not None:
      leaf_rates(masks)  # raises for leaves without a rate or unused patterns

  return masked.masked_pruning(
      inner,
      name="han_pruning",
      branch_index=branch_index,
      branches=[prune],
      prunable=prunable,
      check_masks=check_masks,
      packed_masks=packed_masks,
  )
