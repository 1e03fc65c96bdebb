"""Dynamic sparse training baselines: RigL (Evci et al., 2020) and SET (Mocanu et al., 2018).

Both train a network that is sparse from the start and keep its sparsity fixed while the
topology changes:

* ``init`` draws a random topology: each prunable leaf gets exactly its target number of
  pruned weights (:func:`droppruning_jax.selection.final_pruned_count`), chosen uniformly
  at random with the key of count 0, ``fold_in(PRNGKey(seed), 0)``;
* at every count ``t`` in ``(0, end_step)`` that is a multiple of ``update_every``, each
  leaf drops the ``k = round(d(t) * |A|)`` active weights of lowest magnitude and regrows
  ``k`` weights that are inactive after the drop: RigL those of largest ``|gradient|``
  (the step's dense gradient), SET ``k`` chosen uniformly at random; so every leaf keeps
  exactly its target sparsity;
* from ``end_step`` on the masks are frozen.

One policy factory, :func:`dynamic_sparse_policy`, serves both; the methods differ only in
their regrowth criterion. Every choice is exact O(n) selection
(:mod:`droppruning_jax.selection`), ties broken by the lowest flat index. The masked
update, zero restart and moment reset of regrown weights are the shared skeleton's
(:mod:`droppruning_jax.skeleton`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from droppruning_jax import checks, schedules, selection, skeleton
from droppruning_jax import distribution as distribution_lib
from droppruning_jax import masks as masks_lib
from droppruning_jax import plan as plan_lib

DECAYS = ("cosine", "constant")

# (key, params, grads) -> one uint32 key array per leaf: among the weights inactive after
# the drop, the k of lowest key are regrown.
RegrowthKeys = Callable[[jax.Array, list, list], list]


def random_keys(key: jax.Array, like: Sequence[jax.Array]) -> list[jax.Array]:
  """Independent uniform uint32 keys of each leaf's shape (leaf ``i`` from ``fold_in(key, i)``).

  The ``k`` lowest of them are a uniformly random ``k``-subset; 32 bits make a tie at the
  threshold (broken by flat index) rare even for 10^6 weights.
  """
  return [
    jax.random.bits(jax.random.fold_in(key, i), x.shape, jnp.uint32) for i, x in enumerate(like)
  ]


def magnitude_keys(params: Sequence[jax.Array]) -> list[jax.Array]:
  """Drop keys: ``|w|``; non-finite weights rank last (dropped only if nothing else is left)."""
  return [
    selection.sortable_keys(jnp.where(jnp.isfinite(p), jnp.abs(p), jnp.inf).astype(jnp.float32))
    for p in params
  ]


def gradient_regrowth(key, params, grads) -> list[jax.Array]:
  """RigL: the largest ``|gradient|`` first (key of ``-|g|``); a NaN gradient ranks last."""
  del key, params
  return [
    selection.sortable_keys(jnp.where(jnp.isnan(g), jnp.inf, -jnp.abs(g)).astype(jnp.float32))
    for g in grads
  ]


def random_regrowth(key, params, grads) -> list[jax.Array]:
  """SET: uniformly at random among the inactive weights (from the step's key)."""
  del grads
  return random_keys(key, params)


def drop_fraction_at(count, drop_fraction: float, end_step: int, decay: str) -> jax.Array:
  """``d(t)``: ``drop_fraction`` (``"constant"``) or ``drop_fraction (1 + cos(pi t / end)) / 2``
  (the library's cosine anneal from ``drop_fraction`` at 0 to 0 at ``end_step``)."""
  if decay == "constant":
    return jnp.asarray(drop_fraction, jnp.float32)
  return jnp.asarray(schedules.cosine_anneal(drop_fraction, 0.0, 0, end_step)(count), jnp.float32)


def random_topology(
  key: jax.Array, masks: Sequence[jax.Array], leaf_targets: Sequence[float]
) -> list[jax.Array]:
  """Masks with exactly ``final_pruned_count(n, final)`` pruned weights each, chosen at random."""
  counts = [selection.final_pruned_count(m.size, f) for m, f in zip(masks, leaf_targets)]
  return _random_topology(key, list(masks), jnp.asarray(counts, jnp.int32))


@jax.jit
def _random_topology(key, masks, counts):
  # Jitted with traced counts: ``init`` runs eagerly, where the bisection loop would be
  # compiled again at every call; this way once per set of leaf shapes.
  pruned = selection.select_lowest_each(
    random_keys(key, masks),
    [jnp.ones_like(m) for m in masks],
    [counts[i] for i in range(len(masks))],
  )
  return [~p for p in pruned]


def drop_and_regrow(
  masks: Sequence[jax.Array],
  drop_keys: Sequence[jax.Array],
  grow_keys: Sequence[jax.Array],
  fraction,
) -> list[jax.Array]:
  """One topology update: per leaf drop ``k = round(fraction |A|)``, regrow ``k``.

  The ``k`` active weights of lowest drop key are dropped; then the ``k`` weights of lowest
  grow key among those inactive *after the drop* are regrown. A weight dropped now may be
  regrown now (the RigL reference code's choice); it then simply stays active. Each mask
  keeps its number of active weights.

  Args:
    masks: current masks (``True`` = active).
    drop_keys: uint32 keys, one per mask (low = dropped first).
    grow_keys: uint32 keys, one per mask (low = regrown first).
    fraction: the drop fraction ``d(t)`` in ``[0, 1]`` (may be traced).

  Returns:
    The new masks.
  """
  ks = [
    jnp.round(fraction * jnp.sum(m, dtype=jnp.int32).astype(jnp.float32)).astype(jnp.int32)
    for m in masks
  ]
  dropped = selection.select_lowest_each(drop_keys, masks, ks)
  kept = [m & ~d for m, d in zip(masks, dropped)]
  grown = selection.select_lowest_each(grow_keys, [~k for k in kept], ks)
  return [k | g for k, g in zip(kept, grown)]


def _check_distribution(distribution) -> None:
  if isinstance(distribution, str) and distribution == "global":
    raise ValueError(
      "sparsity_distribution='global' is not supported by dynamic sparse training (it "
      "needs per-leaf targets that stay fixed); use 'uniform', 'erk' or a mapping."
    )
  distribution_lib.validate_distribution(distribution, 0.0)


def dynamic_sparse_policy(
  regrowth: RegrowthKeys,
  *,
  target_sparsity: float,
  end_step: int,
  update_every: int = 100,
  drop_fraction: float = 0.3,
  drop_fraction_decay: str = "cosine",
  sparsity_distribution: distribution_lib.Distribution = "uniform",
  seed: int = 0,
) -> skeleton.MaskPolicy:
  """The :class:`~droppruning_jax.skeleton.MaskPolicy` of RigL / SET with a regrowth criterion.

  Validates every argument (``ValueError`` naming the value). Its ``initial_masks`` draws
  the random topology of ``init``.
  """
  checks.check_number("target_sparsity", target_sparsity, 0.0, 1.0, low_open=True, high_open=True)
  end_step = checks.check_int("end_step", end_step, 1, checks.MAX_STEP)
  update_every = checks.check_int("update_every", update_every, 1, checks.MAX_STEP)
  if update_every >= end_step:
    # The topology changes at the multiples of update_every below end_step: none here.
    raise ValueError(
      f"update_every={update_every} >= end_step={end_step}: the topology would never "
      "change (updates happen at the multiples of update_every below end_step); use a "
      "smaller update_every or a later end_step (both count optimizer updates)."
    )
  drop_fraction = checks.check_number(
    "drop_fraction", drop_fraction, 0.0, 1.0, low_open=True, high_open=False
  )
  checks.check_choice("drop_fraction_decay", drop_fraction_decay, DECAYS)
  _check_distribution(sparsity_distribution)
  seed = checks.check_int("seed", seed, -(2**63), 2**64 - 1)
  target_sparsity = float(target_sparsity)

  def leaf_targets(paths, shapes) -> list[float]:
    return distribution_lib.leaf_target_list(paths, shapes, sparsity_distribution, target_sparsity)

  def check_leaves(paths, shapes):
    plan_lib.warn_rounding(paths, shapes, leaf_targets(paths, shapes))  # mappings raise here

  def topology_update(context: skeleton.UpdateContext) -> skeleton.LeafUpdate:
    key, count, params, masks, _, grads, _ = context  # no stash: the policy keeps none
    fraction = drop_fraction_at(count, drop_fraction, end_step, drop_fraction_decay)
    new = drop_and_regrow(masks, magnitude_keys(params), regrowth(key, params, grads), fraction)
    return skeleton.LeafUpdate(new, jnp.zeros((), jnp.float32))

  # The topology updates: the multiples of update_every strictly inside (0, end_step)
  # (count 0 is init's random topology); the skeleton derives the traced branch from them.
  steps = range(update_every, end_step, update_every)

  def initial_masks(paths, masks):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    return random_topology(key, masks, leaf_targets(paths, [m.shape for m in masks]))

  return skeleton.MaskPolicy(
    seed=seed,
    updates=[topology_update],
    check_leaves=check_leaves,
    steps=steps,
    initial_masks=initial_masks,
  )


# The regrowth criteria, by the name that dynamic_sparse_training takes.
REGROWTH = {"gradient": gradient_regrowth, "random": random_regrowth}


def dynamic_sparse_training(
  inner: optax.GradientTransformation,
  *,
  regrowth: str,
  target_sparsity: float,
  end_step: int,
  update_every: int = 100,
  drop_fraction: float = 0.3,
  drop_fraction_decay: str = "cosine",
  sparsity_distribution: distribution_lib.Distribution = "uniform",
  seed: int = 0,
  prunable: Optional[masks_lib.PrunablePredicate] = None,
  packed_masks: bool = False,
  name: Optional[str] = None,
) -> optax.GradientTransformationExtraArgs:
  """Dynamic sparse training: RigL (``regrowth="gradient"``) or SET (``"random"``).

  Sparse from ``init`` (a uniformly random topology); at every ``update_every``-th count
  below ``end_step`` each leaf drops its ``k = round(d(t) |A|)`` active weights of lowest
  magnitude and regrows ``k`` weights among those inactive after the drop: those of
  largest dense ``|gradient|`` (RigL, Evci et al., 2020) or uniformly at random, each with
  probability ``k / (|P| + k)`` (SET, Mocanu et al., 2018, with RigL's schedule).
  Regrown weights start at 0 with zero optimizer moments; a weight dropped and regrown
  in the same update stays active unchanged (as in the RigL reference code). Ties go to
  the lowest flat index. :func:`rigl` and :func:`set_pruning` name the two criteria.

  Args:
    inner: the optimizer to wrap (extra ``update`` keyword arguments are forwarded to it).
    regrowth: ``"gradient"`` (RigL) or ``"random"`` (SET).
    target_sparsity: the fraction of pruned weights, in ``(0, 1)``, held from ``init``
      on (per leaf, exactly ``final_pruned_count(n, leaf target)``).
    end_step: the masks are frozen from this count on (``>= 1``).
    update_every: the topology is updated at the counts ``update_every, 2 update_every,
      ...`` below ``end_step`` (``>= 1`` and ``< end_step``).
    drop_fraction: ``alpha`` in ``(0, 1]``, the fraction of active weights replaced at
      count 0 of the decay.
    drop_fraction_decay: ``"cosine"``: ``d(t) = alpha (1 + cos(pi t / end_step)) / 2``;
      ``"constant"``: ``d(t) = alpha``.
    sparsity_distribution: per-leaf targets: ``"uniform"``, ``"erk"`` (Erdős–Rényi-Kernel,
      :func:`droppruning_jax.erk_sparsities`) or a mapping ``{path or fnmatch pattern:
      sparsity}`` (then ``target_sparsity`` is only validated).
    seed: the topology of ``init`` uses ``fold_in(PRNGKey(seed), 0)``, the update at
      count ``t`` ``fold_in(PRNGKey(seed), t)``: identical on every replica and after a
      resume.
    prunable: ``(path, leaf) -> bool`` choosing the sparse leaves; defaults to
      :func:`droppruning_jax.default_prunable` (kernels and embeddings, never biases or
      norm scales).
    packed_masks: keep the masks in the state as bits (identical masks and training).
    name: the transformation's name in messages (default ``"rigl"`` / ``"set_pruning"``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`droppruning_jax.PruningState` (already sparse after ``init``). ``update(grads,
    state, params, *, skip_mask_update=False, **extra_args)`` needs ``params`` and the
    step's *dense* gradients (do not mask them). The initial params are not changed by
    ``init``: pruned weights become exactly 0 in the first update, or before it with
    ``params = dp.apply_masks(params, dp.get_masks(state))``. For
    :func:`droppruning_jax.jit_train_step` pass the transformation itself: its
    ``pruning_steps`` are the topology updates.

  Raises:
    ValueError: for invalid arguments (at construction), or a mapping that misses a
      prunable leaf or matches none (at ``init``).
  """
  checks.check_choice("regrowth", regrowth, tuple(REGROWTH))
  policy = dynamic_sparse_policy(
    REGROWTH[regrowth],
    target_sparsity=target_sparsity,
    end_step=end_step,
    update_every=update_every,
    drop_fraction=drop_fraction,
    drop_fraction_decay=drop_fraction_decay,
    sparsity_distribution=sparsity_distribution,
    seed=seed,
  )
  if prunable is not None and not callable(prunable):
    raise ValueError(f"prunable={prunable!r} must be None or a callable (path, leaf) -> bool.")
  name = name or {"gradient": "rigl", "random": "set_pruning"}[regrowth]
  return skeleton.pruning_transformation(
    inner, policy, name=name, prunable=prunable, packed_masks=packed_masks
  )


def rigl(inner: optax.GradientTransformation, **kwargs) -> optax.GradientTransformationExtraArgs:
  """RigL (Evci et al., 2020, "Rigging the Lottery: Making All Tickets Winners"): regrows the
  inactive weights of largest dense ``|gradient|``.

  ``dynamic_sparse_training(inner, regrowth="gradient", **kwargs)``: the keyword arguments
  (``target_sparsity``, ``end_step``, ``update_every``, ...) are documented there.
  """
  return dynamic_sparse_training(inner, regrowth="gradient", **kwargs)


def set_pruning(
  inner: optax.GradientTransformation, **kwargs
) -> optax.GradientTransformationExtraArgs:
  """SET, Sparse Evolutionary Training (Mocanu et al., 2018), with RigL's schedule: regrows
  inactive weights uniformly at random.

  ``dynamic_sparse_training(inner, regrowth="random", **kwargs)``: the keyword arguments
  (``target_sparsity``, ``end_step``, ``update_every``, ...) are documented there.
  """
  return dynamic_sparse_training(inner, regrowth="random", **kwargs)
