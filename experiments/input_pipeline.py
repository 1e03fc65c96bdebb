"""The input pipeline: the dataset in memory, and each process's share of the batches.

:func:`load_data` loads the three splits (train, validation held out of the training
split, test) as normalised arrays; :func:`train_batches` and :func:`eval_batches` cut
them into global batches split per device. The order and augmentation of an epoch are a
pure function of ``(config.seed, epoch)`` (:func:`epoch_rng`), whatever the hardware.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from experiments import config_checks, errors, preprocessing
from experiments import data as data_lib


class Data(NamedTuple):
  """Normalised float32 images and int32 labels of the three splits.

  ``val_*`` are the last ``len(val_images)`` images of the dataset's training split,
  held out (empty without a validation split); ``train_*`` are the images before
  them, capped at ``max_train_examples``.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  image_shape: tuple[int, ...]
  num_classes: int
  val_images: np.ndarray
  val_labels: np.ndarray


def load_data(config: ml_collections.ConfigDict) -> Data:
  """Loads the dataset named by the config, holds out the validation split, normalises.

  Order: the last ``validation_count(config.validation_examples, N)`` images of the
  whole training split (``N`` images) become the validation split, then
  ``max_train_examples`` caps the images before them, so the validation images do not
  depend on the cap. CIFAR-10 with a validation split, and any dataset with
  ``config.standardize``, is standardised with the per-channel statistics of the training
  images that remain (never the held-out ones); CIFAR-10 without one with the constants
  ``CIFAR10_MEAN`` / ``CIFAR10_STD``, the MNIST-like datasets are scaled to ``[0, 1]``.

  Raises:
    DatasetError: if the data is missing or corrupt (the message says how to get it).
    ConfigError: naming the value, if the validation split or the cap leave fewer
      training images than one batch.
  """
  idx_dir = None if config_checks.is_unset(config.idx_dir) else config.idx_dir
  data_dir = None if config_checks.is_unset(config.data_dir) else config.data_dir
  dataset = data_lib.load_dataset(
    config.dataset, idx_dir=idx_dir, data_dir=data_dir, download=config.download
  )
  train_images, train_labels = dataset["train"]
  test_images, test_labels = dataset["test"]
  try:
    held_out = preprocessing.validation_count(config.validation_examples, len(train_images))
  except ValueError as error:
    raise errors.ConfigError(f"invalid config: {error}") from error
  if held_out and len(train_images) - held_out < config.batch_size:
    raise errors.ConfigError(
      f"invalid config: validation_examples={held_out} leaves "
      f"{len(train_images) - held_out} of the {len(train_images)} training images, fewer "
      f"than one batch (batch_size={config.batch_size}); hold out at most "
      f"{len(train_images) - config.batch_size}, or 0 for none."
    )
  (train_images, train_labels), (val_images, val_labels) = preprocessing.split_validation(
    train_images, train_labels, held_out
  )
  if config.max_train_examples:
    train_images = train_images[: config.max_train_examples]
    train_labels = train_labels[: config.max_train_examples]
  if config.max_test_examples:
    test_images = test_images[: config.max_test_examples]
    test_labels = test_labels[: config.max_test_examples]
  if len(train_images) < config.batch_size:
    raise errors.ConfigError(
      f"invalid config: batch_size={config.batch_size} is larger than the "
      f"{len(train_images)} training examples."
    )
  # Statistics of the images trained on only: the held-out ones must not leak in.
  stats = None
  if (config.dataset == "cifar10" and held_out) or config.standardize:
    stats = preprocessing.channel_stats(train_images)
  return Data(
    train_images=preprocessing.normalize(train_images, config.dataset, stats),
    train_labels=train_labels,
    test_images=preprocessing.normalize(test_images, config.dataset, stats),
    test_labels=test_labels,
    image_shape=tuple(dataset["image_shape"]),
    num_classes=dataset["num_classes"],
    val_images=preprocessing.normalize(val_images, config.dataset, stats),
    val_labels=val_labels,
  )


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
  """The generator of one epoch's order and augmentation: a function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch])


def train_batches(
  config: ml_collections.ConfigDict, data: Data, epoch: int, num_local_devices: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """This process's share of every global batch of an epoch, split per device.

  The global batch (order and augmentation) does not depend on how many processes
  or devices share it, so runs on different hardware see the same data.

  Yields:
    ``(images, labels)`` of shape ``(num_local_devices, per_device, ...)``.
  """
  rng = epoch_rng(config.seed, epoch)
  per_process = config.batch_size // jax.process_count()
  start = jax.process_index() * per_process
  for images, labels in preprocessing.batches(
    data.train_images, data.train_labels, config.batch_size, rng=rng
  ):
    if config.augment:
      images = preprocessing.random_crop_flip(rng, images)
    images = images[start : start + per_process]
    labels = labels[start : start + per_process]
    yield (
      images.reshape(num_local_devices, -1, *images.shape[1:]),
      labels.reshape(num_local_devices, -1),
    )


def eval_batches(
  config: ml_collections.ConfigDict,
  images: np.ndarray,
  labels: np.ndarray,
  num_local_devices: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """This process's share of an evaluation set in global batches, zero-padded at the end.

  Yields:
    ``(images, labels, weights)`` split per device; padding has weight 0.
  """
  batch = config.eval_batch_size
  per_process = batch // jax.process_count()
  start = jax.process_index() * per_process
  for offset in range(0, len(images), batch):
    chunk_images = images[offset : offset + batch]
    chunk_labels = labels[offset : offset + batch]
    weights = np.ones(len(chunk_images), np.float32)
    pad = batch - len(chunk_images)
    if pad:
      chunk_images = np.concatenate(
        [chunk_images, np.zeros((pad, *chunk_images.shape[1:]), chunk_images.dtype)]
      )
      chunk_labels = np.concatenate([chunk_labels, np.zeros(pad, chunk_labels.dtype)])
      weights = np.concatenate([weights, np.zeros(pad, np.float32)])
    chunk = slice(start, start + per_process)
    yield (
      chunk_images[chunk].reshape(num_local_devices, -1, *chunk_images.shape[1:]),
      chunk_labels[chunk].reshape(num_local_devices, -1),
      weights[chunk].reshape(num_local_devices, -1),
    )
