"""Importance scores: which weights are "unimportant" candidates for drop away.

An importance function maps ``(param, key) -> scores`` of the param's shape; low
scores are pruned first. Magnitude is the paper's criterion; random importance
turns every pruning method into its random-pruning baseline.

A function that also takes a keyword argument named ``grad`` receives the step's
dense gradient of the param (before masking) there: ``(param, key, *, grad) ->
scores``. :func:`saliency` is one; :func:`uses_grad` tells them apart and
:func:`compute` calls either kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Optional, Union

import jax
import jax.numpy as jnp

# (param, key) -> scores, or (param, key, *, grad) -> scores (see uses_grad).
ImportanceFn = Callable[..., jax.Array]


def magnitude(param: jax.Array, key: jax.Array) -> jax.Array:
  """``|w|``: the magnitude criterion (the key is unused)."""
  del key
  return jnp.abs(param).astype(jnp.float32)


def random(param: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform random scores: pruning by this importance is random pruning."""
  return jax.random.uniform(key, param.shape, jnp.float32)


def saliency(param: jax.Array, key: jax.Array, *, grad: jax.Array) -> jax.Array:
  """``|w * g|``: the first-order Taylor estimate of the loss change when ``w`` is removed.

  Molchanov et al. (2017, 2019): removing ``w`` changes the loss by about ``-g w``,
  so ``|g w|`` measures what the weight is worth now, where ``|w|`` ignores the loss.
  A NaN product (a NaN gradient) scores ``+inf``, like a non-finite weight: such a
  weight is never pruned, so a divergence stays visible. The key is unused.
  """
  del key
  scores = jnp.abs(param.astype(jnp.float32) * grad.astype(jnp.float32))
  return jnp.where(jnp.isnan(scores), jnp.inf, scores)


IMPORTANCE_FUNCTIONS = {"magnitude": magnitude, "random": random, "saliency": saliency}


def uses_grad(fn: ImportanceFn) -> bool:
  """Whether ``fn`` takes the gradient: it has a parameter named ``grad``."""
  try:
    parameters = inspect.signature(fn).parameters
  except (TypeError, ValueError):  # no signature to read (some builtins): (param, key)
    return False
  grad = parameters.get("grad")
  return grad is not None and grad.kind in (
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
  )


def compute(
  fn: ImportanceFn, param: jax.Array, key: jax.Array, grad: Optional[jax.Array] = None
) -> jax.Array:
  """``fn(param, key, grad=grad)`` if ``fn`` takes the gradient, else ``fn(param, key)``."""
  if not uses_grad(fn):
    return fn(param, key)
  if grad is None:
    raise ValueError(f"importance function {fn!r} needs the gradient (grad=None was given).")
  return fn(param, key, grad=grad)


def get_importance(importance: Union[str, ImportanceFn]) -> ImportanceFn:
  """Resolves ``"magnitude"``, ``"random"``, ``"saliency"`` or a callable.

  A callable is ``(param, key) -> scores`` or, with a ``grad`` parameter, ``(param,
  key, *, grad) -> scores``; call the result through :func:`compute`.
  """
  if callable(importance):
    return importance
  if importance not in IMPORTANCE_FUNCTIONS:
    raise ValueError(
      f"importance={importance!r} is not one of {sorted(IMPORTANCE_FUNCTIONS)} "
      "or a callable (param, key) -> scores."
    )
  return IMPORTANCE_FUNCTIONS[importance]
