"""``drop_pruning``: an optax transformation that trains with masks and updates them by Drop Pruning.

The wrapper masks the gradients, runs the inner optimizer, and returns updates such
that ``optax.apply_updates(params, updates)`` is exactly masked (pruned weights are
exactly ``0.0`` after every step). At pruning steps the masks change inside the same
jitted update (``lax.switch`` on the step count), so a training loop needs no extra
call and no host round trip.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from droppruning_jax import distribution as distribution_lib
from droppruning_jax import drop
from droppruning_jax import importance as importance_lib
from droppruning_jax import masked
from droppruning_jax import masks as masks_lib
from droppruning_jax import schedules
from droppruning_jax.masked import DropPruningState
from droppruning_jax.masked import DropStats

PyTree = Any
REGROW_INITS = ("zero", "restore")


def _check_number(name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
    raise ValueError(f"{name}={value!r} must be a finite real number.")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name}={value!r} is outside {interval}.")


def _check_int(name: str, value: Any, minimum: int):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name}={value!r} must be an integer.")
  if value < minimum:
    raise ValueError(f"{name}={value!r} must be >= {minimum}.")


def _check_schedule(name: str, schedule, steps, low, high, *, low_open, high_open):
  """Checks a constant, or a schedule at every pruning step that uses it."""
  if not callable(schedule):
    _check_number(name, schedule, low, high, low_open=low_open, high_open=high_open)
    return
  if not steps:
    return
  values = schedules.schedule_values(schedule, steps)
  for step, value in zip(steps, values):
    try:
      _check_number(name, float(value), low, high, low_open=low_open, high_open=high_open)
    except ValueError as error:
      raise ValueError(f"{error} (schedule {name} evaluated at step {step})") from None


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
    regrow_init: str = "zero",
    importance: Union[str, importance_lib.ImportanceFn] = "magnitude",
    prunable: Optional[masks_lib.PrunablePredicate] = None,
    sparsity_distribution: distribution_lib.Distribution = "uniform",
    packed_masks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optax transformation with Drop Pruning (Jia et al., arXiv 1812.02035).

  At pruning steps ``begin_step, begin_step + update_every, ..., end_step`` every
  prunable leaf goes through :func:`droppruning_jax.drop_step`: drop away removes
  each of the ``c`` least important active weights with probability ``p``, drop
  back revives each pruned weight with (effective) probability ``q``, and ``c`` is
  chosen so that the expected sparsity equals the schedule. The step at
  ``end_step`` is exact (``p = 1, q = 0``): exactly ``round(n * target)`` weights of
  each leaf end up pruned. After ``end_step`` the masks are frozen.

  Special cases give the baselines: ``p = 1, q = 0`` is gradual magnitude pruning
  (Zhu & Gupta, 2017), ``q = 0`` is drop away only, ``p = 1`` is drop back only,
  and ``importance="random"`` is random pruning.

  Args:
    inner: the optimizer to wrap (sgd, momentum, adam, adamw, a chain, ...).
    target_sparsity: final fraction of pruned weights, in ``[0, 1)``.
    end_step: step count of the last (exact) pruning step.
    drop_away_prob: ``p`` in ``(0, 1]``, a constant or an optax schedule of the step.
    drop_back_prob: drop-back rate in ``[0, 1]``, a constant or a schedule; its
      meaning depends on ``drop_back_scale``.
    begin_step: step count of the first pruning step.
    update_every: steps between pruning steps (``end_step`` need not be on the grid).
    seed: the key of the pruning step at count ``t`` is
      ``fold_in(PRNGKey(seed), t)``: identical on every replica and after a resume.
    initial_sparsity: target of the first pruning step for the default schedule.
    sparsity_schedule: optional ``step -> overall target sparsity``; defaults to
      the cubic schedule of Zhu & Gupta from ``initial_sparsity`` to
      ``target_sparsity``. Per-leaf targets are scaled by ``leaf_final / target``.
    drop_back_scale: ``"active"`` (default): ``q * |A|`` weights are revived in
      expectation, i.e. a swap rate relative to the live weights, reachable at any
      sparsity; ``"pruned"``: each pruned weight is revived with probability ``q``.
    regrow_init: value of a revived weight: ``"zero"`` or ``"restore"`` (the value
      it had when it was pruned; keeps a copy of the prunable params in the state).
      Its optimizer moments are reset to zero either way.
    importance: ``"magnitude"`` (``|w|``), ``"random"``, or a callable
      ``(param, key) -> scores`` (low = unimportant).
    prunable: ``(path, leaf) -> bool`` choosing the pruned leaves; defaults to
      leaves with ``ndim >= 2``.
    sparsity_distribution: ``"uniform"``, ``"erk"``, ``"global"`` (one pool over
      all prunable weights with per-layer normalised scores), or a mapping
      ``{path or fnmatch pattern: sparsity}``.
    packed_masks: keep the masks in the state as bits (:class:`PackedMask`, 1/8
      of the bytes of bool masks, for models whose optimizer state is tight on
      accelerator memory); unpacked inside the jitted step. Masks, trajectories
      and results are identical to ``packed_masks=False``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`DropPruningState`. Its ``update(grads, state, params)`` needs
    ``params``. On steps that the loop knows are not pruning steps (``step not in
    dp.pruning_steps(begin_step, end_step, update_every)``), pass
    ``skip_mask_update=True`` (static under ``jit``) to compile the step without
    the mask-update conditional: on a GPU the conditional's predicate is read on
    the host, which stalls every step. A pruning step skipped anyway is counted in
    ``stats.skipped_updates``.

  Raises:
    ValueError: for invalid arguments, or a schedule that drop away cannot follow
      with these ``p`` and ``q`` (the message names the first such step).
  """
  # ---- validation: everything that can be checked without params --------------------
  _check_number("target_sparsity", target_sparsity, 0.0, 1.0, low_open=False, high_open=True)
  _check_number("initial_sparsity", initial_sparsity, 0.0, 1.0, low_open=False, high_open=True)
  _check_int("begin_step", begin_step, 0)
  _check_int("end_step", end_step, 0)
  _check_int("update_every", update_every, 1)
  _check_int("seed", seed, -(2**63))
  if begin_step > end_step:
    raise ValueError(f"begin_step={begin_step} is after end_step={end_step}.")
  if initial_sparsity > target_sparsity:
    raise ValueError(
        f"initial_sparsity={initial_sparsity} is above target_sparsity={target_sparsity}."
    )
  if drop_back_scale not in schedules.DROP_BACK_SCALES:
    raise ValueError(
        f"drop_back_scale={drop_back_scale!r} is not one of {schedules.DROP_BACK_SCALES}."
    )
  if regrow_init not in REGROW_INITS:
    raise ValueError(f"regrow_init={regrow_init!r} is not one of {REGROW_INITS}.")
  importance_fn = importance_lib.get_importance(importance)
  static_targets = distribution_lib.validate_distribution(sparsity_distribution, target_sparsity)
  is_global = isinstance(sparsity_distribution, str) and sparsity_distribution == "global"

  prune_steps = schedules.pruning_steps(begin_step, end_step, update_every)
  stochastic_steps = prune_steps[:-1]  # the last step is exact: p = 1, q = 0
  _check_schedule("drop_away_prob", drop_away_prob, stochastic_steps, 0.0, 1.0,
                  low_open=True, high_open=False)
  _check_schedule("drop_back_prob", drop_back_prob, stochastic_steps, 0.0, 1.0,
                  low_open=False, high_open=False)
  if sparsity_schedule is None:
    sparsity_schedule = schedules.polynomial_sparsity(
        target_sparsity, begin_step, end_step, initial_sparsity
    )
  _check_schedule("sparsity_schedule", sparsity_schedule, prune_steps, 0.0, 1.0,
                  low_open=False, high_open=True)
  away_schedule = schedules.as_schedule(drop_away_prob)
  back_schedule = schedules.as_schedule(drop_back_prob)
  reachability = functools.partial(
      schedules.check_reachable,
      target_sparsity=target_sparsity,
      sparsity_schedule=sparsity_schedule,
      drop_away_prob=away_schedule,
      drop_back_prob=back_schedule,
      drop_back_scale=drop_back_scale,
      steps=prune_steps,
  )
  reachability(static_targets)

  # ---- the mask update ----------------------------------------------------------------
  def leaf_final_targets(masks: PyTree) -> list[float]:
    """Final sparsity of every prunable leaf, in leaf order (static)."""
    by_name = distribution_lib.leaf_targets(masks, sparsity_distribution, target_sparsity)
    return [by_name[name] for name in by_name]

  def leaf_steps(key, count, prunable_params, prunable_masks, finals, final_step: bool):
    """New masks for a list of (flattened) leaves that share no pool."""
    overall = jnp.asarray(sparsity_schedule(count), jnp.float32)
    p = jnp.asarray(away_schedule(count), jnp.float32)
    q = jnp.asarray(back_schedule(count), jnp.float32)
    score_root, drop_root = jax.random.split(key)
    scores = [importance_fn(param, jax.random.fold_in(score_root, index))
              for index, param in enumerate(prunable_params)]
    # All leaves go through one selection loop (drop.*_many): one loop per layer made
    # large models compile slowly, and on a GPU each loop iteration can cost a host round trip.
    if final_step:
      new_masks = drop.prune_exact_many(prunable_masks, scores, finals)
      infos = [_exact_info(old, new, final)
               for old, new, final in zip(prunable_masks, new_masks, finals)]
      return new_masks, infos
    # One draw for all leaves, sliced per leaf: a random-bit generator per leaf made
    # the mask update of VGG-16 (15 leaves) compile about 5 s longer on a CPU.
    sizes = [m.size for m in prunable_masks]
    offsets = np.cumsum([0] + sizes)
    all_uniforms = jax.random.uniform(drop_root, (int(offsets[-1]),))
    uniforms = [all_uniforms[offsets[i]:offsets[i + 1]].reshape(m.shape)
                for i, m in enumerate(prunable_masks)]
    scale = [0.0 if target_sparsity == 0 else final / target_sparsity for final in finals]
    return drop.drop_steps(
        prunable_masks, scores, uniforms,
        target_sparsities=[jnp.minimum(overall * s, final) for s, final in zip(scale, finals)],
        drop_away_prob=p, drop_back_prob=q, drop_back_scale=drop_back_scale,
    )

  def global_step(key, count, prunable_params, prunable_masks, final_step: bool):
    """One pool over all prunable weights; scores normalised per leaf."""
    score_keys = jax.random.split(jax.random.fold_in(key, 0), len(prunable_params))
    flat_scores, flat_masks = [], []
    for param, mask, score_key in zip(prunable_params, prunable_masks, score_keys):
      scores = importance_fn(param, score_key).reshape(-1)
      flat_mask = mask.reshape(-1)
      # Normalise by the mean score of the leaf's active weights so that layers
      # with larger weights (e.g. small fan-in) do not win the global pool.
      active = jnp.maximum(jnp.sum(flat_mask), 1)
      mean = jnp.sum(jnp.where(flat_mask, scores, 0.0)) / active
      flat_scores.append(scores / jnp.maximum(mean, jnp.finfo(jnp.float32).tiny))
      flat_masks.append(flat_mask)
    all_scores = jnp.concatenate(flat_scores)
    all_masks = jnp.concatenate(flat_masks)
    if final_step:
      new_all = drop.prune_exact(all_masks, all_scores, target_sparsity)
      info = _exact_info(all_masks, new_all, target_sparsity)
    else:
      new_all, info = drop.drop_step(
          jax.random.fold_in(key, 1), all_masks, all_scores,
          target_sparsity=jnp.asarray(sparsity_schedule(count), jnp.float32),
          drop_away_prob=jnp.asarray(away_schedule(count), jnp.float32),
          drop_back_prob=jnp.asarray(back_schedule(count), jnp.float32),
          drop_back_scale=drop_back_scale,
      )
    sizes = np.cumsum([m.size for m in prunable_masks])[:-1]
    pieces = jnp.split(new_all, sizes)
    return [piece.reshape(m.shape) for piece, m in zip(pieces, prunable_masks)], [info]

  def update_masks(key, count, candidate, masks, final_step: bool):
    """Returns ``(new_masks, [DropInfo])`` for the whole tree."""
    mask_leaves, treedef = jax.tree.flatten(masks)
    param_leaves = jax.tree.leaves(candidate)
    prunable_idx = [i for i, m in enumerate(mask_leaves) if masks_lib.is_prunable_mask(m)]
    prunable_params = [param_leaves[i] for i in prunable_idx]
    prunable_masks = [mask_leaves[i] for i in prunable_idx]
    if not prunable_idx:
      return masks, []
    if is_global:
      new_prunable, infos = global_step(key, count, prunable_params, prunable_masks, final_step)
    else:
      finals = leaf_final_targets(masks)
      new_prunable, infos = leaf_steps(
          key, count, prunable_params, prunable_masks, finals, final_step
      )
    new_leaves = list(mask_leaves)
    for i, new_mask in zip(prunable_idx, new_prunable):
      new_leaves[i] = new_mask
    return jax.tree.unflatten(treedef, new_leaves), infos

  # ---- the optax transformation --------------------------------------------------------
  def change_masks(change: masked.MaskChange, final_step: bool):
    count, candidate, masks = change.count, change.candidate, change.masks
    key = jax.random.fold_in(jax.random.PRNGKey(seed), count)
    new_masks, infos = update_masks(key, count, candidate, masks, final_step)
    stash = change.stash
    if stash is not None:  # remember the value of every weight pruned now
      stash = jax.tree.map(
          lambda s, c, new, old: jnp.where(old & ~new, c, s) if masks_lib.is_prunable_mask(old) else s,
          stash, candidate, new_masks, masks,
      )
    dropped_away = sum((info.dropped_away for info in infos), jnp.zeros((), jnp.int32))
    dropped_back = sum((info.dropped_back for info in infos), jnp.zeros((), jnp.int32))
    shortfall = functools.reduce(
        jnp.maximum, (info.shortfall for info in infos), jnp.zeros((), jnp.float32)
    )
    stats = change.stats.replace(
        last_step=count.astype(jnp.int32),
        dropped_away=dropped_away,
        dropped_back=dropped_back,
        shortfall=shortfall,
        total_dropped_away=change.stats.total_dropped_away + dropped_away,
        total_dropped_back=change.stats.total_dropped_back + dropped_back,
    )
    return new_masks, stash, stats

  def branch_index(count):
    pruning = schedules.is_pruning_step(count, begin_step, end_step, update_every)
    return jnp.where(pruning, jnp.where(count == end_step, 2, 1), 0)

  def check_masks(masks):
    if not is_global:
      reachability(leaf_final_targets(masks))  # ERK / mappings need the shapes

  return masked.masked_pruning(
      inner,
      name="drop_pruning",
      branch_index=branch_index,
      branches=[functools.partial(change_masks, final_step=False),
                functools.partial(change_masks, final_step=True)],
      prunable=prunable,
      keep_stash=regrow_init == "restore",
      check_masks=check_masks,
      packed_masks=packed_masks,
  )


def _exact_info(old_mask, new_mask, target) -> drop.DropInfo:
  n = old_mask.size
  return drop.DropInfo(
      pool_size=jnp.sum(old_mask & ~new_mask, dtype=jnp.int32),
      dropped_away=jnp.sum(old_mask & ~new_mask, dtype=jnp.int32),
      dropped_back=jnp.sum(new_mask & ~old_mask, dtype=jnp.int32),
      target=jnp.asarray(target, jnp.float32),
      expected_sparsity=jnp.asarray(round(n * float(target)) / n, jnp.float32),
      shortfall=jnp.zeros((), jnp.float32),
  )


def find_state(opt_state: optax.OptState) -> DropPruningState:
  """Finds the :class:`DropPruningState` inside any optimizer state.

  Works when ``drop_pruning`` is nested (e.g. inside ``optax.chain``) and on a
  ``pmap``-replicated state, whose replicas are identical by construction (the
  pruning key does not depend on the device): replica 0 is returned.

  Raises:
    ValueError: if there is no such state, or more than one.
  """
  found = [
      leaf
      for leaf in jax.tree_util.tree_leaves(
          opt_state, is_leaf=lambda x: isinstance(x, DropPruningState)
      )
      if isinstance(leaf, DropPruningState)
  ]
  if len(found) != 1:
    raise ValueError(
        f"expected exactly one DropPruningState in the optimizer state, found {len(found)}."
    )
  state = found[0]
  if np.ndim(state.count) > 0:  # replicated by pmap: a leading device axis
    state = jax.tree.map(lambda x: x[0], state)
  return state


def get_masks(opt_state: optax.OptState) -> PyTree:
  """The boolean mask tree of an optimizer state (replica 0 of a replicated state).

  Packed masks (``packed_masks=True``) are unpacked, so the result always mirrors
  the params.
  """
  return masks_lib.unpack_masks(find_state(opt_state).masks)


def get_stats(opt_state: optax.OptState) -> DropStats:
  """The :class:`DropStats` held in an optimizer state."""
  return find_state(opt_state).stats
