"""Drop Pruning (Jia et al., arXiv 1812.02035): the pure mask updates and ``drop_pruning``.

The walk from the constructor to a changed mask: :func:`drop_pruning` builds a
:class:`droppruning_jax.plan.DropPlan` and a policy of two pure updates,
:func:`per_leaf_update` / :func:`global_update` (stochastic steps) and their exact
final step; each calls :func:`drop_groups`, where drop away and drop back change the
masks of groups of leaves, one pool per group (a leaf, or every leaf). The shared
masked-update skeleton (:mod:`droppruning_jax.skeleton`) runs them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.random import threefry2x32_p

from droppruning_jax import distribution as distribution_lib
from droppruning_jax import importance as importance_lib
from droppruning_jax import masks as masks_lib
from droppruning_jax import plan as plan_lib
from droppruning_jax import schedules, selection, skeleton, weighting
from droppruning_jax.weighting import weighted_probabilities


class DropInfo(NamedTuple):
  """What one drop step did to one mask.

  Attributes:
    pool_size: ``c``, the number of drop-away candidates after clipping.
    dropped_away: weights removed by this step.
    dropped_back: weights revived by this step.
    target: this step's target sparsity.
    expected_sparsity: expected sparsity after the step given ``c``, ``p``, ``q``.
    shortfall: expected sparsity missing because the pool was clipped at the active
      count, i.e. the target was not reachable at this step (0 otherwise).
  """

  pool_size: jax.Array
  dropped_away: jax.Array
  dropped_back: jax.Array
  target: jax.Array
  expected_sparsity: jax.Array
  shortfall: jax.Array


def drop_groups(
  masks: Sequence[Sequence[jax.Array]],
  scores: Sequence[Sequence[jax.Array]],
  uniforms: Sequence[Sequence[jax.Array]],
  *,
  step_sparsities: Sequence,
  drop_away_prob,
  drop_back_prob,
  drop_back_scale: str = "active",
  protected: Optional[Sequence[Sequence[jax.Array]]] = None,
  drop_away: str = "uniform",
  back_evidence: Optional[Sequence[Sequence[jax.Array]]] = None,
  temperature=1.0,
) -> tuple[list[list[jax.Array]], list[DropInfo]]:
  """One stochastic drop step on groups of masks, with one selection for all groups.

  A group is one pool: one leaf (per-leaf targets) or every leaf (the global pool). With
  ``n`` weights in the group, pruned set ``P`` (sparsity ``s``), this step's target
  ``s'``, drop-away probability ``p`` and per-weight drop-back probability ``q``, the pool
  (the ``c`` least important active weights of the group) has ``c = round(n (s' - s (1 -
  q)) / p)`` clipped to ``[0, |A| - 1]``: every group keeps at least one active weight,
  the most important. Each pool member leaves with probability ``p`` (drop away), each
  pruned weight returns with probability ``q`` (drop back), so ``E[s_new] = s'`` whenever
  the clip does not bind. The arrays keep their shapes (and shardings); how they are laid
  out for the selection is :mod:`droppruning_jax.selection`'s choice.

  Args:
    masks: per group, current masks (``True`` = active).
    scores: per group, importance scores, one per mask, of its shape (low = unimportant).
    uniforms: per group, ``U[0, 1)`` draws, one per mask, of its shape: the draw of a
      weight decides its removal if it is in the pool and its revival if it is pruned
      (the two sets are disjoint, so one draw serves both drops independently).
    step_sparsities: this step's target, one per group (may be traced).
    drop_away_prob: ``p`` in ``(0, 1]`` (may be traced).
    drop_back_prob: the drop-back rate (may be traced); see ``drop_back_scale``.
    drop_back_scale: ``"active"``: the rate is the expected number of revived weights
      as a fraction of the active ones (probability ``min(1, q |A| / |P|)``);
      ``"pruned"``: it is the per-weight revival probability.
    protected: optional, per group, bool arrays, one per mask: entries that are never in
      the pool (the pool is clipped to the other active entries instead of ``|A| - 1``).
    drop_away: ``"uniform"``: every pool member leaves with probability ``p``;
      ``"importance"``: member ``i`` leaves with probability ``min(1, lam exp(-z_i /
      T))``, ``z_i`` its score standardised over the group's pool, and ``sum_i = p c``:
      the same expected removals as ``"uniform"`` (:func:`weighted_probabilities`).
    back_evidence: optional, per group, float arrays, one per mask (e.g. ``|gradient|``
      or the stashed magnitude): a pruned weight returns with probability ``min(1, lam
      exp(z_i / T))``, ``z_i`` its evidence standardised over the group's pruned weights,
      and ``sum_i = q |P|``: the same expected revivals as the uniform drop back.
      ``None``: every pruned weight returns with ``q``.
    temperature: ``T > 0`` of the weighted rules.

  Returns:
    ``(new_masks, infos)``: per group, the new masks, and one :class:`DropInfo`.
  """
  plan_lib.checks.check_choice("drop_away", drop_away, plan_lib.DROP_AWAY_RULES)
  for mask, u in zip(_leaves(masks), _leaves(uniforms)):
    if u.shape != mask.shape:
      raise ValueError(f"uniforms has shape {u.shape}, expected the mask's {mask.shape}.")
  p = jnp.asarray(drop_away_prob, jnp.float32)
  candidates, pools = [], []
  for g, (group, target) in enumerate(zip(masks, step_sparsities)):
    n = sum(mask.size for mask in group)
    active = selection.total(group)
    q = plan_lib.effective_drop_back_prob(
      jnp.asarray(drop_back_prob, jnp.float32), active, n - active, drop_back_scale
    )
    if protected is None:
      candidates.append(list(group))
      room = jnp.maximum(active - 1, 0)
    else:
      candidates.append([mask & ~keep for mask, keep in zip(group, protected[g])])
      room = selection.total(candidates[-1])
    wanted = jnp.round(plan_lib.wanted_pool(n, (n - active) / n, target, p, q))
    pools.append(_Pool(n, active, q, wanted, room, jnp.clip(wanted, 0, room).astype(jnp.int32)))
  members = selection.lowest_scores_groups(
    candidates, scores, [pool.size for pool in pools], pruned_first=False
  )
  away_probs, back_probs = _weighted_rules(
    masks, scores, members, pools, p, drop_away, back_evidence, temperature
  )
  new_masks, infos = [], []
  for g, (group, group_u, target, pool) in enumerate(zip(masks, uniforms, step_sparsities, pools)):
    away = p if away_probs is None else away_probs[g]
    back = pool.q if back_probs is None else back_probs[g]
    after_away = [
      mask & ~(member & (u < a))
      for mask, member, u, a in zip(group, members[g], group_u, _each(away, group))
    ]
    revived = [~mask & (u < b) for mask, u, b in zip(group, group_u, _each(back, group))]
    new_masks.append([kept | r for kept, r in zip(after_away, revived)])
    infos.append(_drop_info(pool, target, p, group, after_away, revived))
  return new_masks, infos


class _Pool(NamedTuple):
  """One group's drop-away pool: sizes (``n``, active count), the effective ``q``, the
  wanted and the clipped pool size, and the room (the active, unprotected weights)."""

  n: int
  active: jax.Array
  q: jax.Array
  wanted: jax.Array
  room: jax.Array
  size: jax.Array


def _leaves(groups):
  return [a for group in groups for a in group]


def _each(value, group):
  """A per-mask list: ``value`` itself if it already is one, else ``value`` for every mask."""
  return value if isinstance(value, list) else [value] * len(group)


def _weighted_rules(masks, scores, members, pools, p, drop_away, back_evidence, temperature):
  """The probabilities of leaving (pool members) and of returning (pruned weights), per
  group and mask, where a weighted rule asks for them (else ``None``): one bisection loop
  for every group and both drops."""
  groups, group_candidates, totals = [], [], []
  if drop_away == "importance":
    groups += scores
    group_candidates += members
    totals += [p * pool.size for pool in pools]
  if back_evidence is not None:
    groups += [[-e.astype(jnp.float32) for e in group] for group in back_evidence]
    group_candidates += [[~mask for mask in group] for group in masks]
    totals += [pool.q * (pool.n - pool.active) for pool in pools]
  if not groups:
    return None, None
  probs = weighted_probabilities(groups, group_candidates, totals, temperature)
  away_probs = probs[: len(masks)] if drop_away == "importance" else None
  back_probs = probs[-len(masks) :] if back_evidence is not None else None
  return away_probs, back_probs


def _drop_info(pool: _Pool, target, p, masks, after_away, revived) -> DropInfo:
  n, active = pool.n, pool.active
  return DropInfo(
    pool_size=pool.size,
    dropped_away=selection.total([mask & ~kept for mask, kept in zip(masks, after_away)]),
    dropped_back=selection.total(revived),
    target=jnp.asarray(target, jnp.float32),
    expected_sparsity=plan_lib.expected_sparsity((n - active) / n, pool.size / n, p, pool.q).astype(
      jnp.float32
    ),
    # Only the clip counts: rounding c to an integer is not a shortfall.
    shortfall=(p * jnp.maximum(pool.wanted - pool.room, 0) / n).astype(jnp.float32),
  )


def drop_leaves(
  masks: Sequence[jax.Array],
  scores: Sequence[jax.Array],
  uniforms: Sequence[jax.Array],
  *,
  step_sparsities: Sequence,
  protected: Optional[Sequence[jax.Array]] = None,
  back_evidence: Optional[Sequence[jax.Array]] = None,
  **kwargs,
) -> tuple[list, list[DropInfo]]:
  """:func:`drop_groups` with one group per mask: every mask drops on its own.

  The same arguments, one array per mask instead of one list per group; ``kwargs`` are
  :func:`drop_groups`' (``drop_away_prob``, ``drop_back_prob``, ``drop_back_scale``,
  ``drop_away``, ``temperature``). Returns one new mask and one :class:`DropInfo` per mask.
  """

  def each(arrays):
    return None if arrays is None else [[a] for a in arrays]

  new, infos = drop_groups(
    each(masks),
    each(scores),
    each(uniforms),
    step_sparsities=step_sparsities,
    protected=each(protected),
    back_evidence=each(back_evidence),
    **kwargs,
  )
  return [group[0] for group in new], infos


def drop_step(
  key: jax.Array,
  mask: jax.Array,
  scores: jax.Array,
  *,
  step_sparsity,
  drop_away_prob,
  drop_back_prob,
  drop_back_scale: str = "active",
  drop_away: str = "uniform",
  back_evidence: Optional[jax.Array] = None,
  temperature=1.0,
) -> tuple[jax.Array, DropInfo]:
  """One stochastic Drop Pruning step on one mask: drop away, then drop back.

  The pure ``jax.random`` transform that :func:`drop_pruning` applies at every
  pruning step but the last (see :func:`drop_leaves` for the arithmetic).

  Args:
    key: a ``jax.random`` key; it draws one ``U[0, 1)`` number per weight.
    mask: current mask (``True`` = active), any shape.
    scores: importance scores of the mask's shape (low = unimportant).
    step_sparsity: this step's target sparsity ``s'`` (may be traced).
    drop_away_prob: ``p`` in ``(0, 1]``.
    drop_back_prob: drop-back rate; see ``drop_back_scale``.
    drop_back_scale: ``"active"`` or ``"pruned"``, as in :func:`drop_pruning`.
    drop_away: ``"uniform"`` or ``"importance"`` (see :func:`drop_leaves`).
    back_evidence: optional array of the mask's shape: drop back weighted by it
      (e.g. ``|gradient|``; see :func:`drop_leaves`).
    temperature: ``T > 0`` of the weighted rules.

  Returns:
    ``(new_mask, DropInfo)``.
  """
  plan_lib.checks.check_choice("drop_back_scale", drop_back_scale, plan_lib.DROP_BACK_SCALES)
  new, infos = drop_leaves(
    [mask],
    [scores],
    [jax.random.uniform(key, mask.shape)],
    step_sparsities=[step_sparsity],
    drop_away_prob=drop_away_prob,
    drop_back_prob=drop_back_prob,
    drop_back_scale=drop_back_scale,
    drop_away=drop_away,
    back_evidence=None if back_evidence is None else [back_evidence],
    temperature=temperature,
  )
  return new[0], infos[0]


def _leaf_scores(plan: plan_lib.DropPlan, param, key, grad) -> jax.Array:
  """Importance of every weight of a leaf; non-finite weights score ``+inf`` (never pruned)."""
  scores = importance_lib.compute(plan.importance, param, key, grad)
  return jnp.where(jnp.isfinite(param), scores, jnp.inf)


def _scores(plan: plan_lib.DropPlan, key, params, grads) -> list[jax.Array]:
  return [
    _leaf_scores(plan, param, jax.random.fold_in(key, i), grad)
    for i, (param, grad) in enumerate(zip(params, grads))
  ]


def _weighting(plan: plan_lib.DropPlan, evidence) -> dict:
  """The keyword arguments of :func:`drop_leaves` for the plan's drop rules."""
  return dict(drop_away=plan.drop_away, back_evidence=evidence, temperature=plan.temperature)


def uniform_slice(key: jax.Array, total: int, offset: int, like: jax.Array) -> jax.Array:
  """``jax.random.uniform(key, (total,))[offset : offset + like.size]``, shaped like ``like``.

  With partitionable threefry (JAX's default) the draw of flat position ``j`` is a
  function of ``(key, j)`` alone, so each device computes the draws of the entries it
  holds, bit for bit those of the flat draw, without materialising the flat array.
  Otherwise the flat draw is sliced.
  """
  if (
    jax.config.jax_threefry_partitionable
    and jax.config.jax_default_prng_impl == "threefry2x32"
    and key.dtype == jnp.uint32
    and key.shape == (2,)
  ):
    counts = selection.flat_index(like, offset)
    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(counts), counts)
    # jax.random.uniform's float32 mapping: 23 random mantissa bits in [1, 2), minus 1.
    mantissa = ((bits1 ^ bits2) >> jnp.uint32(9)) | jnp.uint32(0x3F800000)
    floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0)
    return jax.lax.max(jnp.float32(0.0), floats * jnp.float32(1.0) + jnp.float32(0.0))
  return jax.random.uniform(key, (total,))[offset : offset + like.size].reshape(like.shape)


def _max_shortfall(infos) -> jax.Array:
  return functools.reduce(
    jnp.maximum, (info.shortfall for info in infos), jnp.zeros((), jnp.float32)
  )


def _uniforms(key: jax.Array, params, masks) -> list[jax.Array]:
  """One ``U[0, 1)`` draw over every prunable weight in leaf order, sliced per leaf: one
  random-bit generator in the compiled update instead of one per leaf. Sharded, each
  device draws for the weights it holds (:func:`uniform_slice`), the same bits."""
  offsets = [int(o) for o in np.cumsum([0] + [m.size for m in masks])]
  if selection.is_sharded(*params, *masks):
    return [uniform_slice(key, offsets[-1], o, m) for o, m in zip(offsets, masks)]
  draws = jax.random.uniform(key, (offsets[-1],))
  return [draws[o : o + m.size].reshape(m.shape) for o, m in zip(offsets, masks)]


def per_leaf_update(
  plan: plan_lib.DropPlan, context: skeleton.UpdateContext, *, final_step: bool
) -> skeleton.LeafUpdate:
  """Every prunable leaf is its own pool, towards its scaled share of the schedule."""
  key, count, params, masks, paths, grads, stash = context
  leaf_targets = plan.leaf_targets(paths, [m.shape for m in masks])
  score_key, drop_key = jax.random.split(key)
  scores = _scores(plan, score_key, params, grads)
  if final_step:
    return skeleton.LeafUpdate(
      selection.prune_exact_many(masks, scores, leaf_targets), jnp.zeros((), jnp.float32)
    )
  p, q = plan.rates(count)
  overall = plan.overall_target(count)
  new, infos = drop_leaves(
    masks,
    scores,
    _uniforms(drop_key, params, masks),
    drop_away_prob=p,
    drop_back_prob=q,
    drop_back_scale=plan.drop_back_scale,
    step_sparsities=[
      plan_lib.leaf_step_target(overall, f, plan.target_sparsity) for f in leaf_targets
    ],
    **_weighting(plan, weighting.back_evidence(plan.drop_back, grads, stash)),
  )
  return skeleton.LeafUpdate(new, _max_shortfall(infos))


def global_update(
  plan: plan_lib.DropPlan, context: skeleton.UpdateContext, *, final_step: bool
) -> skeleton.LeafUpdate:
  """One pool of every prunable weight (one selection group), scores normalised per leaf.

  Each leaf's scores are divided by their mean over its active finite weights and its
  most important active weight is protected (no leaf is ever emptied). Sharded leaves
  keep their shapes throughout (nothing is gathered); the per-leaf means are float sums
  whose order follows the layout, so they can differ from a one-device run in the last
  bit (so can the sums of the weighted drop rules).
  """
  key, count, params, masks, _, grads, stash = context  # one pool: no per-leaf targets
  score_keys = jax.random.split(jax.random.fold_in(key, 0), len(params))
  scores, tops = [], []
  for param, mask, score_key, grad in zip(params, masks, score_keys, grads):
    leaf_scores = _leaf_scores(plan, param, score_key, grad)
    scores.append(weighting.divide_by_mean(leaf_scores, mask & jnp.isfinite(leaf_scores)))
    tops.append(selection.top_entry(mask, scores[-1]))
  if final_step:
    size = sum(m.size for m in masks)
    wanted = selection.final_pruned_count(size, plan.target_sparsity)
    kept_out = [jnp.where(top, jnp.inf, s) for top, s in zip(tops, scores)]
    pruned = selection.lowest_scores_groups(
      [masks], [kept_out], [jnp.minimum(wanted, size - selection.total(tops))], pruned_first=True
    )[0]
    return skeleton.LeafUpdate([~x for x in pruned], jnp.zeros((), jnp.float32))
  p, q = plan.rates(count)
  evidence = weighting.global_back_evidence(plan.drop_back, masks, grads, stash)
  new, infos = drop_groups(
    [masks],
    [scores],
    [_uniforms(jax.random.fold_in(key, 1), params, masks)],
    step_sparsities=[plan.overall_target(count)],
    drop_away_prob=p,
    drop_back_prob=q,
    drop_back_scale=plan.drop_back_scale,
    protected=[tops],
    **_weighting(plan, None if evidence is None else [evidence]),
  )
  return skeleton.LeafUpdate(new[0], infos[0].shortfall)


def drop_pruning(
  inner: optax.GradientTransformation,
  *,
  target_sparsity: float,
  end_step: int,
  drop_away_prob: schedules.ScalarOrSchedule = 0.5,
  drop_back_prob: schedules.ScalarOrSchedule = 0.1,
  begin_step: int = 0,
  update_every: int = 100,
  seed: int = 0,
  initial_sparsity: float = 0.0,
  sparsity_schedule: Optional[schedules.Schedule] = None,
  drop_back_scale: str = "active",
  drop_away: str = "uniform",
  drop_back: str = "uniform",
  temperature: Optional[float] = None,
  regrow_init: str = "zero",
  importance: Union[str, importance_lib.ImportanceFn] = "magnitude",
  prunable: Optional[masks_lib.PrunablePredicate] = None,
  sparsity_distribution: distribution_lib.Distribution = "uniform",
  packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optax transformation with Drop Pruning (Jia et al., arXiv 1812.02035).

  At the pruning steps ``begin_step, begin_step + update_every, ..., end_step``
  (:func:`droppruning_jax.pruning_steps`) the masks are updated: drop away removes each
  of the ``c`` least important active weights with probability ``p``, drop back revives
  pruned weights at rate ``q``, and ``c`` is chosen so that the expected sparsity
  equals the schedule. The update at ``end_step`` is exact (``p = 1, q = 0``): exactly
  ``round(n * target)`` weights of each leaf end up pruned (but a leaf always keeps its
  most important weight; ``init`` warns when that rule binds). After ``end_step`` the
  masks are frozen. Non-finite weights count as most important and are counted in
  ``stats.nonfinite``.

  Special cases give the baselines: ``p = 1, q = 0`` is gradual magnitude pruning (Zhu &
  Gupta, 2017), ``q = 0`` is drop away only, ``p = 1`` drop back only, and
  ``importance="random"`` random pruning.

  Args:
    inner: the optimizer to wrap (sgd, momentum, adam, a chain, ...). Extra keyword
      arguments of ``update`` (e.g. ``value=loss``) are forwarded to it.
    target_sparsity: the *final* fraction of pruned weights, in ``[0, 1)``.
    end_step: step count of the last (exact) pruning step, ``< 2**31 - 1``.
    drop_away_prob: ``p`` in ``(0, 1]``: the probability that a pool member is removed;
      a constant or an optax schedule of the step.
    drop_back_prob: ``q`` in ``[0, 1]``, a constant or a schedule. With
      ``drop_back_scale="active"`` (default) it is a *rate*, not a probability: the
      expected number of revived weights per pruning step as a fraction of the active
      weights (each pruned weight returns with probability ``min(1, q |A| / |P|)``);
      with ``"pruned"`` it is the per-weight revival probability.
    begin_step: step count of the first pruning step.
    update_every: steps between pruning steps (``end_step`` need not be on the grid).
    seed: the key of the update at step ``t`` is ``fold_in(PRNGKey(seed), t)``:
      identical on every replica and after a resume.
    initial_sparsity: target of the first pruning step of the default schedule.
    sparsity_schedule: optional ``step -> overall target sparsity``; defaults to the
      cubic schedule of Zhu & Gupta from ``initial_sparsity`` to ``target_sparsity``.
      Per-leaf targets are scaled by ``leaf_target / target_sparsity``.
    drop_back_scale: ``"active"`` or ``"pruned"``; see ``drop_back_prob``.
    drop_away: which pool members leave. ``"uniform"``: each with probability ``p``.
      ``"importance"``: member ``i`` with probability ``min(1, lam exp(-z_i /
      temperature))``, ``z_i`` its importance standardised over the pool and ``lam``
      such that ``p c`` leave in expectation, as with ``"uniform"``: less important
      weights leave more often, the expected sparsity is unchanged.
    drop_back: which pruned weights return. ``"uniform"``: each with the same
      probability. ``"gradient"``: weight ``i`` with probability ``min(1, lam exp(z_i /
      temperature))``, ``z_i`` its ``|gradient|`` (dense, this step's) standardised over
      the pruned weights, with the expected number revived of ``"uniform"``.
      ``"stash"``: the same with ``z_i`` from the magnitude the weight had when it was
      last pruned (keeps the stash in the state, as ``regrow_init="restore"`` does; a
      weight never pruned by a mask update has ``0``, the least evidence).
    temperature: ``T > 0`` of the weighted rules (default 1.0), in units of the
      standard deviation of the scores: ``T -> inf`` gives the uniform rules, ``T -> 0``
      drops the least important pool members (revives the largest evidence) first.
    regrow_init: value of a revived weight: ``"zero"`` or ``"restore"`` (the value it
      had when it was pruned; keeps a copy of the prunable params in the state, the
      stash). Its optimizer moments are reset to zero either way. With
      ``drop_back="stash"`` and ``"zero"`` the stash is kept but revived weights restart
      at 0.
    importance: ``"magnitude"`` (``|w|``), ``"random"``, ``"saliency"`` (``|w g|``
      with ``g`` this step's dense gradient), or a callable ``(param, key) -> scores``
      (low = unimportant); a callable with a ``grad`` parameter, ``(param, key, *,
      grad) -> scores``, receives the gradient there.
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves; defaults to
      :func:`droppruning_jax.default_prunable` (kernels and embeddings, never biases or
      norm scales). Empty leaves are never pruned.
    sparsity_distribution: ``"uniform"``, ``"erk"``, ``"global"`` (one pool over all
      prunable weights with per-layer normalised scores), or a mapping ``{path or
      fnmatch pattern: final sparsity}``.
    packed_masks: keep the masks in the state as bits (:class:`PackedMask`, 1/8 of the
      bytes of bool masks); identical masks and results.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`droppruning_jax.PruningState`. Its ``update(grads, state, params, *,
    skip_mask_update=False, **extra_args)`` needs ``params``; pass
    ``skip_mask_update=True`` (static under ``jit``) on steps that are not pruning steps
    to compile the step without the mask-update conditional (or let
    :func:`droppruning_jax.jit_train_step` choose). A pruning step skipped anyway is
    counted in ``stats.skipped_updates``.

  Raises:
    ValueError: for invalid arguments, or a schedule that drop away cannot follow with
      these ``p`` and ``q`` (the message names the first such step).
  """
  plan = plan_lib.DropPlan.create(
    target_sparsity=target_sparsity,
    end_step=end_step,
    drop_away_prob=drop_away_prob,
    drop_back_prob=drop_back_prob,
    begin_step=begin_step,
    update_every=update_every,
    seed=seed,
    initial_sparsity=initial_sparsity,
    sparsity_schedule=sparsity_schedule,
    drop_back_scale=drop_back_scale,
    regrow_init=regrow_init,
    importance=importance,
    sparsity_distribution=sparsity_distribution,
    drop_away=drop_away,
    drop_back=drop_back,
    temperature=temperature,
  )
  return skeleton.pruning_transformation(
    inner, drop_policy(plan), name="drop_pruning", prunable=prunable, packed_masks=packed_masks
  )


def drop_policy(plan: plan_lib.DropPlan) -> skeleton.MaskPolicy:
  """The :class:`~droppruning_jax.skeleton.MaskPolicy` of a plan: stochastic steps, one exact."""
  update = global_update if plan.is_global else per_leaf_update

  def branch_index(count):
    return jnp.where(plan.is_pruning_step(count), jnp.where(count == plan.end_step, 2, 1), 0)

  return skeleton.MaskPolicy(
    seed=plan.seed,
    branch_index=branch_index,
    updates=[
      functools.partial(update, plan, final_step=False),
      functools.partial(update, plan, final_step=True),
    ],
    check_leaves=plan.check_leaves,
    # The stash is the evidence of drop_back="stash"; revived weights restart from it
    # only with regrow_init="restore" (else at 0, as without a stash).
    keep_stash=plan.regrow_init == "restore" or plan.drop_back == "stash",
    regrow_from_stash=plan.regrow_init == "restore",
    steps=[int(step) for step in plan.steps],
  )
