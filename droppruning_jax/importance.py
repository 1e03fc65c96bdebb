"""Importance scores: which weights are "unimportant" candidates for drop away.

An importance function maps ``(param, key) -> scores`` of the param's shape; low
scores are pruned first. Magnitude is the paper's criterion; random importance
turns every pruning method into its random-pruning baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import jax
import jax.numpy as jnp

ImportanceFn = Callable[[jax.Array, jax.Array], jax.Array]


def magnitude(param: jax.Array, key: jax.Array) -> jax.Array:
  """``|w|``: the magnitude criterion (the key is unused)."""
  del key
  return jnp.abs(param).astype(jnp.float32)


def random(param: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform random scores: pruning by this importance is random pruning."""
  return jax.random.uniform(key, param.shape, jnp.float32)


IMPORTANCE_FUNCTIONS = {"magnitude": magnitude, "random": random}


def get_importance(importance: Union[str, ImportanceFn]) -> ImportanceFn:
  """Resolves ``"magnitude"``, ``"random"`` or a callable ``(param, key) -> scores``."""
  if callable(importance):
    return importance
  if importance not in IMPORTANCE_FUNCTIONS:
    raise ValueError(
      f"importance={importance!r} is not one of {sorted(IMPORTANCE_FUNCTIONS)} "
      "or a callable (param, key) -> scores."
    )
  return IMPORTANCE_FUNCTIONS[importance]
