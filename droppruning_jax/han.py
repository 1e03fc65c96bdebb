"""``han_pruning``: iterative prune-retrain of Han et al. (2015) as an optax transformation.

"Learning both Weights and Connections for Efficient Neural Networks" (Han, Pool,
Tran & Dally, NIPS 2015) trains a network, removes the weights whose magnitude is
below a threshold, retrains the survivors, and repeats. Here the whole procedure is
one training run: at every step listed in ``pruning_steps`` the masks shrink, and the
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

The masked update is the shared skeleton (:mod:`droppruning_jax.skeleton`), as for
:func:`droppruning_jax.drop_pruning`; the state is a :class:`droppruning_jax.PruningState`
(``stats.dropped_back`` always 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from droppruning_jax import checks, selection, skeleton
from droppruning_jax import masks as masks_lib


def _check_steps(steps: Any) -> tuple[int, ...]:
  if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
    raise ValueError(f"pruning_steps={steps!r} must be a non-empty sequence of step counts.")
  for step in steps:
    try:
      checks.check_step("step", step)
    except ValueError:
      raise ValueError(
        f"pruning_steps={list(steps)!r} contains {step!r}; every step must be an "
        f"integer in [0, {checks.MAX_STEP}]."
      ) from None
  steps = tuple(int(s) for s in steps)
  if any(b <= a for a, b in zip(steps, steps[1:])):
    raise ValueError(f"pruning_steps={list(steps)!r} must be strictly increasing.")
  return steps


def _check_layer_rates(layer_rates: Any) -> dict[str, float]:
  if not isinstance(layer_rates, Mapping) or not layer_rates:
    raise ValueError(
      f"layer_rates={layer_rates!r} must be a non-empty mapping "
      "{path or fnmatch pattern: sparsity}."
    )
  return {
    str(name): checks.check_number(
      f"layer_rates[{name!r}]", rate, 0.0, 1.0, low_open=False, high_open=True
    )
    for name, rate in layer_rates.items()
  }


def quality_masks(quality: float, params, masks) -> list[jax.Array]:
  """Prunes the active weights with ``|w| < quality * std`` of the leaf's active, finite weights.

  A leaf keeps its largest finite weight even when the threshold would remove it all;
  non-finite weights are never pruned.
  """
  new_masks = []
  for param, mask in zip(params, masks):
    valid = mask & jnp.isfinite(param)
    count = jnp.maximum(jnp.sum(valid, dtype=jnp.int32), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(valid, param, 0.0).astype(jnp.float32)) / count
    variance = jnp.sum(jnp.where(valid, (param - mean) ** 2, 0.0)) / count
    new = mask & ~(jnp.abs(param) < quality * jnp.sqrt(variance))
    keep_top = selection.top_entry(valid, jnp.abs(param)) & ~jnp.any(new)
    new_masks.append(new | keep_top)
  return new_masks


def rate_masks(rates: Sequence[float], num_cycles: int, cycle, params, masks) -> list[jax.Array]:
  """After cycle ``k`` of ``K`` a leaf of rate ``r`` has ``round(n r k / K)`` pruned weights.

  Only active weights are eligible, so nothing pruned ever comes back; a leaf keeps at
  least one weight (:func:`droppruning_jax.selection.final_pruned_count`).
  """
  extras = []
  for mask, rate in zip(masks, rates):
    # Exact integer targets per cycle, precomputed on the host; never the whole leaf.
    targets = jnp.asarray(
      [
        min(round(mask.size * rate * (k + 1) / num_cycles), mask.size - 1)
        for k in range(num_cycles)
      ],
      jnp.int32,
    )
    extras.append(jnp.maximum(targets[cycle] - jnp.sum(~mask, dtype=jnp.int32), 0))
  scores = [jnp.where(jnp.isfinite(p), jnp.abs(p), jnp.inf) for p in params]
  removed = selection.lowest_scores_many(masks, scores, extras, pruned_first=False)
  return [mask & ~r for mask, r in zip(masks, removed)]


def han_pruning(
  inner: optax.GradientTransformation,
  *,
  pruning_steps: Sequence[int],
  quality: Optional[float] = None,
  layer_rates: Optional[Mapping[str, float]] = None,
  prunable: Optional[masks_lib.PrunablePredicate] = None,
  packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optax transformation with Han et al.'s iterative magnitude pruning.

  At each step count in ``pruning_steps`` the weights after this step's update are
  examined and the pruned set grows; it never shrinks. Give exactly one of ``quality``
  and ``layer_rates``.

  Args:
    inner: the optimizer to wrap (extra ``update`` arguments are forwarded to it).
    pruning_steps: strictly increasing step counts of the pruning steps (one per
      prune-retrain cycle).
    quality: prune active weights with ``|w| < quality * std`` of the layer's active
      weights, at every pruning step.
    layer_rates: ``{path or fnmatch pattern: final sparsity}`` covering every prunable
      leaf; after cycle ``k`` of ``K`` each leaf has exactly ``round(n * rate * k / K)``
      pruned weights (the lowest magnitudes).
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves; defaults to
      :func:`droppruning_jax.default_prunable` (kernels and embeddings, never biases or
      norm scales).
    packed_masks: keep the masks in the state as bits, as in
      :func:`droppruning_jax.drop_pruning`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`droppruning_jax.PruningState`; ``update`` needs ``params`` and takes
    ``skip_mask_update`` like :func:`droppruning_jax.drop_pruning`'s.

  Raises:
    ValueError: for invalid arguments (at construction), or ``layer_rates`` that miss a
      prunable leaf or match none (at ``init``).
  """
  steps = _check_steps(pruning_steps)
  if (quality is None) == (layer_rates is None):
    raise ValueError(f"give exactly one of quality={quality!r} and layer_rates={layer_rates!r}.")
  step_array = jnp.asarray(steps, jnp.int32)

  if quality is not None:
    quality = checks.check_number(
      "quality", quality, 0.0, float("inf"), low_open=True, high_open=True
    )

    def update(context: skeleton.UpdateContext) -> skeleton.LeafUpdate:
      masks = quality_masks(quality, context.params, context.masks)
      return skeleton.LeafUpdate(masks, jnp.zeros((), jnp.float32))

    check_leaves = None
  else:
    rates = _check_layer_rates(layer_rates)

    def update(context: skeleton.UpdateContext) -> skeleton.LeafUpdate:
      cycle = jnp.argmax(context.count == step_array)
      leaf_rates = list(masks_lib.resolve_targets(context.paths, rates).values())
      masks = rate_masks(leaf_rates, len(steps), cycle, context.params, context.masks)
      return skeleton.LeafUpdate(masks, jnp.zeros((), jnp.float32))

    def check_leaves(paths, shapes):
      del shapes
      masks_lib.resolve_targets(paths, rates)  # raises for leaves without a rate or unused patterns

  policy = skeleton.MaskPolicy(
    seed=0,  # deterministic: no key is used
    updates=[update],
    check_leaves=check_leaves,
    steps=steps,
  )
  return skeleton.pruning_transformation(
    inner, policy, name="han_pruning", prunable=prunable, packed_masks=packed_masks
  )
