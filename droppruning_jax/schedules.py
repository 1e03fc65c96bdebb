"""Pruning schedules: when masks change, how sparse they should be, and whether
drop away / drop back can follow the schedule at all.

Everything here is plain Python/NumPy on static step numbers (used at construction
time for validation) or ``jnp`` on a traced step count (used inside the jitted
update); schedules of the drop probabilities are ordinary ``optax`` schedules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[Union[int, jnp.ndarray]], Union[float, jnp.ndarray]]
ScalarOrSchedule = Union[float, Schedule]

DROP_BACK_SCALES = ("active", "pruned")


def as_schedule(value: ScalarOrSchedule) -> Schedule:
  """Turns a constant into a constant schedule; returns callables unchanged."""
  if callable(value):
    return value
  constant = float(value)
  return lambda step: constant


def evaluate(schedule: Schedule, step: int) -> float:
  """Evaluates a schedule at a static step as a Python float (also inside a trace)."""
  with jax.ensure_compile_time_eval():
    return float(np.asarray(schedule(step)))


def polynomial_sparsity(
    target_sparsity: float,
    begin_step: int,
    end_step: int,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
) -> Schedule:
  """The gradual pruning schedule of Zhu & Gupta (2017).

  ``s(t) = s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** power`` for
  ``begin <= t <= end``, constant outside. ``power=3`` is their cubic schedule: fast
  pruning while the network is redundant, slow near the target.

  Args:
    target_sparsity: ``s_f``, reached at ``end_step``.
    begin_step: step of the first pruning step.
    end_step: step of the last pruning step.
    initial_sparsity: ``s_i``, the target at ``begin_step``.
    power: exponent of the polynomial.

  Returns:
    An optax schedule ``step -> sparsity``.
  """
  if end_step == begin_step:
    # A single pruning step: it is the exact final step.
    return lambda step: jnp.asarray(target_sparsity, jnp.float32)
  return optax.polynomial_schedule(
      init_value=initial_sparsity,
      end_value=target_sparsity,
      power=power,
      transition_steps=end_step - begin_step,
      transition_begin=begin_step,
  )


def cosine_anneal(start: float, end: float, begin_step: int, end_step: int) -> Schedule:
  """Cosine interpolation from ``start`` at ``begin_step`` to ``end`` at ``end_step``.

  Constant outside the window. E.g. ``drop_back_prob=cosine_anneal(0.1, 0.0, b, e)``
  anneals drop back away and ``drop_away_prob=cosine_anneal(0.5, 1.0, b, e)`` makes
  drop away deterministic by the end of the schedule.
  """
  decay = optax.cosine_decay_schedule(1.0, max(end_step - begin_step, 1))
  return lambda step: end + (start - end) * decay(jnp.maximum(step - begin_step, 0))


def pruning_steps(begin_step: int, end_step: int, update_every: int) -> list[int]:
  """The step counts at which masks change: ``begin, begin + k*every, ..., end``.

  ``end_step`` is always included, also when it is not on the grid, because the
  final exact step happens there.
  """
  steps = list(range(begin_step, end_step + 1, update_every))
  if steps[-1] != end_step:
    steps.append(end_step)
  return steps


def is_pruning_step(count: jnp.ndarray, begin_step: int, end_step: int, update_every: int):
  """Traced version of ``count in pruning_steps(...)``."""
  on_grid = (count - begin_step) % update_every == 0
  return (count >= begin_step) & (count <= end_step) & (on_grid | (count == end_step))


def effective_drop_back_prob(q, active_count, pruned_count, scale: str):
  """Per-weight revival probability of a pruned weight.

  With ``scale="pruned"`` the rate ``q`` is the probability itself (the literal
  reading of "each pruned weight is revived with probability q"). With
  ``scale="active"`` the *expected number* of revived weights is ``q * |A|``, i.e.
  each pruned weight comes back with probability ``min(1, q * |A| / |P|)``. Works
  on Python floats and traced arrays alike.
  """
  if scale == "pruned":
    return q
  if isinstance(pruned_count, (int, float)) and isinstance(active_count, (int, float)):
    return 0.0 if pruned_count <= 0 else min(1.0, q * active_count / pruned_count)
  safe_pruned = jnp.maximum(pruned_count, 1)
  return jnp.where(pruned_count > 0, jnp.minimum(1.0, q * active_count / safe_pruned), 0.0)


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


def schedule_values(schedule: Schedule, steps: Sequence[int]) -> np.ndarray:
  """Evaluates a schedule at many static steps (vectorised when the schedule allows it)."""
  step_array = np.asarray(steps, dtype=np.int64)
  try:
    with jax.ensure_compile_time_eval():  # static values even when init is traced
      values = np.asarray(schedule(jnp.asarray(step_array)), dtype=np.float64)
    if values.shape == step_array.shape:
      return values
    if values.shape == ():
      return np.full(step_array.shape, float(values))
  except Exception:  # pylint: disable=broad-except
    pass  # Not vectorisable: evaluate one step at a time below.
  return np.asarray([evaluate(schedule, int(step)) for step in step_array], dtype=np.float64)


def expected_trajectory(
    leaf_target: float,
    *,
    target_sparsity: float,
    sparsity_schedule: Schedule,
    drop_away_prob: Schedule,
    drop_back_prob: Schedule,
    drop_back_scale: str,
    steps: Sequence[int],
) -> list[TrajectoryPoint]:
  """Simulates the expected sparsity of a leaf whose final target is ``leaf_target``.

  The process is a Markov chain whose mean follows a deterministic recursion: with
  current sparsity ``s``, target ``s'``, drop-away ``p`` and per-weight drop-back
  ``q``, ``E[s_new] = s (1 - q) + p c / n`` with ``c / n = clip((s' - s (1 - q)) / p,
  0, 1 - s)``. The last step is exact (``p = 1, q = 0`` and the target is hit).
  """
  scale = 0.0 if target_sparsity == 0 else leaf_target / target_sparsity
  targets = np.minimum(leaf_target, schedule_values(sparsity_schedule, steps) * scale)
  away = schedule_values(drop_away_prob, steps)
  back = schedule_values(drop_back_prob, steps)
  points = []
  s = 0.0
  for i, step in enumerate(steps):
    if i == len(steps) - 1:
      target, p, q = leaf_target, 1.0, 0.0
    else:
      target, p = float(targets[i]), float(away[i])
      q = effective_drop_back_prob(float(back[i]), 1.0 - s, s, drop_back_scale)
    pool = min(max((target - s * (1.0 - q)) / p, 0.0), 1.0 - s)
    expected = s * (1.0 - q) + p * pool
    points.append(TrajectoryPoint(int(step), target, s, p, q, pool, expected))
    s = expected
  return points


# A relative shortfall this small is rounding noise, not an unreachable schedule.
_REACHABILITY_TOLERANCE = 1e-6


def check_reachable(
    leaf_targets: Sequence[float],
    *,
    target_sparsity: float,
    sparsity_schedule: Schedule,
    drop_away_prob: Schedule,
    drop_back_prob: Schedule,
    drop_back_scale: str,
    steps: Sequence[int],
) -> None:
  """Raises ``ValueError`` at the first pruning step whose target cannot be met in expectation.

  Drop back revives ``q |P|`` weights in expectation while drop away can remove at
  most ``p |A|``; late in a schedule towards high sparsity ``|A|`` is tiny, so a
  drop-back rate relative to the pruned set makes the target unreachable and the
  run would end far below it (before the final exact step jumps there).
  """
  for leaf_target in sorted(set(float(t) for t in leaf_targets), reverse=True):
    trajectory = expected_trajectory(
        leaf_target,
        target_sparsity=target_sparsity,
        sparsity_schedule=sparsity_schedule,
        drop_away_prob=drop_away_prob,
        drop_back_prob=drop_back_prob,
        drop_back_scale=drop_back_scale,
        steps=steps,
    )
    for point in trajectory:
      if point.shortfall > _REACHABILITY_TOLERANCE:
        s, p, q, t = point.sparsity_before, point.drop_away_prob, point.drop_back_prob, point.target
        max_q = max(0.0, (s + p * (1.0 - s) - t) / s) if s > 0 else 0.0
        if drop_back_scale == "active":
          max_q = max_q * s / (1.0 - s)  # back to the user's rate relative to |A|
        min_p = (t - s * (1.0 - q)) / (1.0 - s)
        hint = "" if drop_back_scale == "active" else ", or drop_back_scale='active'"
        raise ValueError(
            f"drop pruning cannot follow the sparsity schedule: at pruning step {point.step} "
            f"the target sparsity is {t:.4f} (leaf target {leaf_target}) but the expected "
            f"sparsity is {s:.4f} before the step; drop back revives a fraction {q * s:.4f} "
            f"of the weights while drop away (p={p:.3f}) can remove at most {p * (1 - s):.4f}, "
            f"so the step ends at {point.expected_sparsity:.4f}. Fix it with "
            f"drop_back_prob <= {max_q:.4g} at this step (e.g. anneal it{hint}), "
            f"drop_away_prob >= {min(min_p, 1.0):.4g}{'' if min_p <= 1 else ' (impossible: > 1)'}, "
            "or more pruning steps (a smaller update_every or a later end_step)."
        )
