"""Preprocessing and batching of in-memory datasets (pure NumPy): the validation split,
per-channel normalisation, CIFAR augmentation, batch counts and batches."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from experiments.data import (
  CIFAR10_MEAN,
  CIFAR10_STD,
  DEFAULT_VALIDATION_EXAMPLES,
  MIN_TRAIN_FOR_DEFAULT_VALIDATION,
  check_dataset_name,
)


def validation_count(requested: int | None, num_train: int) -> int:
  """How many training images the validation split holds out.

  Args:
    requested: ``config.validation_examples``: ``None`` (unset) for the default,
      ``DEFAULT_VALIDATION_EXAMPLES`` from a training split of at least
      ``MIN_TRAIN_FOR_DEFAULT_VALIDATION`` images and none from a smaller one (the
      tiny synthetic or mocked splits of tests); ``0`` for none; otherwise exactly
      that many.
    num_train: Images in the whole training split (before any ``max_train_examples``).

  Returns:
    The count, in ``[0, num_train)``.

  Raises:
    ValueError: naming ``requested`` if it is not an integer, negative, or not
      smaller than ``num_train``.
  """
  if requested is None:
    return DEFAULT_VALIDATION_EXAMPLES if num_train >= MIN_TRAIN_FOR_DEFAULT_VALIDATION else 0
  if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
    raise ValueError(f"validation_examples={requested!r} must be unset or an integer >= 0.")
  if requested < 0:
    raise ValueError(f"validation_examples={requested!r} must be unset or an integer >= 0.")
  if requested and requested >= num_train:
    raise ValueError(
      f"validation_examples={requested} must be smaller than the {num_train} images of "
      "the training split (it holds out the last ones); use fewer, or 0 for none."
    )
  return int(requested)


def split_validation(
  images: np.ndarray, labels: np.ndarray, count: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Holds out the LAST ``count`` examples of a training split for validation.

  A fixed, seed-independent split: the validation images are the same for every run
  on the same data, and the training images are the ones before them.

  Args:
    images: The whole training split's images, examples along axis 0.
    labels: Its labels.
    count: Examples to hold out (see :func:`validation_count`); 0 for none.

  Returns:
    ``((train_images, train_labels), (val_images, val_labels))``: views of the
    inputs; with ``count=0`` the validation arrays are empty.

  Raises:
    ValueError: naming ``count`` if it is negative or larger than the split.
  """
  num_examples = len(images)
  if len(labels) != num_examples:
    raise ValueError(f"{num_examples} images but {len(labels)} labels; they must match.")
  if not 0 <= count <= num_examples:
    raise ValueError(f"count={count} is outside [0, {num_examples}] (the split's size).")
  cut = num_examples - count
  return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation of pixels scaled to ``[0, 1]``.

  Accumulated in float64 over chunks of images, so that a whole training split is
  never converted to floats at once.

  Args:
    images: ``uint8`` array of shape ``(N, H, W, C)`` with ``N >= 1``.
    chunk: Images per chunk.

  Returns:
    ``(mean, std)``, each a ``float32`` array of shape ``(C,)``; the std is the
    population std over all pixels of a channel.
  """
  if len(images) == 0:
    raise ValueError("channel_stats needs at least one image.")
  channels = images.shape[-1]
  total = np.zeros(channels, np.float64)
  total_sq = np.zeros(channels, np.float64)
  for start in range(0, len(images), chunk):
    block = np.asarray(images[start : start + chunk], np.float64).reshape(-1, channels) / 255.0
    total += block.sum(axis=0)
    total_sq += np.square(block).sum(axis=0)
  count = len(images) * math.prod(images.shape[1:-1])
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  return mean.astype(np.float32), std.astype(np.float32)


def normalize(
  images: np.ndarray,
  name: str,
  stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
  """Converts raw pixel values (0..255) to the model's float32 input.

  Args:
    images: Array of shape ``(N, H, W, C)`` with values in ``[0, 255]``.
    name: Dataset name: the pixels are scaled to ``[0, 1]``; ``"cifar10"`` is
      always standardised per channel too, with ``stats`` or, without them,
      ``CIFAR10_MEAN`` and ``CIFAR10_STD``.
    stats: ``(mean, std)`` per channel (e.g. from :func:`channel_stats` of the
      training images) to standardise with, for any dataset; a zero std counts as 1.

  Returns:
    A new ``float32`` array of the same shape.
  """
  check_dataset_name(name)
  scaled = np.asarray(images, dtype=np.float32) / np.float32(255.0)
  if stats is not None:
    mean, std = (np.asarray(x, np.float32) for x in stats)
    return (scaled - mean) / np.where(std > 0, std, np.float32(1.0))
  if name == "cifar10":
    return (scaled - CIFAR10_MEAN) / CIFAR10_STD
  return scaled


def random_crop_flip(
  rng: np.random.Generator, images: np.ndarray, *, padding: int = 4
) -> np.ndarray:
  """Standard CIFAR augmentation: zero-pad, random crop, random h-flip.

  Each image is zero-padded by ``padding`` pixels per side, cropped back to
  its original size at a uniformly random offset, and mirrored left-right
  with probability 1/2. Apply to normalised images: zero padding is then the
  mean colour.

  Args:
    rng: Source of randomness; the result is deterministic given its state.
    images: Batch of shape ``(N, H, W, C)``.
    padding: Pixels of zero padding on each side.

  Returns:
    A new array with the shape and dtype of ``images``.
  """
  num_images, height, width, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  top = rng.integers(0, 2 * padding + 1, size=num_images)
  left = rng.integers(0, 2 * padding + 1, size=num_images)
  flip = rng.random(num_images) < 0.5
  # Gather every crop at once: rows (N, H, 1) and cols (N, 1, W) broadcast to
  # an (N, H, W) pixel grid; flipping reverses the column order per image.
  rows = top[:, None] + np.arange(height)
  cols = left[:, None] + np.arange(width)
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(num_images)[:, None, None], rows[:, :, None], cols[:, None, :]]


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Returns how many batches ``batches`` yields for ``num_examples``."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def batches(
  images: np.ndarray,
  labels: np.ndarray,
  batch_size: int,
  *,
  rng: np.random.Generator | None = None,
  shuffle: bool = True,
  drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Returns an iterator over ``(images, labels)`` mini-batches of one epoch.

  Args:
    images: Array with the examples along axis 0.
    labels: Array with one label per example.
    batch_size: Examples per batch.
    rng: Shuffles the order; required when ``shuffle`` is True. The order is
      deterministic given its state.
    shuffle: Visit the examples in a random order.
    drop_remainder: Skip the last batch if it would be smaller than
      ``batch_size`` (keeps shapes static, so jitted steps compile once).

  Raises:
    ValueError: If the arguments are inconsistent (raised at call time, not
      at the first ``next``).
  """
  num_examples = len(images)
  if len(labels) != num_examples:
    raise ValueError(f"{num_examples} images but {len(labels)} labels; they must match.")
  if shuffle and rng is None:
    raise ValueError("shuffle=True needs an rng (np.random.Generator).")
  count = num_batches(num_examples, batch_size, drop_remainder=drop_remainder)
  order = rng.permutation(num_examples) if shuffle else None
  return _iterate_batches(images, labels, batch_size, count, order)


def _iterate_batches(
  images: np.ndarray,
  labels: np.ndarray,
  batch_size: int,
  count: int,
  order: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  for start in range(0, count * batch_size, batch_size):
    if order is None:
      batch = slice(start, start + batch_size)
    else:
      batch = order[start : start + batch_size]
    yield images[batch], labels[batch]
