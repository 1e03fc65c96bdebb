"""``DropPlan``: the validated, immutable description of a Drop Pruning run.

Built once by :func:`droppruning_jax.drop_pruning`, it is used both by the static
checks (is the schedule reachable? what is the expected trajectory?) and by the traced
mask update, so every formula of the method exists once, here:

* a leaf's target at a step: the overall schedule scaled by ``leaf_target / target``,
  capped at ``leaf_target`` (:func:`leaf_step_target`);
* the per-weight drop-back probability from the user's rate (:func:`effective_drop_back_prob`);
* the pool size whose expected outcome is the target, and that outcome
  (:func:`wanted_pool`, :func:`expected_sparsity`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from droppruning_jax import checks, schedules, selection
from droppruning_jax import distribution as distribution_lib
from droppruning_jax import importance as importance_lib

DROP_BACK_SCALES = ("active", "pruned")
REGROW_INITS = ("zero", "restore")
# Which pool members drop away, and which pruned weights drop back: with equal
# probability, or weighted by importance / by the gradient or the magnitude a weight had
# when it was pruned (see weighting.weighted_probabilities).
DROP_AWAY_RULES = ("uniform", "importance")
DROP_BACK_RULES = ("uniform", "gradient", "stash")
# A shortfall this small is rounding noise, not an unreachable schedule.
_REACHABILITY_TOLERANCE = 1e-6


def _minimum(a, b):
  return (
    jnp.minimum(a, b) if isinstance(a, jax.Array) or isinstance(b, jax.Array) else np.minimum(a, b)
  )


def leaf_step_target(overall, leaf_target: float, target_sparsity: float):
  """A leaf's target at a step: ``min(overall * leaf_target / target, leaf_target)``."""
  scale = 0.0 if target_sparsity == 0 else leaf_target / target_sparsity
  return _minimum(overall * scale, leaf_target)


def effective_drop_back_prob(q, active, pruned, scale: str):
  """Per-weight revival probability of a pruned weight, from the drop-back rate ``q``.

  ``scale="pruned"``: ``q`` is that probability. ``scale="active"``: ``q`` is a *rate*,
  the expected number of revived weights as a fraction of the active ones, ``q |A|``,
  so each pruned weight comes back with probability ``min(1, q |A| / |P|)`` (0 with
  nothing pruned). ``active`` and ``pruned`` are counts or fractions: Python or NumPy
  numbers (the expected trajectory) and traced arrays (the masks' update) alike.
  """
  if scale == "pruned":
    return q
  xp = jnp if any(isinstance(v, jax.Array) for v in (q, active, pruned)) else np
  safe_pruned = xp.where(pruned > 0, pruned, 1)
  return xp.where(pruned > 0, xp.minimum(1.0, q * active / safe_pruned), 0.0)


def drop_back_rate(prob, active, pruned, scale: str):
  """The inverse of :func:`effective_drop_back_prob`: the user's rate giving ``prob``."""
  return prob if scale == "pruned" else prob * pruned / active


def wanted_pool(size, sparsity, target, p, q):
  """``c = n (s' - s (1 - q)) / p``: the pool whose expected outcome is the target.

  With ``E[s_new] = s (1 - q) + p c / n`` (each pool member leaves with probability
  ``p``, each pruned weight returns with probability ``q``). Not rounded or clipped.
  """
  return size * (target - sparsity * (1.0 - q)) / p


def expected_sparsity(sparsity, pool_fraction, p, q):
  """``E[s_new] = s (1 - q) + p c / n`` for a pool of ``c / n = pool_fraction``."""
  return sparsity * (1.0 - q) + p * pool_fraction


class TrajectoryPoint(NamedTuple):
  """Expected state of one leaf at one pruning step (fractions of the leaf size).

  Attributes:
    step: the pruning step count.
    target: scheduled sparsity after the step.
    sparsity_before: expected sparsity before the step.
    drop_away_prob: ``p`` at this step.
    drop_back_prob: per-weight revival probability at this step.
    pool_fraction: candidate pool size ``c / n`` (after clipping to ``[0, 1 - s]``).
    expected_sparsity: expected sparsity after the step.
  """

  step: int
  target: float
  sparsity_before: float
  drop_away_prob: float
  drop_back_prob: float
  pool_fraction: float
  expected_sparsity: float

  @property
  def shortfall(self) -> float:
    return self.target - self.expected_sparsity


class UnreachableScheduleError(ValueError):
  """The drop cannot follow the sparsity schedule with these probabilities: raised by
  ``drop_pruning`` (and its baselines) before anything runs, with the fix in the message
  (a smaller ``drop_back_prob``, a larger ``drop_away_prob``, or more pruning steps)."""


@dataclasses.dataclass(frozen=True)
class DropPlan:
  """Everything :func:`droppruning_jax.drop_pruning` was asked to do, validated.

  Create it with :meth:`create`. ``steps`` are the pruning steps (the last one exact);
  ``leaf_targets`` is filled at ``init`` (per-leaf final targets need the shapes);
  ``None`` means one global pool.
  """

  target_sparsity: float
  begin_step: int
  end_step: int
  update_every: int
  seed: int
  initial_sparsity: float
  sparsity_schedule: schedules.Schedule
  drop_away_prob: schedules.Schedule
  drop_back_prob: schedules.Schedule
  drop_back_scale: str
  regrow_init: str
  importance: importance_lib.ImportanceFn
  distribution: distribution_lib.Distribution
  steps: np.ndarray = dataclasses.field(repr=False)
  drop_away: str = "uniform"
  drop_back: str = "uniform"
  temperature: float = 1.0

  @classmethod
  def create(
    cls,
    *,
    target_sparsity,
    end_step,
    drop_away_prob,
    drop_back_prob,
    begin_step,
    update_every,
    seed,
    initial_sparsity,
    sparsity_schedule,
    drop_back_scale,
    regrow_init,
    importance,
    sparsity_distribution,
    drop_away="uniform",
    drop_back="uniform",
    temperature=None,
  ) -> DropPlan:
    """Validates every argument (see ``drop_pruning``) and checks reachability.

    Raises:
      ValueError: naming the first bad value, or the first pruning step whose target
        drop away cannot reach with these rates.
    """
    checks.check_number(
      "target_sparsity", target_sparsity, 0.0, 1.0, low_open=False, high_open=True
    )
    checks.check_number(
      "initial_sparsity", initial_sparsity, 0.0, 1.0, low_open=False, high_open=True
    )
    begin_step = checks.check_step("begin_step", begin_step)
    end_step = checks.check_step("end_step", end_step)
    checks.check_int("update_every", update_every, 1)
    checks.check_int("seed", seed, -(2**63), 2**64 - 1)
    if begin_step > end_step:
      raise ValueError(f"begin_step={begin_step} is after end_step={end_step}.")
    if initial_sparsity > target_sparsity:
      raise ValueError(
        f"initial_sparsity={initial_sparsity} is above target_sparsity={target_sparsity}."
      )
    checks.check_choice("drop_back_scale", drop_back_scale, DROP_BACK_SCALES)
    checks.check_choice("regrow_init", regrow_init, REGROW_INITS)
    temperature = check_drop_rules(drop_away, drop_back, temperature)
    distribution_lib.validate_distribution(sparsity_distribution, target_sparsity)
    steps = schedules.pruning_step_array(begin_step, end_step, update_every)
    _check_schedule("drop_away_prob", drop_away_prob, steps[:-1], low_open=True)
    _check_schedule("drop_back_prob", drop_back_prob, steps[:-1], low_open=False)
    if sparsity_schedule is None:
      sparsity_schedule = schedules.polynomial_sparsity(
        target_sparsity, begin_step, end_step, initial_sparsity
      )
    _check_schedule("sparsity_schedule", sparsity_schedule, steps, low_open=False, high_open=True)
    plan = cls(
      target_sparsity=float(target_sparsity),
      begin_step=begin_step,
      end_step=end_step,
      update_every=int(update_every),
      seed=int(seed),
      initial_sparsity=float(initial_sparsity),
      sparsity_schedule=sparsity_schedule,
      drop_away_prob=schedules.as_schedule(drop_away_prob),
      drop_back_prob=schedules.as_schedule(drop_back_prob),
      drop_back_scale=drop_back_scale,
      regrow_init=regrow_init,
      importance=importance_lib.get_importance(importance),
      distribution=sparsity_distribution,
      steps=steps,
      drop_away=drop_away,
      drop_back=drop_back,
      temperature=temperature,
    )
    plan.check_reachable(
      distribution_lib.static_targets(sparsity_distribution) or [plan.target_sparsity]
    )
    return plan

  @property
  def is_global(self) -> bool:
    return isinstance(self.distribution, str) and self.distribution == "global"

  def leaf_targets(self, paths: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> list[float]:
    """Final sparsity of every prunable leaf (static; the global target for a global pool)."""
    return distribution_lib.leaf_target_list(paths, shapes, self.distribution, self.target_sparsity)

  def check_leaves(self, paths: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> None:
    """The checks that need the shapes (at ``init``): reachability per leaf, rounding."""
    if self.is_global:  # one pool: no per-leaf targets (a leaf still keeps one weight)
      return
    leaf_targets = self.leaf_targets(paths, shapes)
    self.check_reachable(leaf_targets)
    warn_rounding(paths, shapes, leaf_targets)

  def is_pruning_step(self, count):
    """Traced ``count in steps``."""
    on_grid = (count - self.begin_step) % self.update_every == 0
    return (
      (count >= self.begin_step) & (count <= self.end_step) & (on_grid | (count == self.end_step))
    )

  def rates(self, count) -> tuple[jax.Array, jax.Array]:
    """``(p, q)`` at a traced step: the drop-away probability and the drop-back rate."""
    return (
      jnp.asarray(self.drop_away_prob(count), jnp.float32),
      jnp.asarray(self.drop_back_prob(count), jnp.float32),
    )

  def overall_target(self, count) -> jax.Array:
    return jnp.asarray(self.sparsity_schedule(count), jnp.float32)

  def expected_path(self, leaf_target: float, stop_on_shortfall=False) -> dict[str, np.ndarray]:
    """The expected trajectory of a leaf as arrays (see :func:`expected_trajectory`)."""
    return _path_arrays(
      leaf_target,
      self.target_sparsity,
      self.sparsity_schedule,
      self.drop_away_prob,
      self.drop_back_prob,
      self.drop_back_scale,
      self.steps,
      stop_on_shortfall=stop_on_shortfall,
    )

  def check_reachable(self, leaf_targets: Sequence[float]) -> None:
    """Raises ``ValueError`` at the first pruning step whose target cannot be met in expectation.

    Drop back revives ``q |P|`` weights in expectation while drop away removes at most
    ``p |A|``; late in a schedule towards high sparsity ``|A|`` is tiny, so a drop-back
    rate relative to the pruned set can make the target unreachable.
    """
    for leaf_target in sorted({float(t) for t in leaf_targets}, reverse=True):
      path = self.expected_path(leaf_target, stop_on_shortfall=True)
      short = np.flatnonzero(path["target"] - path["expected"] > _REACHABILITY_TOLERANCE)
      if short.size:
        i = int(short[0])
        point = {k: v[i] for k, v in path.items()}
        raise UnreachableScheduleError(
          _unreachable_message(self, leaf_target, {**point, "step": self.steps[i]})
        )


def check_drop_rules(drop_away, drop_back, temperature) -> float:
  """Validates the drop rules; returns the temperature (default 1.0).

  The weighted rules change *which* weights drop, never how many in expectation (the
  expected counts are those of the uniform rules, see ``weighting.weighted_probabilities``),
  so the reachability check of the uniform rules holds for them unchanged.
  """
  checks.check_choice("drop_away", drop_away, DROP_AWAY_RULES)
  checks.check_choice("drop_back", drop_back, DROP_BACK_RULES)
  if temperature is None:
    return 1.0
  if drop_away == "uniform" and drop_back == "uniform":
    raise ValueError(
      f"temperature={temperature!r} has no effect with drop_away='uniform' and "
      "drop_back='uniform'; it weights drop_away='importance' or drop_back='gradient' "
      "or 'stash'."
    )
  return checks.check_number(
    "temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True
  )


def _unreachable_message(plan: DropPlan, leaf_target: float, point: dict[str, Any]) -> str:
  s, p, q, t = point["before"], point["p"], point["q"], point["target"]
  max_prob = max(0.0, (s + p * (1.0 - s) - t) / s) if s > 0 else 0.0
  max_q = drop_back_rate(max_prob, 1.0 - s, s, plan.drop_back_scale)
  min_p = (t - s * (1.0 - q)) / (1.0 - s)
  hint = "" if plan.drop_back_scale == "active" else ", or drop_back_scale='active'"
  return (
    f"drop pruning cannot follow the sparsity schedule: at pruning step {int(point['step'])} "
    f"the target sparsity is {t:.4f} (leaf target {leaf_target}) but the expected "
    f"sparsity is {s:.4f} before the step; drop back revives a fraction {q * s:.4f} "
    f"of the weights while drop away (p={p:.3f}) can remove at most {p * (1 - s):.4f}, "
    f"so the step ends at {point['expected']:.4f}. Fix it with "
    f"drop_back_prob <= {max_q:.4g} at this step (e.g. anneal it{hint}), "
    f"drop_away_prob >= {min(min_p, 1.0):.4g}{'' if min_p <= 1 else ' (impossible: > 1)'}, "
    "or more pruning steps (a smaller update_every or a later end_step)."
  )


def expected_trajectory(
  leaf_target: float | None = None,
  *,
  target_sparsity: float,
  end_step: int | None = None,
  drop_away_prob: schedules.ScalarOrSchedule = 0.5,
  drop_back_prob: schedules.ScalarOrSchedule = 0.1,
  begin_step: int = 0,
  update_every: int = 100,
  initial_sparsity: float = 0.0,
  sparsity_schedule: schedules.Schedule | None = None,
  drop_back_scale: str = "active",
  steps: Sequence[int] | None = None,
) -> list[TrajectoryPoint]:
  """The expected sparsity of a leaf at every pruning step of a Drop Pruning schedule.

  Takes :func:`droppruning_jax.drop_pruning`'s schedule arguments, with its defaults,
  so a schedule can be looked at before training, e.g.
  ``dp.expected_trajectory(target_sparsity=0.9, end_step=1000, update_every=100)``.
  Unlike ``drop_pruning`` it returns the trajectory also when the drop cannot follow
  the schedule (``drop_pruning`` refuses it): look for points with a ``shortfall``.

  The drop is a Markov chain whose mean follows a deterministic recursion: with current
  sparsity ``s``, target ``s'``, drop-away probability ``p`` and per-weight drop-back
  probability ``q``, ``E[s_new] = s (1 - q) + p c / n`` with ``c / n = clip((s' - s (1 -
  q)) / p, 0, 1 - s)``. The last step is exact (``p = 1, q = 0``, the target is hit).
  ``drop_pruning``'s other arguments (``seed``, ``importance``, the weighted
  ``drop_away`` / ``drop_back`` rules, ``regrow_init``, ...) do not change this
  expectation and are not taken.

  Args:
    leaf_target: final sparsity of the leaf (positional or keyword; defaults to
      ``target_sparsity``). A leaf of a per-layer ``sparsity_distribution`` follows the
      overall schedule scaled by ``leaf_target / target_sparsity``, capped at
      ``leaf_target``.
    target_sparsity: the final overall sparsity, in ``[0, 1)``.
    end_step: step count of the last (exact) pruning step; required unless ``steps``
      is given.
    drop_away_prob: ``p`` in ``(0, 1]``, a constant or a schedule of the step.
    drop_back_prob: ``q`` in ``[0, 1]``, a constant or a schedule; a rate relative to
      the active weights with ``drop_back_scale="active"``, the per-weight revival
      probability with ``"pruned"``.
    begin_step: step count of the first pruning step.
    update_every: steps between pruning steps (``end_step`` need not be on the grid).
    initial_sparsity: target of the first pruning step of the default schedule.
    sparsity_schedule: optional ``step -> overall target sparsity``; defaults, as in
      ``drop_pruning``, to the cubic schedule from ``initial_sparsity`` at the first
      pruning step to ``target_sparsity`` at the last.
    drop_back_scale: ``"active"`` or ``"pruned"``; see ``drop_back_prob``.
    steps: explicit, strictly increasing pruning steps instead of ``begin_step``,
      ``end_step`` and ``update_every`` (which are then left out), e.g. from
      :func:`droppruning_jax.pruning_steps`.

  Returns:
    One :class:`TrajectoryPoint` per pruning step.

  Raises:
    TypeError: for an unknown keyword, or without ``end_step`` and ``steps``.
    ValueError: naming the first invalid argument.
  """
  checks.check_number("target_sparsity", target_sparsity, 0.0, 1.0, low_open=False, high_open=True)
  if leaf_target is None:
    leaf_target = target_sparsity
  checks.check_number("leaf_target", leaf_target, 0.0, 1.0, low_open=False, high_open=True)
  checks.check_number(
    "initial_sparsity", initial_sparsity, 0.0, 1.0, low_open=False, high_open=True
  )
  if initial_sparsity > target_sparsity:
    raise ValueError(
      f"initial_sparsity={initial_sparsity} is above target_sparsity={target_sparsity}."
    )
  checks.check_choice("drop_back_scale", drop_back_scale, DROP_BACK_SCALES)
  step_array = _trajectory_steps(steps, begin_step, end_step, update_every)
  _check_schedule("drop_away_prob", drop_away_prob, step_array[:-1], low_open=True)
  _check_schedule("drop_back_prob", drop_back_prob, step_array[:-1], low_open=False)
  if sparsity_schedule is None:
    sparsity_schedule = schedules.polynomial_sparsity(
      target_sparsity, int(step_array[0]), int(step_array[-1]), initial_sparsity
    )
  elif not callable(sparsity_schedule):
    raise ValueError(
      f"sparsity_schedule={sparsity_schedule!r} must be a schedule, a callable "
      "step -> overall target sparsity (or None for the default)."
    )
  _check_schedule(
    "sparsity_schedule", sparsity_schedule, step_array, low_open=False, high_open=True
  )
  path = _path_arrays(
    float(leaf_target),
    float(target_sparsity),
    sparsity_schedule,
    schedules.as_schedule(drop_away_prob),
    schedules.as_schedule(drop_back_prob),
    drop_back_scale,
    step_array,
  )
  return [
    TrajectoryPoint(int(step), float(t), float(b), float(p), float(q), float(c), float(e))
    for step, t, b, p, q, c, e in zip(
      step_array,
      path["target"],
      path["before"],
      path["p"],
      path["q"],
      path["pool"],
      path["expected"],
    )
  ]


def _trajectory_steps(steps, begin_step, end_step, update_every) -> np.ndarray:
  """The pruning steps of :func:`expected_trajectory`: ``steps``, or those of the grid."""
  if steps is None:
    if end_step is None:
      raise TypeError(
        "expected_trajectory() needs end_step (the last pruning step, as in drop_pruning) "
        "or an explicit list of pruning steps, steps=..."
      )
    begin_step = checks.check_step("begin_step", begin_step)
    end_step = checks.check_step("end_step", end_step)
    checks.check_int("update_every", update_every, 1)
    if begin_step > end_step:
      raise ValueError(f"begin_step={begin_step} is after end_step={end_step}.")
    return schedules.pruning_step_array(begin_step, end_step, update_every)
  if end_step is not None or begin_step != 0 or update_every != 100:
    raise ValueError(
      f"steps={steps!r} replaces begin_step, end_step and update_every (begin_step="
      f"{begin_step!r}, end_step={end_step!r}, update_every={update_every!r}); pass "
      "either steps or those three."
    )
  if isinstance(steps, (str, bytes)) or not isinstance(steps, (Sequence, np.ndarray)):
    raise ValueError(f"steps={steps!r} must be a non-empty sequence of step counts.")
  for i, step in enumerate(steps):
    checks.check_step(f"steps[{i}]", step)
  step_array = np.asarray([int(step) for step in steps], np.int64)
  if not step_array.size or np.any(np.diff(step_array) <= 0):
    raise ValueError(f"steps={list(steps)!r} must be a non-empty, strictly increasing sequence.")
  return step_array


def _path_arrays(
  final, target_sparsity, sparsity_schedule, away, back, scale, steps, stop_on_shortfall=False
):
  return _expected_path(
    final,
    targets=leaf_step_target(
      schedules.schedule_values(sparsity_schedule, steps), final, target_sparsity
    ),
    away=schedules.schedule_values(away, steps),
    back=schedules.schedule_values(back, steps),
    scale=scale,
    stop_on_shortfall=stop_on_shortfall,
  )


_MAX_VECTOR_PASSES = 16  # after this many binding clips, a plain loop does the rest


def _expected_path(final, *, targets, away, back, scale, stop_on_shortfall=False):
  """The recursion ``s -> s (1 - q) + p clip(c / n, 0, 1 - s)`` over all pruning steps.

  The last step is exact (``p = 1, q = 0``, target ``final``). Vectorised: where no
  clip binds, the expected sparsity after a step is its target, so every step is
  computed at once from the previous step's target; from the first step whose clip
  binds on, the same is done again (after a few such passes, a plain loop finishes).
  Cost: ``O(steps)`` array work, seconds for 10^7 pruning steps. With
  ``stop_on_shortfall`` the computation ends at the first step that misses its target.
  """
  n = len(targets)
  targets = np.asarray(targets, np.float64).copy()
  p = np.asarray(away, np.float64).copy()
  rate = np.asarray(back, np.float64).copy()
  targets[-1], p[-1], rate[-1] = final, 1.0, 0.0
  out = {k: np.full(n, np.nan) for k in ("before", "q", "pool", "expected")}
  start, s, passes = 0, 0.0, 0
  while start < n:
    if passes < _MAX_VECTOR_PASSES:  # all remaining steps at once, guessing no clip binds
      before = np.concatenate([[s], targets[start:-1]])
    else:  # one step
      before = np.asarray([s])
    stop = start + len(before)
    q = effective_drop_back_prob(rate[start:stop], 1.0 - before, before, scale)
    unclipped = wanted_pool(1.0, before, targets[start:stop], p[start:stop], q)
    pool = np.clip(unclipped, 0.0, 1.0 - before)
    binds = np.flatnonzero(pool != unclipped)
    if binds.size:  # the guess holds up to and including the first binding step
      passes += 1
      stop = start + int(binds[0]) + 1
    m = stop - start
    expected = expected_sparsity(before[:m], pool[:m], p[start:stop], q[:m])
    for key, value in (("before", before), ("q", q), ("pool", pool), ("expected", expected)):
      out[key][start:stop] = value[:m]
    s, start = expected[-1], stop
    if stop_on_shortfall and targets[stop - 1] - s > _REACHABILITY_TOLERANCE:
      break
  return {"target": targets, "p": p, **out}


def _check_schedule(name, schedule, steps, *, low_open, high_open=False):
  """Checks a constant, or a schedule at every pruning step that uses it, in ``[0, 1]``."""
  if not callable(schedule):
    checks.check_number(name, schedule, 0.0, 1.0, low_open=low_open, high_open=high_open)
    return
  if not len(steps):
    return
  values = schedules.schedule_values(schedule, steps)
  low = values <= 0 if low_open else values < 0
  high = values >= 1 if high_open else values > 1
  bad = np.flatnonzero(~np.isfinite(values) | low | high)
  if bad.size:
    i = int(bad[0])
    try:
      checks.check_number(name, float(values[i]), 0.0, 1.0, low_open=low_open, high_open=high_open)
    except ValueError as error:
      raise ValueError(f"{error} (schedule {name} evaluated at step {int(steps[i])})") from None


def warn_rounding(
  paths: Sequence[str], shapes: Sequence[tuple[int, ...]], leaf_targets: Sequence[float]
) -> None:
  """Warns about leaves whose final target rounds to all of their weights, or to none."""
  messages = []
  for path, shape, final in zip(paths, shapes, leaf_targets):
    size = int(np.prod(shape))
    wanted = int(round(size * float(final)))
    if size and wanted >= size:
      kept = size - selection.final_pruned_count(size, final)
      messages.append(f"{path!r} ({size} weights at {final:.4g} rounds to all: {kept} kept)")
    elif final > 0 and wanted == 0:
      messages.append(f"{path!r} ({size} weights at {final:.4g} rounds to none pruned)")
  if messages:
    warnings.warn("per-leaf target rounds to all or nothing: " + "; ".join(messages), stacklevel=3)
