"""Argument checks shared by every transformation: a bad value is named before anything runs."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

# The step count is an int32 in the state (optax.safe_int32_increment saturates there).
MAX_STEP = 2**31 - 2


def check_number(
  name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> float:
  """Returns ``value`` as a float; raises ``ValueError`` unless it is a finite real in range."""
  _refuse_jax_array(name, value, "float")
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
    raise ValueError(f"{name}={value!r} must be a finite real number (a Python or NumPy number).")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name}={value!r} is outside {interval}.")
  return float(value)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
  """Returns ``value`` as an int; raises ``ValueError`` unless it is an integer in range."""
  _refuse_jax_array(name, value, "int")
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name}={value!r} must be an integer.")
  if value < minimum:
    raise ValueError(f"{name}={value!r} must be >= {minimum}.")
  if maximum is not None and value > maximum:
    raise ValueError(f"{name}={value!r} must be <= {maximum}.")
  return int(value)


def _refuse_jax_array(name: str, value: Any, convert: str) -> None:
  """A JAX array (or tracer) is refused by name: the settings are static Python values."""
  if isinstance(value, jax.Array):
    raise ValueError(
      f"{name}={value!r} must be a Python or NumPy number, not a JAX array: the settings "
      f"are static, convert it on the host with {convert}(...)."
    )


def check_step(name: str, value: Any) -> int:
  """A step count: an integer in ``[0, MAX_STEP]`` (the state counts steps in int32)."""
  return check_int(name, value, 0, MAX_STEP)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {choices}.")
  return value


def check_bool(name: str, value: Any) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"{name}={value!r} must be a bool.")
  return value
