"""How the target sparsity is shared among the prunable leaves.

``"uniform"`` gives every prunable leaf the same target, a mapping gives each its
own (e.g. Han et al.'s per-layer LeNet rates), ``"erk"`` uses the
Erdős–Rényi-Kernel rule of Evci et al. (2020), and ``"global"`` ranks all prunable
weights together in one pool (handled by the wrapper; per-leaf targets do not exist
there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

from droppruning_jax import masks as masks_lib

Distribution = Union[str, Mapping[str, float]]
DISTRIBUTIONS = ("uniform", "erk", "global")


def validate_distribution(distribution: Distribution, target_sparsity: float) -> None:
  """Checks a distribution statically (raises ``ValueError`` naming the bad value)."""
  if isinstance(distribution, Mapping):
    if not distribution:
      raise ValueError("sparsity_distribution mapping is empty.")
    for name, value in distribution.items():
      value = float(value)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"per-layer target sparsity {value} for {name!r} is outside [0, 1).")
    return
  if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
    raise ValueError(
      f"sparsity_distribution={distribution!r} is not one of {DISTRIBUTIONS} or a "
      "mapping {path pattern: sparsity}."
    )


def static_targets(distribution: Distribution) -> list[float]:
  """The per-leaf targets known without shapes (a mapping's values; none otherwise)."""
  if isinstance(distribution, Mapping):
    return [float(v) for v in distribution.values()]
  return []


def erk_sparsities(
  shapes: Mapping[str, tuple[int, ...]], target_sparsity: float
) -> dict[str, float]:
  """Erdős–Rényi-Kernel per-layer sparsities (Evci et al., 2020, "Rigging the Lottery").

  Layer ``l`` gets density ``eps * sum(shape_l) / prod(shape_l)``, with ``eps``
  chosen so the total number of kept weights is ``(1 - target) * total``; layers
  whose density would exceed 1 are kept dense and ``eps`` is solved again.

  Args:
    shapes: ``{path: shape}`` of the prunable leaves.
    target_sparsity: overall sparsity over these leaves.

  Returns:
    ``{path: sparsity}``.
  """
  sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
  raw = {name: float(np.sum(shape)) / sizes[name] for name, shape in shapes.items()}
  dense: set[str] = set()
  while True:
    kept_budget = sum(sizes[n] * (1.0 - target_sparsity) for n in sizes)
    kept_budget -= sum(sizes[n] for n in dense)
    divisor = sum(raw[n] * sizes[n] for n in sizes if n not in dense)
    if divisor <= 0:
      break
    eps = kept_budget / divisor
    densest = max((n for n in sizes if n not in dense), key=lambda n: raw[n], default=None)
    if densest is not None and raw[densest] * eps > 1.0:
      dense.add(densest)
      continue
    break
  return {
    name: 0.0 if name in dense else float(min(1.0, max(0.0, 1.0 - raw[name] * eps)))
    for name in sizes
  }


def leaf_targets(
  shapes: Mapping[str, tuple[int, ...]], distribution: Distribution, target_sparsity: float
) -> dict[str, float]:
  """Final target sparsity of every prunable leaf, from ``{path: shape}``.

  ``"global"`` gives every leaf the global target (the pool decides per leaf).

  Raises:
    ValueError: for a mapping whose patterns miss a prunable leaf or match none.
  """
  if isinstance(distribution, Mapping):
    return masks_lib.resolve_targets(list(shapes), distribution)
  if distribution == "erk":
    return erk_sparsities(shapes, target_sparsity)
  return {name: float(target_sparsity) for name in shapes}


def leaf_target_list(
  paths: Sequence[str],
  shapes: Sequence[tuple[int, ...]],
  distribution: Distribution,
  target_sparsity: float,
) -> list[float]:
  """:func:`leaf_targets` as a list in the order of ``paths`` (the prunable leaves')."""
  by_name = leaf_targets(dict(zip(paths, shapes)), distribution, target_sparsity)
  return [by_name[path] for path in paths]
