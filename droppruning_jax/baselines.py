"""The baselines of the paper's comparisons, as special cases of :func:`drop_pruning`.

All of them share the schedule, the masked update and the exact final step, so a
comparison between them isolates the stochastic drop itself. They take the keyword
arguments of :func:`drop_pruning`: e.g. ``importance="saliency"`` makes
:func:`gradual_magnitude_pruning` gradual pruning by ``|w g|``.
"""

from __future__ import annotations

import optax

from droppruning_jax import schedules
from droppruning_jax.drop import drop_pruning


def _refuse_fixed(baseline: str, kwargs: dict, fixed: tuple[str, ...]) -> None:
  """A ``ValueError`` naming an argument the baseline fixes, not Python's duplicate keyword."""
  given = {name: kwargs[name] for name in fixed if name in kwargs}
  if given:
    raise ValueError(
      f"{baseline} fixes {', '.join(fixed)}; got "
      + ", ".join(f"{name}={value!r}" for name, value in given.items())
      + ". Use drop_pruning to choose them."
    )


def gradual_magnitude_pruning(
  inner: optax.GradientTransformation, **kwargs
) -> optax.GradientTransformation:
  """Zhu & Gupta (2017): prune the lowest-magnitude weights, never revive (``p = 1, q = 0``)."""
  _refuse_fixed("gradual_magnitude_pruning", kwargs, ("drop_away_prob", "drop_back_prob"))
  return drop_pruning(inner, drop_away_prob=1.0, drop_back_prob=0.0, **kwargs)


def drop_away_only(
  inner: optax.GradientTransformation, drop_away_prob: schedules.ScalarOrSchedule = 0.5, **kwargs
) -> optax.GradientTransformation:
  """The paper's ablation without drop back (``q = 0``)."""
  _refuse_fixed("drop_away_only", kwargs, ("drop_back_prob",))
  return drop_pruning(inner, drop_away_prob=drop_away_prob, drop_back_prob=0.0, **kwargs)


def drop_back_only(
  inner: optax.GradientTransformation, drop_back_prob: schedules.ScalarOrSchedule = 0.1, **kwargs
) -> optax.GradientTransformation:
  """The paper's ablation without stochastic drop away (``p = 1``)."""
  _refuse_fixed("drop_back_only", kwargs, ("drop_away_prob",))
  return drop_pruning(inner, drop_away_prob=1.0, drop_back_prob=drop_back_prob, **kwargs)


def random_pruning(inner: optax.GradientTransformation, **kwargs) -> optax.GradientTransformation:
  """Gradual pruning of uniformly random weights (random importance, ``p = 1, q = 0``)."""
  _refuse_fixed("random_pruning", kwargs, ("drop_away_prob", "drop_back_prob", "importance"))
  return drop_pruning(inner, drop_away_prob=1.0, drop_back_prob=0.0, importance="random", **kwargs)
