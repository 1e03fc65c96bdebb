"""``PruningStats``: what the most recent mask update did, in one ``int32`` vector."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# The fields of PruningStats, in the order of its vector.
STATS_FIELDS = (
  "last_step",
  "dropped_away",
  "dropped_back",
  "shortfall",
  "total_dropped_away",
  "total_dropped_back",
  "skipped_updates",
  "nonfinite",
)
_FLOAT_FIELDS = ("shortfall",)


class PruningStats(NamedTuple):
  """What the most recent mask update did, summed over leaves, plus running totals.

  All fields live in one ``int32`` vector (``shortfall`` as the bits of a float32):
  every state leaf is a buffer that goes in and out of every jitted train step, and
  scalar buffers cost measurably more than one vector on a CPU
  (``docs/performance.md``). Read the fields as attributes; they index the last axis,
  so a replicated (pmap) state reads one value per replica.

  Attributes:
    values: ``int32[..., len(STATS_FIELDS)]``, the fields in :data:`STATS_FIELDS` order.
  """

  values: jax.Array

  @classmethod
  def create(cls, **fields) -> PruningStats:
    """Stats from every field by name (scalars, or one value per replica).

    Raises:
      ValueError: if a field is missing or unknown.
    """
    if set(fields) != set(STATS_FIELDS):
      raise ValueError(
        f"PruningStats.create needs exactly the fields {STATS_FIELDS}, got {tuple(fields)}."
      )
    return cls(jnp.stack([_to_int32(name, fields[name]) for name in STATS_FIELDS], axis=-1))

  @classmethod
  def zeros(cls) -> PruningStats:
    """The stats before the first mask update (``last_step = -1``)."""
    fields = dict.fromkeys(STATS_FIELDS, 0)
    fields["last_step"] = -1
    return cls.create(**fields)

  def replace(self, **fields) -> PruningStats:
    """A copy with the named fields set, the other fields unchanged.

    Raises:
      ValueError: if a name is not a field.
    """
    values = jnp.asarray(self.values)  # also when the state was moved to NumPy
    for name, value in fields.items():
      if name not in STATS_FIELDS:
        raise ValueError(f"{name!r} is not a PruningStats field; fields: {STATS_FIELDS}.")
      values = values.at[..., STATS_FIELDS.index(name)].set(_to_int32(name, value))
    return PruningStats(values)

  def _field(self, name: str) -> jax.Array:
    value = self.values[..., STATS_FIELDS.index(name)]
    if name in _FLOAT_FIELDS:
      return jax.lax.bitcast_convert_type(value, jnp.float32)
    return value

  @property
  def last_step(self) -> jax.Array:
    """Step count of the most recent mask update (``-1`` before the first)."""
    return self._field("last_step")

  @property
  def dropped_away(self) -> jax.Array:
    """Weights removed by that update."""
    return self._field("dropped_away")

  @property
  def dropped_back(self) -> jax.Array:
    """Weights revived by that update."""
    return self._field("dropped_back")

  @property
  def shortfall(self) -> jax.Array:
    """Largest ``target - expected sparsity`` over leaves at that update (float32).

    Positive when the target was not reachable with the given drop rates.
    """
    return self._field("shortfall")

  @property
  def total_dropped_away(self) -> jax.Array:
    """Weights removed since the start."""
    return self._field("total_dropped_away")

  @property
  def total_dropped_back(self) -> jax.Array:
    """Weights revived since the start."""
    return self._field("total_dropped_back")

  @property
  def skipped_updates(self) -> jax.Array:
    """Pruning steps whose mask update did not run (``skip_mask_update=True``).

    A correct loop keeps it 0.
    """
    return self._field("skipped_updates")

  @property
  def nonfinite(self) -> jax.Array:
    """Prunable weights that were NaN or infinite at the most recent mask update.

    Such weights are never pruned by it (they count as most important, so a
    divergence stays visible in the loss instead of hiding in a pruned entry) and
    their scores never decide a shared pool.
    """
    return self._field("nonfinite")


def _to_int32(name: str, value) -> jax.Array:
  if name in _FLOAT_FIELDS:
    return jax.lax.bitcast_convert_type(jnp.asarray(value, jnp.float32), jnp.int32)
  return jnp.asarray(value, jnp.int32)
