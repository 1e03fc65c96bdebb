"""The fast training loop as one call: two compiled step variants, chosen on the host.

A pruning transformation updates its masks behind a ``lax.switch`` on its step count.
Compiled into every step, that conditional costs time (1.1-1.3x a dense step on
LeNet-300-100; on a GPU its predicate is read on the host, which stalls the step). The
loop knows which steps are pruning steps, so :func:`jit_train_step` compiles the user's
step twice, with ``skip_mask_update=False`` and ``True``, and runs the variant that the
host step number asks for.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from droppruning_jax.skeleton import find_state, unwrap_variables

# How often (in calls) TrainStep reads the state's step count and skipped-update counter
# from the device to check them, besides at every pruning step: a sync per this many
# steps costs nothing measurable and finds a drift or a skipped update within them.
CHECK_EVERY = 100


def _check_step_type(step: Any) -> int:
  if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
    if isinstance(step, jax.Array):
      raise TypeError(
        f"step must be a host integer, got a jax.Array ({step!r}): it chooses which "
        "compiled variant runs, so it cannot be traced, and reading it from the device "
        "every step stalls the loop. Count the steps on the host (e.g. "
        "`for step in range(start, num_steps)` with `start = dp.get_count(opt_state)` read once)."
      )
    raise TypeError(f"step must be a host integer (int), got {type(step).__name__}: {step!r}.")
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}.")
  return int(step)


def _steps_of(schedule: Any) -> Any:
  """The pruning steps a pruning transformation (or an ``nnx.Optimizer`` holding one)
  exposes; anything else is returned as given (an iterable of steps)."""
  for candidate in (schedule, getattr(schedule, "tx", None)):
    if hasattr(candidate, "pruning_steps"):
      return candidate.pruning_steps
  if hasattr(schedule, "init") and hasattr(schedule, "update"):
    raise TypeError(
      "this optax transformation exposes no pruning_steps: pass the pruning transformation "
      "itself (dp.drop_pruning(...), dp.rigl(...), ...), not a chain around it, or its "
      "steps, e.g. tx.pruning_steps of the pruning transformation inside the chain."
    )
  return schedule


def _pruning_step_set(pruning_steps: Iterable[int]) -> frozenset[int]:
  pruning_steps = _steps_of(pruning_steps)
  if isinstance(pruning_steps, (int, np.integer)) or not isinstance(pruning_steps, Iterable):
    raise TypeError(
      "pruning_steps must be an iterable of step counts, e.g. "
      f"dp.pruning_steps(begin_step, end_step, update_every); got {pruning_steps!r}."
    )
  if isinstance(pruning_steps, np.ndarray):
    pruning_steps = pruning_steps.ravel().tolist()
  steps = list(pruning_steps)
  bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
  if bad:
    raise TypeError(f"pruning_steps must hold integer step counts, got {bad[0]!r}.")
  if not steps:
    raise ValueError(
      "pruning_steps is empty: every step would skip the mask update and the masks "
      "would never change. Pass dp.pruning_steps(...) with the transformation's arguments."
    )
  if min(steps) < 0:
    raise ValueError(f"pruning_steps must be >= 0, got {min(steps)}.")
  return frozenset(int(s) for s in steps)


def _accepts_skip_mask_update(fn: Callable) -> bool:
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # no signature to read: trust the caller
    return True
  return any(
    p.name == "skip_mask_update" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
  )


def _state_progress(args: Any) -> tuple[int, int] | None:
  """``(count, skipped_updates)`` of the one :class:`PruningState` in ``args``, if there
  is exactly one (an nnx.Optimizer's unwrapped, replica 0 of a pmap-replicated one)."""
  try:
    state = unwrap_variables(find_state(args))
  except ValueError:
    return None
  # One transfer for both scalars (this read is the loop's only sync with the device).
  count, stats = jax.device_get((state.count, state.stats))
  return int(count), int(stats.skipped_updates)


class TrainStep:
  """A train step compiled twice; call it as ``step_fn(step, *args, **kwargs)``.

  Made by :func:`jit_train_step`. ``step`` is the host step number; the other
  arguments go to the compiled step.

  Attributes:
    with_mask_update: the step compiled with ``skip_mask_update=False`` (runs at
      pruning steps).
    without_mask_update: the step compiled with ``skip_mask_update=True`` (runs at
      every other step).
    pruning_steps: the sorted step counts at which ``with_mask_update`` runs.
  """

  def __init__(self, train_step, pruning_steps, jit, check_step, jit_kwargs):
    self._pruning = _pruning_step_set(pruning_steps)
    self.pruning_steps = tuple(sorted(self._pruning))
    self.with_mask_update = jit(functools.partial(train_step, skip_mask_update=False), **jit_kwargs)
    self.without_mask_update = jit(
      functools.partial(train_step, skip_mask_update=True), **jit_kwargs
    )
    self._check_step = check_step
    self._first_call = True
    self._skipped = 0  # skipped updates already reported, or found on the first call
    functools.update_wrapper(self, train_step, updated=())

  def is_pruning_step(self, step: int) -> bool:
    """Whether the masks may change at ``step`` (then the conditional is compiled in)."""
    return _check_step_type(step) in self._pruning

  def __call__(self, step, *args, **kwargs):
    step = _check_step_type(step)
    if self._check_step and (self._first_call or step in self._pruning or step % CHECK_EVERY == 0):
      self._check_progress(step, (args, kwargs))
    fn = self.with_mask_update if step in self._pruning else self.without_mask_update
    return fn(*args, **kwargs)

  def _check_progress(self, step: int, args: Any) -> None:
    """Raises if the state's step count is not ``step`` or a pruning step was skipped."""
    first, self._first_call = self._first_call, False
    progress = _state_progress(args)
    if progress is None:
      return
    count, skipped = progress
    if count != step:
      raise ValueError(
        f"step={step}, but the pruning state in the arguments has taken {count} updates: "
        "step must be the transformation's step count (the number of updates before "
        "this one), or pruning steps would be skipped. "
        + (
          "Start the loop at the restored count (dp.get_count(opt_state)), "
          if first
          else "The host step drifted from the state's count since the first call; count "
          "one step per call, "
        )
        + "or pass check_step=False if the two differ on purpose."
      )
    if first:  # what a restored state skipped before this loop is not this loop's doing
      self._skipped = skipped
    if skipped > self._skipped:
      new = skipped - self._skipped
      self._skipped = skipped
      raise ValueError(
        f"{new} mask update(s) were skipped before step {step}: the transformation "
        "updates its masks at steps that pruning_steps does not list, so they ran with "
        "skip_mask_update=True and kept the old masks (the final exact one too, if it was "
        "among them). Pass the transformation's own schedule, e.g. dp.pruning_steps("
        "begin_step, end_step, update_every) with its arguments (han_pruning: its "
        f"pruning_steps). Given: {len(self.pruning_steps)} steps from "
        f"{self.pruning_steps[0]} to {self.pruning_steps[-1]}."
      )


def jit_train_step(
  train_step: Callable,
  pruning_steps: Iterable[int] | Any,
  *,
  jit: Callable = jax.jit,
  check_step: bool = True,
  **jit_kwargs,
) -> TrainStep:
  """Compiles a train step with and without the mask update; runs the one each step needs.

  ::

    def train_step(params, opt_state, batch, *, skip_mask_update):
      grads = jax.grad(loss_fn)(params, batch)
      updates, opt_state = tx.update(grads, opt_state, params,
                                     skip_mask_update=skip_mask_update)
      return optax.apply_updates(params, updates), opt_state

    step_fn = dp.jit_train_step(train_step, tx,
                                donate_argnums=(0, 1))
    for step in range(num_steps):
      params, opt_state = step_fn(step, params, opt_state, next(batches))

  Steps that are not pruning steps run without the mask-update conditional; the
  results are the same as a step compiled with it (tested). With Flax NNX pass
  ``jit=nnx.jit`` and forward ``skip_mask_update`` to ``optimizer.update``.

  Args:
    train_step: the step, not jitted, taking a keyword argument ``skip_mask_update``
      that it passes to ``tx.update`` (or ``nnx.Optimizer.update``).
    pruning_steps: the pruning transformation itself (``tx``: every policy of the
      library exposes its steps as ``tx.pruning_steps``; an ``nnx.Optimizer`` holding
      one works too), or the step counts at which masks may change, e.g.
      ``tx.pruning_steps`` of the pruning transformation inside an ``optax.chain``.
    jit: the function that compiles: ``jax.jit`` (default), ``flax.nnx.jit``, or
      anything with their signature (e.g. ``functools.partial(jax.pmap, axis_name=...)``).
    check_step: on the first call, at every pruning step and every
      :data:`CHECK_EVERY` steps, read the step count and the skipped-update counter of
      the (single) pruning state found in the arguments from the device, and raise if
      the count is not ``step`` (a loop counting from 0 after a resume, or a host
      count that drifts) or if a mask update was skipped since the last check (
      ``pruning_steps`` that miss the transformation's own steps): either would leave
      the masks short of the schedule, silently. One read of two scalars per
      ``CHECK_EVERY`` steps.
    **jit_kwargs: passed to ``jit`` for both variants (``donate_argnums``,
      ``static_argnames``, shardings, ...); positions count the arguments after ``step``.

  Returns:
    A :class:`TrainStep` ``step_fn``; ``step_fn(step, *args, **kwargs)`` runs
    ``train_step(*args, skip_mask_update=step not in pruning_steps, **kwargs)``
    compiled. ``step`` must be a host integer (``TypeError`` otherwise): the number of
    updates the transformation has taken before this one.

  Raises:
    TypeError: if ``train_step`` is already jitted or takes no ``skip_mask_update``,
      or ``pruning_steps`` holds no integers.
    ValueError: if ``pruning_steps`` is empty or negative.
  """
  if hasattr(train_step, "lower") and hasattr(train_step, "trace"):
    raise TypeError(
      "train_step is already jitted: pass the plain function, jit_train_step compiles "
      "it (once per variant; skip_mask_update must stay a Python bool)."
    )
  if not callable(train_step):
    raise TypeError(f"train_step must be callable, got {train_step!r}.")
  if not _accepts_skip_mask_update(train_step):
    raise TypeError(
      "train_step must take a keyword argument skip_mask_update and pass it to "
      "tx.update (or optimizer.update); without it both variants compile the conditional."
    )
  return TrainStep(train_step, pruning_steps, jit, bool(check_step), jit_kwargs)
