"""Schedules: when masks are updated and how sparse they should be.

Schedules are ordinary ``optax`` schedules (``step -> value``), evaluated on a traced
step count inside the jitted update and on static steps for validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[Union[int, jnp.ndarray]], Union[float, jnp.ndarray]]
ScalarOrSchedule = Union[float, Schedule]


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
  """The step counts at which masks are updated: ``begin, begin + k*every, ..., end``.

  ``end_step`` is always included, also when it is not on the grid, because the
  final exact step happens there.
  """
  return pruning_step_array(begin_step, end_step, update_every).tolist()


def pruning_step_array(begin_step: int, end_step: int, update_every: int) -> np.ndarray:
  """:func:`pruning_steps` as an ``int64`` array (cheap also for millions of steps)."""
  steps = np.arange(begin_step, end_step + 1, update_every, dtype=np.int64)
  if steps[-1] != end_step:
    steps = np.append(steps, np.int64(end_step))
  return steps


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
  except Exception:  # noqa: BLE001 -- not vectorisable: one step at a time below
    pass
  return np.asarray([evaluate(schedule, int(step)) for step in step_array], dtype=np.float64)


def rewind_learning_rate(
  base: Schedule, *, last_update_step: int, rewind_step: int, total_steps: int
) -> Schedule:
  """Learning-rate rewinding (Renda et al., 2020) for the steps after the last mask update.

  Up to ``last_update_step`` the schedule is ``base``. From the next step to the end of
  training (the fine-tuning phase, weights kept) it replays ``base`` from
  ``rewind_step`` to ``total_steps``, stretched or compressed to fit the phase: the
  first fine-tuning step gets ``base(rewind_step)`` and the replay reaches
  ``base(total_steps)`` when training ends. ``rewind_step = last_update_step + 1`` is
  ``base`` unchanged; ``rewind_step = 0`` restarts the whole schedule in the phase (the
  "scaled learning-rate restarting" of Le & Hua, 2021).

  Args:
    base: the schedule to rewind (``step -> learning rate``).
    last_update_step: the step count of the last mask update.
    rewind_step: the step of ``base`` that the fine-tuning phase starts from, in
      ``[0, last_update_step + 1]``.
    total_steps: the number of training steps; the phase is the steps
      ``last_update_step + 1 .. total_steps - 1``.
  """
  start = int(last_update_step) + 1
  if not 0 <= rewind_step <= start:
    raise ValueError(f"rewind_step={rewind_step!r} must be in [0, last_update_step + 1 = {start}].")
  if start >= total_steps:
    raise ValueError(
      f"no steps after the last mask update (step {last_update_step}) to fine-tune in: "
      f"total_steps={total_steps}."
    )
  scale = (total_steps - rewind_step) / (total_steps - start)

  def schedule(step):
    step = jnp.asarray(step)
    replay = rewind_step + (step - start) * scale
    return jnp.where(step < start, base(step), base(replay))

  return schedule
