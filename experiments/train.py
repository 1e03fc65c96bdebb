"""The one training loop shared by every experiment.

``train_and_evaluate(config, workdir)`` trains a model from ``experiments.models``
on a dataset from ``experiments.data`` with one of the pruning methods (or none),
data-parallel with ``jax.pmap`` over the local devices (``config.parallel="pmap"``)
or with ``jax.jit`` over a device mesh of all processes' devices
(``config.parallel="jit"``, optionally FSDP), and writes into ``workdir``:

* ``metrics.jsonl``: one JSON line per epoch (losses, validation and test error,
  sparsity, drop counts);
* ``checkpoints/``: an Orbax checkpoint after every epoch, every
  ``config.checkpoint_every_steps`` steps and on SIGTERM, named by the global step
  (the last two are kept); rerunning the same command resumes from the latest one
  that restores;
* ``config.json`` (the config the run was started with; a rerun whose config differs
  in a field that affects results is refused) and ``run.json`` (device count and the
  resumes, with the result-neutral fields they changed);
* ``summary.json``, ``results_row.md``, ``curves.png``, ``layers.png`` at the end
  (the last three written by :mod:`experiments.report`).

Determinism: the data order and augmentation of an epoch are a pure function of
``(config.seed, epoch)``, and the pruning randomness a pure function of
``(config.seed, step)`` (see ``droppruning_jax.drop_pruning``), so a checkpoint holds
all the state there is: a run that is interrupted at any point and resumed ends with
exactly the bits of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Optional

import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import droppruning_jax as dp
from droppruning_jax import importance as importance_lib
from droppruning_jax import masks as masks_lib
from droppruning_jax import plan as plan_lib
from droppruning_jax import skeleton
from experiments import data as data_lib
from experiments import distill as distill_lib
from experiments import models, report

PyTree = Any

METHODS = (
  "dense",
  "drop",
  "gradual",
  "drop_away_only",
  "drop_back_only",
  "random",
  "han",
  "rigl",
  "set",
)
# Dynamic sparse training (droppruning_jax.dynamic_sparse): sparse from the first step,
# the topology changes every update_every steps until prune_end_epoch.
DYNAMIC_SPARSE_METHODS = ("rigl", "set")
DROP_FRACTION_DECAYS = ("cosine", "constant")
# config.importance: the library's names; the methods built on drop_pruning take it
# ("random" is itself random importance).
IMPORTANCES = tuple(importance_lib.IMPORTANCE_FUNCTIONS)
IMPORTANCE_METHODS = ("drop", "gradual", "drop_away_only", "drop_back_only")
# The weighted drop rules (config.drop_away / drop_back / temperature): method="drop".
DROP_AWAY_RULES = plan_lib.DROP_AWAY_RULES
DROP_BACK_RULES = plan_lib.DROP_BACK_RULES
OPTIMIZERS = ("sgd", "adam")
MODEL_APIS = ("linen", "nnx")
PARALLEL_MODES = ("pmap", "jit")
LR_SCHEDULES = ("constant", "cosine", "step")
SPARSITY_DISTRIBUTIONS = ("uniform", "global", "erk")
# Datasets each model can read: LeNet-5 expects 28x28x1 images and VGG-16's five
# poolings need 32x32; LeNet-300-100 flattens anything.
MODEL_DATASETS = {
  "lenet300": data_lib.DATASET_NAMES,
  "lenet5": data_lib.MNIST_LIKE_NAMES,
  "vgg16": ("cifar10",),
  "vit": data_lib.MNIST_LIKE_NAMES,
}
# Config fields that cannot change a run's results: a resume may change them freely
# (the summary lists the ones that changed). How the devices are chosen is here too;
# the resulting device count is checked separately (see _check_devices).
RUN_CONTROL_FIELDS = (
  "stop_after_epochs",
  "stop_after_steps",
  "progress",
  "host_devices",
  "coordinator_address",
  "num_processes",
  "process_id",
  "download",
  "idx_dir",
  "data_dir",
  "checkpoint_every_steps",
  "num_devices",
  "multihost",
)
# Fields that change the layout of the checkpointed state, not the training: a run
# cannot resume from a checkpoint written with another value.
STATE_LAYOUT_FIELDS = ("packed_masks",)
# The value a field takes in a run folder whose config.json lacks it, where that is not
# its default: such a run trained on the whole training split.
MISSING_FIELD_VALUES = {"validation_examples": 0}

METRICS_FILE = report.METRICS_FILE
SUMMARY_FILE = report.SUMMARY_FILE
CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
BROKEN_CHECKPOINT_DIR = "broken_checkpoints"
CHECKPOINTS_TO_KEEP = 2
# Running sums of the unfinished epoch, saved with a mid-epoch checkpoint so that the
# epoch's metrics line comes out the same after a resume.
PARTIAL_FIELDS = ("loss", "accuracy", "max_shortfall", "away_before", "back_before", "train_time_s")


class TrainState(NamedTuple):
  """Everything that changes during training (one replica's view).

  Attributes:
    params: the model's ``params`` collection.
    batch_stats: the ``batch_stats`` collection (``{}`` for models without batch norm).
    opt_state: the optimizer state; holds the masks for the pruning methods.
  """

  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState


class StopTraining(Exception):
  """Raised internally by ``config.stop_after_steps`` to simulate a crash."""


class RunError(Exception):
  """An error the user can act on; the command line prints its message as one line."""


class ConfigError(RunError, ValueError):
  """The config is invalid, or differs from the one the run folder was started with."""


class RunFolderError(RunError):
  """The run folder cannot be used (not writable, or a file is unreadable)."""


class DivergedError(RunError):
  """The train loss (or a parameter) became non-finite; the run stopped.

  Attributes:
    step: the global step (1-based) whose loss was not finite.
  """

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class Preempted(Exception):
  """SIGTERM or SIGINT (Ctrl-C) arrived: a checkpoint of the current step was saved and
  the run stopped.

  Attributes:
    step: the global step of that checkpoint.
    signum: the signal that stopped the run (the CLI exits with ``128 + signum``).
  """

  def __init__(self, message: str, step: int, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.step = step
    self.signum = int(signum)


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def _is_unset(value: Any) -> bool:
  return value is None or value == ""


def _global_device_count(config: ml_collections.ConfigDict) -> int:
  local = config.num_devices if config.num_devices else jax.local_device_count()
  return local * jax.process_count()


def mesh_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The axis sizes of ``parallel="jit"``'s mesh, with ``-1`` resolved.

  Raises:
    ValueError: the shape, names or FSDP axis do not fit the devices.
  """
  shape, names = tuple(config.mesh_shape), tuple(config.mesh_axes)
  devices = _global_device_count(config)
  if len(shape) != len(names) or not shape:
    raise ValueError(
      f"mesh_shape={shape} and mesh_axes={names} must be non-empty and of equal length."
    )
  if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"mesh_axes={names} must be distinct non-empty names.")
  if any(not isinstance(n, int) or isinstance(n, bool) or (n < 1 and n != -1) for n in shape):
    raise ValueError(f"mesh_shape={shape} must hold positive sizes (and at most one -1).")
  known = math.prod(n for n in shape if n != -1)
  if shape.count(-1) > 1 or (shape.count(-1) == 1 and devices % known):
    raise ValueError(f"mesh_shape={shape} cannot be completed to the {devices} devices.")
  resolved = tuple(devices // known if n == -1 else n for n in shape)
  if math.prod(resolved) != devices:
    raise ValueError(
      f"mesh_shape={shape} holds {math.prod(resolved)} devices but the run has {devices} "
      f"({jax.process_count()} process(es) x {devices // jax.process_count()} local)."
    )
  if not _is_unset(config.fsdp_axis) and config.fsdp_axis not in names:
    raise ValueError(f"fsdp_axis={config.fsdp_axis!r} is not one of mesh_axes={names}.")
  return resolved


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a config before any data is loaded or any step is compiled.

  Must run after ``jax.distributed.initialize`` (it counts devices).

  Raises:
    ValueError: naming the field and the value that is wrong.
  """

  def fail(message: str):
    raise ConfigError(f"invalid config: {message}")

  def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

  def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

  if config.method not in METHODS:
    fail(f"method={config.method!r} is not one of {METHODS}.")
  if config.optimizer not in OPTIMIZERS:
    fail(f"optimizer={config.optimizer!r} is not one of {OPTIMIZERS}.")
  if config.lr_schedule not in LR_SCHEDULES:
    fail(f"lr_schedule={config.lr_schedule!r} is not one of {LR_SCHEDULES}.")
  if config.model not in models.MODEL_NAMES:
    fail(f"model={config.model!r} is not one of {tuple(models.MODEL_NAMES)}.")
  if config.model_api not in MODEL_APIS:
    fail(f"model_api={config.model_api!r} is not one of {MODEL_APIS}.")
  if config.model_api == "linen" and config.model not in models.LINEN_MODEL_NAMES:
    fail(f"model={config.model!r} is an NNX model only: add --config.model_api=nnx.")
  if config.model_api == "nnx" and config.model not in models.NNX_MODEL_NAMES:
    fail(
      f"model_api='nnx' has no NNX version of model={config.model!r}; NNX models: "
      f"{tuple(models.NNX_MODEL_NAMES)}."
    )
  if config.parallel not in PARALLEL_MODES:
    fail(f"parallel={config.parallel!r} is not one of {PARALLEL_MODES}.")
  if config.parallel == "jit":
    try:
      mesh_shape(config)
    except ValueError as error:
      fail(str(error))
  if config.dataset not in data_lib.DATASET_NAMES:
    fail(f"dataset={config.dataset!r} is not one of {data_lib.DATASET_NAMES}.")
  if config.dataset not in MODEL_DATASETS[config.model]:
    fail(
      f"model={config.model!r} cannot read dataset={config.dataset!r}; it takes "
      f"{MODEL_DATASETS[config.model]}."
    )
  for name in ("batch_size", "eval_batch_size", "num_epochs"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(f"{name}={value!r} must be a positive integer.")
  for name in (
    "max_train_examples",
    "max_test_examples",
    "stop_after_epochs",
    "stop_after_steps",
    "checkpoint_every_steps",
  ):
    value = config[name]
    if value is not None and (not is_int(value) or value < 1):
      fail(f"{name}={value!r} must be unset or a positive integer.")
  if config.validation_examples is not None and (
    not is_int(config.validation_examples) or config.validation_examples < 0
  ):
    fail(
      f"validation_examples={config.validation_examples!r} must be unset or an integer >= 0 "
      "(0: no validation split)."
    )
  # numpy's generators take no negative seeds; JAX keys take 32 bits.
  if not is_int(config.seed) or not 0 <= config.seed < 2**31:
    fail(f"seed={config.seed!r} must be an integer in [0, 2**31).")
  if not is_int(config.host_devices) or config.host_devices < 0:
    fail(f"host_devices={config.host_devices!r} must be 0 (JAX's default) or a positive integer.")
  if not is_number(config.learning_rate) or config.learning_rate <= 0:
    fail(f"learning_rate={config.learning_rate!r} must be a finite number > 0.")
  if not is_number(config.momentum) or not 0.0 <= config.momentum < 1.0:
    fail(f"momentum={config.momentum!r} is outside [0, 1).")
  if not is_number(config.weight_decay) or config.weight_decay < 0:
    fail(f"weight_decay={config.weight_decay!r} must be a finite number >= 0.")
  if not is_number(config.lr_step_factor) or config.lr_step_factor <= 0:
    fail(f"lr_step_factor={config.lr_step_factor!r} must be a finite number > 0.")
  if config.model == "vgg16" and (
    not is_number(config.width_multiplier) or config.width_multiplier <= 0
  ):
    fail(f"width_multiplier={config.width_multiplier!r} must be a finite number > 0.")
  if config.lr_schedule == "step":
    fractions = list(config.lr_step_fractions)
    if (
      not fractions
      or any(not is_number(f) or not 0 < f < 1 for f in fractions)
      or fractions != sorted(fractions)
    ):
      fail(
        f"lr_step_fractions={tuple(fractions)!r} must be increasing fractions of the "
        "training inside (0, 1)."
      )
  if config.num_devices is not None:
    if config.multihost:
      fail(
        "num_devices cannot be combined with multihost=True (every process uses all "
        "its local devices)."
      )
    if not 1 <= config.num_devices <= jax.local_device_count():
      fail(
        f"num_devices={config.num_devices!r} is outside [1, {jax.local_device_count()}] "
        f"(the local devices: {jax.local_devices()})."
      )
  devices = _global_device_count(config)
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % devices:
      fail(
        f"{name}={config[name]} is not divisible by the {devices} devices "
        f"({jax.process_count()} process(es) x {devices // jax.process_count()} local); "
        "pick a multiple, or set num_devices / host_devices."
      )
  if config.method != "dense":
    if not is_number(config.target_sparsity) or not 0.0 <= config.target_sparsity < 1.0:
      fail(f"target_sparsity={config.target_sparsity!r} is outside [0, 1).")
    if not is_int(config.update_every) or config.update_every < 1:
      fail(f"update_every={config.update_every!r} must be a positive integer.")
    for name in ("drop_away_prob", "drop_back_prob"):
      if not is_number(config[name]) or not 0.0 <= config[name] <= 1.0:
        fail(f"{name}={config[name]!r} is outside [0, 1].")
    begin, end = config.prune_begin_epoch, config.prune_end_epoch
    if not (is_number(begin) and is_number(end)) or not 0 <= begin <= end <= config.num_epochs:
      fail(
        f"need 0 <= prune_begin_epoch={begin} <= prune_end_epoch={end} <= "
        f"num_epochs={config.num_epochs}."
      )
    if config.drop_anneal not in ("none", "cosine"):
      fail(f"drop_anneal={config.drop_anneal!r} is not one of ('none', 'cosine').")
    if config.sparsity_distribution not in SPARSITY_DISTRIBUTIONS:
      fail(
        f"sparsity_distribution={config.sparsity_distribution!r} is not one of "
        f"{SPARSITY_DISTRIBUTIONS}."
      )
    if config.importance not in IMPORTANCES:
      fail(f"importance={config.importance!r} is not one of {IMPORTANCES}.")
    if config.importance != "magnitude" and config.method not in IMPORTANCE_METHODS:
      fail(
        f"importance={config.importance!r} applies to the methods {IMPORTANCE_METHODS}, "
        f"not method={config.method!r}."
      )
    if config.drop_away not in DROP_AWAY_RULES:
      fail(f"drop_away={config.drop_away!r} is not one of {DROP_AWAY_RULES}.")
    if config.drop_back not in DROP_BACK_RULES:
      fail(f"drop_back={config.drop_back!r} is not one of {DROP_BACK_RULES}.")
    weighted = config.drop_away != "uniform" or config.drop_back != "uniform"
    if weighted and config.method != "drop":
      name = "drop_away" if config.drop_away != "uniform" else "drop_back"
      fail(f"{name}={config[name]!r} applies to method='drop', not method={config.method!r}.")
    if config.temperature is not None:
      if not is_number(config.temperature) or config.temperature <= 0:
        fail(f"temperature={config.temperature!r} must be unset or a finite number > 0.")
      if not weighted:
        fail(
          f"temperature={config.temperature!r} has no effect with drop_away='uniform' and "
          "drop_back='uniform'; it weights drop_away='importance' or drop_back='gradient' "
          "or 'stash'."
        )
  if config.lr_rewind_epoch is not None:
    if config.method == "dense":
      fail(
        f"lr_rewind_epoch={config.lr_rewind_epoch!r} rewinds the learning rate after the "
        "last mask update; method='dense' has none."
      )
    if not is_number(config.lr_rewind_epoch) or not (
      0 <= config.lr_rewind_epoch <= config.prune_end_epoch < config.num_epochs
    ):
      fail(
        f"need 0 <= lr_rewind_epoch={config.lr_rewind_epoch!r} <= prune_end_epoch="
        f"{config.prune_end_epoch} < num_epochs={config.num_epochs} (the rewound schedule "
        "runs after the pruning window)."
      )
  if config.teacher_workdir is not None:
    if not is_number(config.distill_weight) or not 0.0 <= config.distill_weight <= 1.0:
      fail(f"distill_weight={config.distill_weight!r} is outside [0, 1].")
    if not is_number(config.distill_temperature) or config.distill_temperature <= 0:
      fail(f"distill_temperature={config.distill_temperature!r} must be a finite number > 0.")
  if config.method in DYNAMIC_SPARSE_METHODS:
    if config.target_sparsity == 0:
      fail(
        f"target_sparsity={config.target_sparsity!r}: method={config.method!r} trains at a "
        "fixed sparsity from the first step and needs one in (0, 1)."
      )
    if not is_number(config.drop_fraction) or not 0.0 < config.drop_fraction <= 1.0:
      fail(f"drop_fraction={config.drop_fraction!r} is outside (0, 1].")
    if config.drop_fraction_decay not in DROP_FRACTION_DECAYS:
      fail(
        f"drop_fraction_decay={config.drop_fraction_decay!r} is not one of {DROP_FRACTION_DECAYS}."
      )
    if config.sparsity_distribution == "global":
      fail(
        f"method={config.method!r} keeps a fixed target per layer: "
        "sparsity_distribution='global' is not supported (use 'uniform' or 'erk')."
      )
    if config.prune_end_epoch <= 0:
      fail(
        f"prune_end_epoch={config.prune_end_epoch!r} must be > 0 for method="
        f"{config.method!r} (the topology changes until then)."
      )
  if config.method == "han":
    if not isinstance(config.han_cycles, int) or config.han_cycles < 1:
      fail(f"han_cycles={config.han_cycles!r} must be a positive integer.")
    if config.han_quality is not None and (
      not is_number(config.han_quality) or config.han_quality <= 0
    ):
      fail(f"han_quality={config.han_quality!r} must be unset or a finite number > 0.")
    if config.han_quality is None and config.sparsity_distribution == "global":
      fail(
        "method='han' prunes per layer: sparsity_distribution='global' is not "
        "supported (use 'uniform' or 'erk', or set han_quality)."
      )


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


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
  depend on the cap. CIFAR-10 with a validation split is standardised with the
  per-channel statistics of the training images that remain (never the held-out
  ones); without one, with the constants ``CIFAR10_MEAN`` / ``CIFAR10_STD``.

  Raises:
    DatasetError: if the data is missing or corrupt (the message says how to get it).
    ConfigError: naming the value, if the validation split or the cap leave fewer
      training images than one batch.
  """
  idx_dir = None if _is_unset(config.idx_dir) else config.idx_dir
  data_dir = None if _is_unset(config.data_dir) else config.data_dir
  dataset = data_lib.load_dataset(
    config.dataset, idx_dir=idx_dir, data_dir=data_dir, download=config.download
  )
  train_images, train_labels = dataset["train"]
  test_images, test_labels = dataset["test"]
  try:
    held_out = data_lib.validation_count(config.validation_examples, len(train_images))
  except ValueError as error:
    raise ConfigError(f"invalid config: {error}") from error
  if held_out and len(train_images) - held_out < config.batch_size:
    raise ConfigError(
      f"invalid config: validation_examples={held_out} leaves "
      f"{len(train_images) - held_out} of the {len(train_images)} training images, fewer "
      f"than one batch (batch_size={config.batch_size}); hold out at most "
      f"{len(train_images) - config.batch_size}, or 0 for none."
    )
  (train_images, train_labels), (val_images, val_labels) = data_lib.split_validation(
    train_images, train_labels, held_out
  )
  if config.max_train_examples:
    train_images = train_images[: config.max_train_examples]
    train_labels = train_labels[: config.max_train_examples]
  if config.max_test_examples:
    test_images = test_images[: config.max_test_examples]
    test_labels = test_labels[: config.max_test_examples]
  if len(train_images) < config.batch_size:
    raise ConfigError(
      f"invalid config: batch_size={config.batch_size} is larger than the "
      f"{len(train_images)} training examples."
    )
  # Statistics of the images trained on only: the held-out ones must not leak in.
  stats = None
  if config.dataset == "cifar10" and held_out:
    stats = data_lib.channel_stats(train_images)
  return Data(
    train_images=data_lib.normalize(train_images, config.dataset, stats),
    train_labels=train_labels,
    test_images=data_lib.normalize(test_images, config.dataset, stats),
    test_labels=test_labels,
    image_shape=tuple(dataset["image_shape"]),
    num_classes=dataset["num_classes"],
    val_images=data_lib.normalize(val_images, config.dataset, stats),
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
  for images, labels in data_lib.batches(
    data.train_images, data.train_labels, config.batch_size, rng=rng
  ):
    if config.augment:
      images = data_lib.random_crop_flip(rng, images)
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


# ---------------------------------------------------------------------------
# Model, optimizer, pruning method
# ---------------------------------------------------------------------------


class FunctionalNNX:
  """An NNX model driven like a linen one: ``init(key, x) -> {"params": ...}`` and
  ``apply(variables, x, train=...)``, with the params a plain nested dict of the
  ``nnx.Param`` values (``nnx.split`` / ``nnx.merge`` inside the step), so that one
  functional loop, its checkpoints and the masks' paths serve both APIs.

  Args:
    name: an NNX model of ``experiments.models`` (``models.NNX_MODEL_NAMES``).
    **kwargs: passed to its constructor, e.g. ``num_classes``.
  """

  def __init__(self, name: str, **kwargs):
    self._build = functools.partial(models.get_nnx_model, name, **kwargs)
    if name not in models.NNX_MODEL_NAMES:
      raise ValueError(f"No NNX version of model {name!r}.")

  def init(self, key: jax.Array, x: jax.Array, train: bool = False) -> dict:
    del x, train  # the shapes are fixed by the constructor
    with nnx.use_eager_sharding(False):  # placed by the runner, not at creation
      model = self._build(rngs=nnx.Rngs(params=key))
    return {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}

  def _abstract(self) -> nnx.Module:
    with nnx.use_eager_sharding(False):
      return nnx.eval_shape(lambda: self._build(rngs=nnx.Rngs(0)))

  def apply(self, variables: dict, x: jax.Array, train: bool = False, mutable=False):
    if mutable:
      raise ValueError("the NNX experiment models have no mutable collections")
    graphdef, state = nnx.split(self._abstract())
    nnx.replace_by_pure_dict(state, variables["params"])
    return nnx.merge(graphdef, state)(x, train=train)

  def param_specs(self) -> Optional[dict]:
    """The params' sharding annotations (``nnx.with_partitioning``) as a dict of
    ``PartitionSpec`` mirroring ``init``'s params, or None when nothing is annotated."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(self._abstract(), nnx.Param)))
    if all(spec == P() for spec in jax.tree.leaves(specs, is_leaf=_is_spec)):
      return None
    return specs


def _is_spec(x: Any) -> bool:
  return isinstance(x, P)


def make_model(config: ml_collections.ConfigDict, num_classes: int):
  """The model: a linen module, or for ``model_api="nnx"`` a :class:`FunctionalNNX`."""
  kwargs = {"num_classes": num_classes}
  if config.model_api == "nnx":
    return FunctionalNNX(config.model, **kwargs)
  if config.model == "vgg16":
    kwargs["width_multiplier"] = config.width_multiplier
  return models.get_model(config.model, **kwargs)


def make_learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate per step: ``lr_schedule`` over the whole training, rewound after
  the pruning window when ``lr_rewind_epoch`` is set."""
  total_steps = config.num_epochs * steps_per_epoch
  if config.lr_schedule == "constant":
    base = optax.constant_schedule(config.learning_rate)
  elif config.lr_schedule == "cosine":
    base = optax.cosine_decay_schedule(config.learning_rate, total_steps)
  else:
    boundaries = {
      int(round(fraction * total_steps)): config.lr_step_factor
      for fraction in config.lr_step_fractions
    }
    base = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if config.get("lr_rewind_epoch") is None:
    return base
  _, end = pruning_window(config, steps_per_epoch)
  rewind = min(int(round(config.lr_rewind_epoch * steps_per_epoch)), end + 1)
  return dp.rewind_learning_rate(
    base, last_update_step=end, rewind_step=rewind, total_steps=total_steps
  )


def make_inner_optimizer(config: ml_collections.ConfigDict, learning_rate: optax.Schedule):
  if config.optimizer == "adam":
    if config.weight_decay:
      return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    return optax.adam(learning_rate)
  sgd = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
  if config.weight_decay:
    # Coupled L2 decay, as in the usual CIFAR recipes; pruned weights are 0, so
    # it adds nothing to them.
    return optax.chain(optax.add_decayed_weights(config.weight_decay), sgd)
  return sgd


def pruning_window(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, int]:
  """``(begin_step, end_step)`` of the pruning schedule, from epochs."""
  begin = int(round(config.prune_begin_epoch * steps_per_epoch))
  end = int(round(config.prune_end_epoch * steps_per_epoch))
  total = config.num_epochs * steps_per_epoch
  # The step count of the last update is total - 1; a window that ends with the
  # training must prune no later than that.
  end = min(end, total - 1)
  begin = min(begin, end)
  return begin, end


def han_pruning_steps(config: ml_collections.ConfigDict, begin: int, end: int) -> list[int]:
  """``han_cycles`` pruning steps spread evenly over ``[begin, end]`` (the last at ``end``)."""
  if config.han_cycles == 1:
    return [end]
  steps = np.linspace(begin, end, config.han_cycles).round().astype(int)
  return sorted(set(int(s) for s in steps))


def pruning_step_set(tx: optax.GradientTransformation) -> frozenset[int]:
  """Step counts at which the method may change its masks: the transformation's own
  ``pruning_steps`` (empty for ``dense``).

  Every other step runs a train step compiled with ``skip_mask_update=True``,
  which has no conditional (on a GPU a conditional stalls the step on the host).
  """
  return frozenset(getattr(tx, "pruning_steps", ()))


def make_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int, params: PyTree
) -> optax.GradientTransformation:
  """The inner optimizer wrapped by the method's pruning transformation.

  Raises:
    ValueError: from the pruning transformation, e.g. a schedule that drop away
      cannot follow with these probabilities.
  """
  inner = make_inner_optimizer(config, make_learning_rate(config, steps_per_epoch))
  if config.method == "dense":
    return inner
  begin, end = pruning_window(config, steps_per_epoch)
  if config.method in DYNAMIC_SPARSE_METHODS:
    dynamic_sparse = dp.rigl if config.method == "rigl" else dp.set_pruning
    return dynamic_sparse(
      inner,
      target_sparsity=config.target_sparsity,
      end_step=end,
      update_every=config.update_every,
      drop_fraction=config.drop_fraction,
      drop_fraction_decay=config.drop_fraction_decay,
      sparsity_distribution=config.sparsity_distribution,
      seed=config.seed,
      packed_masks=config.packed_masks,
    )
  if config.method == "han":
    if config.han_quality is not None:
      return dp.han_pruning(
        inner,
        pruning_steps=han_pruning_steps(config, begin, end),
        quality=config.han_quality,
        packed_masks=config.packed_masks,
      )
    if config.sparsity_distribution == "erk":
      shapes = {
        name: np.shape(leaf)
        for name, leaf in zip(masks_lib.leaf_paths(params), jax.tree.leaves(params))
        if dp.default_prunable(name, leaf)
      }
      rates = dp.erk_sparsities(shapes, config.target_sparsity)
    else:
      rates = {"*": config.target_sparsity}
    return dp.han_pruning(
      inner,
      pruning_steps=han_pruning_steps(config, begin, end),
      layer_rates=rates,
      packed_masks=config.packed_masks,
    )
  common = dict(
    target_sparsity=config.target_sparsity,
    begin_step=begin,
    end_step=end,
    update_every=config.update_every,
    seed=config.seed,
    sparsity_distribution=config.sparsity_distribution,
    packed_masks=config.packed_masks,
  )
  away, back = config.drop_away_prob, config.drop_back_prob
  if config.drop_anneal == "cosine":
    away = dp.cosine_anneal(away, 1.0, begin, end)
    back = dp.cosine_anneal(back, 0.0, begin, end)
  if config.method in IMPORTANCE_METHODS:
    common["importance"] = config.importance
  if config.method == "drop":
    return dp.drop_pruning(
      inner,
      drop_away_prob=away,
      drop_back_prob=back,
      drop_back_scale=config.drop_back_scale,
      regrow_init=config.regrow_init,
      drop_away=config.drop_away,
      drop_back=config.drop_back,
      temperature=config.temperature,
      **common,
    )
  if config.method == "gradual":
    return dp.gradual_magnitude_pruning(inner, **common)
  if config.method == "drop_away_only":
    return dp.drop_away_only(inner, drop_away_prob=away, **common)
  if config.method == "drop_back_only":
    return dp.drop_back_only(
      inner, drop_back_prob=back, drop_back_scale=config.drop_back_scale, **common
    )
  return dp.random_pruning(inner, **common)


def init_variables(config: ml_collections.ConfigDict, model, image_shape) -> tuple[PyTree, PyTree]:
  """``(params, batch_stats)`` of a fresh model; ``batch_stats`` is ``{}`` without batch norm."""
  variables = jax.jit(functools.partial(model.init, train=False))(
    jax.random.PRNGKey(config.seed), jnp.zeros((1, *image_shape), jnp.float32)
  )
  return variables["params"], variables.get("batch_stats", {})


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def _has_pruning(config) -> bool:
  return config.method != "dense"


def _train_step_fn(
  model, tx, has_pruning: bool, skip_mask_update: bool, mean: Any, distill: Any = None
):
  """The train step ``(state, images, labels[, teacher_logits]) -> (state, metrics)`` of
  one replica; ``mean`` averages a tree over the replicas (``pmean`` under pmap, the
  identity under jit, whose step sees the whole batch). ``distill``: ``(weight,
  temperature)`` of the distillation loss, whose teacher logits come with the batch."""
  extra = {"skip_mask_update": skip_mask_update} if has_pruning else {}

  def train_step(state: TrainState, images, labels, teacher_logits=None):
    def loss_fn(params):
      variables = {"params": params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
        logits, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
        batch_stats = updated["batch_stats"]
      else:
        logits = model.apply(variables, images, train=True)
        batch_stats = state.batch_stats
      if distill is None:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      else:
        loss = distill_lib.distillation_loss(logits, labels, teacher_logits, *distill)
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = mean(grads)
    # Every replica must keep the same running statistics.
    batch_stats = mean(batch_stats)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    if has_pruning:
      # p + (-p) is exactly 0 for a finite weight only: after a divergence a pruned
      # NaN or inf weight would stay so. Selecting keeps the pruned weights at 0 always
      # (one select, fused into the update; finite runs are bit for bit the same).
      params = dp.apply_masks(params, dp.get_masks(opt_state))
    metrics = {
      "loss": loss,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    }
    if has_pruning:
      before = skeleton.find_state(state.opt_state)
      stats = dp.get_stats(opt_state)
      # Only a pruning step taken now counts; the stats persist between steps.
      metrics["shortfall"] = jnp.where(stats.last_step == before.count, stats.shortfall, 0.0)
    metrics = mean(metrics)
    return TrainState(params, batch_stats, opt_state), metrics

  return train_step


def _eval_step_fn(model, total: Any):
  """The eval step ``(params, batch_stats, images, labels, weights) -> sums``; ``total``
  sums a tree over the replicas."""

  def eval_step(params, batch_stats, images, labels, weights):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    logits = model.apply(variables, images, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    sums = {
      "loss": jnp.sum(losses * weights),
      "correct": jnp.sum(correct * weights),
      "count": jnp.sum(weights),
    }
    return total(sums)

  return eval_step


class PmapPlacement:
  """``parallel="pmap"``: the state replicated on the local devices (leading axis =
  device), batches split per device, ``jax.pmap`` steps.

  The placements share the loop; they differ only in how the state and the batches
  are put on the devices and read back, and in how the step is compiled.
  """

  def __init__(self, devices: Optional[list]):
    self.devices = devices

  def restore_target(self, state: TrainState) -> TrainState:
    """What a checkpoint restores into: the host state (replicated after)."""
    return state

  def put_state(self, state: TrainState) -> TrainState:
    return flax.jax_utils.replicate(state, self.devices)

  def get_state(self, state: TrainState) -> TrainState:
    return unreplicate(state)

  def put_batch(self, *arrays: np.ndarray) -> tuple:
    """Arrays of shape ``(num_local_devices, per_device, ...)`` as the step takes them."""
    return arrays

  def scalar(self, value) -> float:
    """A reduced metric of a step, fetched to the host, as a float."""
    return float(value[0])

  def train_step(
    self, model, tx, has_pruning: bool, skip_mask_update: bool = False, distill: Any = None
  ):
    step = _train_step_fn(
      model,
      tx,
      has_pruning,
      skip_mask_update,
      lambda tree: jax.lax.pmean(tree, "batch"),
      distill,
    )
    # The state is donated: its buffers are reused for the new state, and state that a
    # step passes through unchanged (the masks between pruning steps) is not copied.
    return jax.pmap(step, axis_name="batch", devices=self.devices, donate_argnums=(0,))

  def eval_step(self, model):
    step = _eval_step_fn(model, lambda tree: jax.lax.psum(tree, "batch"))
    return jax.pmap(step, axis_name="batch", devices=self.devices)


def fsdp_spec(shape: tuple[int, ...], axis: str, size: int) -> P:
  """How FSDP shards an array over mesh axis ``axis`` of ``size`` devices: its largest
  dimension divisible by ``size`` (the first of equals); replicated if none is."""
  dims = [d for d in range(len(shape)) if shape[d] % size == 0 and shape[d] >= size]
  if size == 1 or not dims:
    return P()
  dim = max(dims, key=lambda d: (shape[d], -d))
  return P(*(axis if d == dim else None for d in range(len(shape))))


def annotated_state_sharding(mesh: jax.sharding.Mesh, state, param_specs) -> Any:
  """Shardings of a train state on ``mesh`` that follow the params' annotations.

  A parameter takes its ``PartitionSpec``, with the axis names that ``mesh`` lacks
  replicated (so one annotated model runs on a 1-device mesh and on ``(data, model)``);
  an optimizer-state leaf (moments, masks, a stash) takes the sharding of the parameter
  whose key path its own ends with (the longest such), if it has that parameter's
  shape; every other leaf (counts, scalar mask markers, RNG keys) is replicated.

  Raises:
    ValueError: an annotated dimension that the mesh axis does not divide, named.
  """
  replicated = NamedSharding(mesh, P())
  by_path = {}
  for (path, leaf), spec in zip(
    jax.tree_util.tree_flatten_with_path(state.params)[0],
    jax.tree.leaves(param_specs, is_leaf=_is_spec),
  ):
    names = tuple(n if n in mesh.shape else None for n in spec)
    for dim, name in zip(np.shape(leaf), names):
      if name is not None and dim % mesh.shape[name]:
        raise ValueError(
          f"parameter {masks_lib.path_to_str(path)} of shape {np.shape(leaf)} is annotated "
          f"{spec}, but mesh axis {name!r} of size {mesh.shape[name]} does not divide {dim}."
        )
    by_path[_path_key(path)] = (np.shape(leaf), NamedSharding(mesh, P(*names)))

  def sharding(path, leaf):
    key = _path_key(path)
    for start in range(len(key)):  # the longest parameter path that the leaf's ends with
      hit = by_path.get(key[start:])
      if hit is not None:
        return hit[1] if np.shape(leaf) == hit[0] else replicated
    return replicated

  return TrainState(
    params=jax.tree_util.tree_map_with_path(sharding, state.params),
    batch_stats=jax.tree.map(lambda _: replicated, state.batch_stats),
    opt_state=jax.tree_util.tree_map_with_path(sharding, state.opt_state),
  )


def _path_key(path) -> tuple:
  """A key path as plain names, whatever the containers (dict key, attribute, index)."""
  return tuple(str(getattr(e, "key", getattr(e, "name", getattr(e, "idx", e)))) for e in path)


class JitPlacement:
  """``parallel="jit"``: one global array per state leaf on a mesh of all devices of all
  processes (``config.mesh_shape`` / ``mesh_axes``), ``jax.jit`` steps.

  The batch is sharded over every mesh axis; the params and the optimizer state are
  replicated, or with ``config.fsdp_axis`` sharded over that axis (:func:`fsdp_spec`,
  by shape, so a mask takes its parameter's sharding), or, for a model whose parameters
  carry sharding annotations (``param_specs``, e.g. the ViT), placed by them
  (:func:`annotated_state_sharding`). The mesh axes are ``AxisType.Auto``: XLA places
  the collectives.
  """

  def __init__(
    self, config: ml_collections.ConfigDict, devices: Optional[list], state, param_specs=None
  ):
    devices = devices if devices is not None else jax.devices()
    names = tuple(config.mesh_axes)
    self.mesh = jax.sharding.Mesh(
      np.asarray(devices).reshape(mesh_shape(config)),
      names,
      axis_types=(jax.sharding.AxisType.Auto,) * len(names),
    )
    self.batch_sharding = NamedSharding(self.mesh, P(names))
    self.replicated = NamedSharding(self.mesh, P())
    fsdp = None if _is_unset(config.fsdp_axis) else config.fsdp_axis

    def sharding(leaf):
      if fsdp is None:
        return self.replicated
      return NamedSharding(self.mesh, fsdp_spec(np.shape(leaf), fsdp, self.mesh.shape[fsdp]))

    if param_specs is not None:
      self.state_sharding = annotated_state_sharding(self.mesh, state, param_specs)
    else:
      self.state_sharding = jax.tree.map(sharding, state)

  def restore_target(self, state: TrainState) -> TrainState:
    """What a checkpoint restores into: every leaf's shape, dtype and sharding on the
    mesh, so that orbax reads each device's shards directly onto it."""
    return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(
        np.shape(leaf), np.asarray(leaf).dtype, sharding=sharding
      ),
      state,
      self.state_sharding,
    )

  def put_state(self, state: TrainState) -> TrainState:
    def put(leaf, sharding):
      if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        # Restored onto the mesh already: a copy on the devices, as the step donates
        # (consumes) the state it is given.
        return jax.device_put(leaf, sharding, may_alias=False)
      leaf = np.asarray(leaf)
      return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(put, state, self.state_sharding)

  def get_state(self, state: TrainState) -> TrainState:
    return jax.tree.map(_to_host, state)

  def put_batch(self, *arrays: np.ndarray) -> tuple:
    """This process's ``(num_local_devices, per_device, ...)`` arrays as global arrays."""
    return tuple(
      jax.make_array_from_process_local_data(
        self.batch_sharding, np.reshape(a, (-1, *np.shape(a)[2:]))
      )
      for a in arrays
    )

  def scalar(self, value) -> float:
    return float(value)

  def train_step(
    self, model, tx, has_pruning: bool, skip_mask_update: bool = False, distill: Any = None
  ):
    step = _train_step_fn(model, tx, has_pruning, skip_mask_update, lambda tree: tree, distill)
    batch_arrays = 2 if distill is None else 3  # images, labels[, teacher logits]
    return jax.jit(
      step,
      in_shardings=(self.state_sharding, *[self.batch_sharding] * batch_arrays),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=(0,),
    )

  def eval_step(self, model):
    step = _eval_step_fn(model, lambda tree: tree)
    state = self.state_sharding
    batch = self.batch_sharding
    return jax.jit(
      step,
      in_shardings=(state.params, state.batch_stats, batch, batch, batch),
      out_shardings=self.replicated,
    )


def _to_host(x) -> np.ndarray:
  """A global array as a host NumPy array (a copy), gathered over the processes."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.array(multihost_utils.process_allgather(x, tiled=True))
  return np.array(x)


def make_placement(
  config: ml_collections.ConfigDict, devices: Optional[list], state, param_specs=None
):
  """The placement of ``config.parallel`` (``state``: a host state, for its shapes;
  ``param_specs``: the model's sharding annotations, which ``jit`` follows)."""
  if config.parallel == "jit":
    return JitPlacement(config, devices, state, param_specs)
  return PmapPlacement(devices)


def evaluate(
  eval_step,
  state: TrainState,
  config,
  data: Data,
  num_local_devices: int,
  placement: Any = None,
) -> dict:
  """Mean loss and error on the validation split (``val_*``, only if there is one) and
  on the test split (``test_*``)."""
  placement = placement or PmapPlacement(None)
  splits = [("test", data.test_images, data.test_labels)]
  if len(data.val_images):
    splits.insert(0, ("val", data.val_images, data.val_labels))
  results = {}
  for name, images, labels in splits:
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch in eval_batches(config, images, labels, num_local_devices):
      sums = jax.device_get(
        eval_step(state.params, state.batch_stats, *placement.put_batch(*batch))
      )
      for key in totals:
        totals[key] += placement.scalar(sums[key])
    count = max(totals["count"], 1.0)
    results[f"{name}_loss"] = totals["loss"] / count
    results[f"{name}_error"] = 1.0 - totals["correct"] / count
  return results


# ---------------------------------------------------------------------------
# Host-side views of the state
# ---------------------------------------------------------------------------


def unreplicate(tree: PyTree) -> PyTree:
  """Replica 0 of a pmapped tree as host NumPy arrays (a copy)."""
  return jax.tree.map(lambda x: np.array(x[0]), tree)


def masks_of(config, state: TrainState) -> PyTree:
  """The masks of an unreplicated state; all-``True`` masks for the dense method."""
  if _has_pruning(config):
    return dp.get_masks(state.opt_state)
  return dp.init_masks(state.params)


def drop_totals(config, state: TrainState) -> tuple[int, int]:
  if not _has_pruning(config):
    return 0, 0
  stats = dp.get_stats(state.opt_state)
  return int(stats.total_dropped_away), int(stats.total_dropped_back)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _is_writer() -> bool:
  return jax.process_index() == 0


def _sync(name: str) -> None:
  """A barrier over the processes of a multi-host run (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def _json_safe(value: Any) -> Any:
  """``value`` with every non-finite float replaced by ``None`` (JSON ``null``)."""
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  return value


def dumps(value: Any, **kwargs) -> str:
  """Strict JSON (RFC 8259): a non-finite float is written as ``null``, never ``NaN``."""
  return json.dumps(_json_safe(value), allow_nan=False, default=str, **kwargs)


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def _append_metrics(workdir: Path, line: dict) -> None:
  with open(workdir / METRICS_FILE, "a") as f:
    f.write(dumps(line) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _read_json(path: Path) -> Optional[dict]:
  """A JSON file of the run folder, or ``None`` if it does not exist."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise RunFolderError(
      f"cannot read {path} ({error}); repair or remove it, or start over with --fresh."
    ) from error


def read_metrics_for_resume(workdir: Path) -> list[dict]:
  """The lines of ``metrics.jsonl``; a torn last line (a write cut short by a crash) is
  dropped with a warning.

  Raises:
    RunFolderError: for an unreadable line that is not the last one.
  """
  path = workdir / METRICS_FILE
  if not path.exists():
    return []
  lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
  parsed = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      parsed.append(json.loads(line))
    except ValueError as error:
      if any(rest.strip() for rest in lines[number:]):
        raise RunFolderError(
          f"{path} line {number} is not JSON ({error}); remove that line or start over "
          "with --fresh."
        ) from error
      logging.warning(
        "%s: dropped its torn last line %r (a write cut short); the epochs "
        "after the checkpoint are redone.",
        path,
        line[:40],
      )
  return parsed


def _truncate_metrics(workdir: Path, last_epoch: int) -> None:
  """Drops lines of epochs after the checkpoint we resume from (they will be redone)."""
  lines = [line for line in read_metrics_for_resume(workdir) if line["epoch"] <= last_epoch]
  _write_atomic(workdir / METRICS_FILE, "".join(dumps(line) + "\n" for line in lines))


def _saved_config(workdir: Path) -> Optional[dict]:
  """The config a run folder was started with; a field its config.json lacks takes the
  value the run used: its default, or :data:`MISSING_FIELD_VALUES`. ``None`` for a new
  folder."""
  saved = _read_json(workdir / CONFIG_FILE)
  if saved is None:
    return None
  from experiments.configs import default as default_config  # pylint: disable=g-import-not-at-top

  return {**default_config.get_config().to_dict(), **MISSING_FIELD_VALUES, **saved}


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """``(affecting, neutral)``: the fields of ``config`` that differ from a saved config,
  as ``{field: (old, new)}``, split into those that change results and those in
  :data:`RUN_CONTROL_FIELDS`. Fields no longer in the configs are ignored."""
  new = config.to_dict()
  affecting, neutral = {}, {}
  for key in sorted(new):
    old_value, new_value = saved.get(key), new[key]
    if json.dumps(old_value, default=str) == json.dumps(new_value, default=str):
      continue
    (neutral if key in RUN_CONTROL_FIELDS else affecting)[key] = (old_value, new_value)
  return affecting, neutral


def check_config_change(workdir: Path, config: ml_collections.ConfigDict) -> dict:
  """Refuses to continue a run folder with a config that changes results; reads only.

  Returns:
    The changed result-neutral fields, ``{field: (old, new)}`` (``{}`` for a new folder).

  Raises:
    ConfigError: one line naming every changed field with its old and new value.
  """
  saved = _saved_config(workdir)
  if saved is None:
    return {}
  affecting, neutral = config_changes(saved, config)
  for field in STATE_LAYOUT_FIELDS:
    if field in affecting:
      before = affecting[field][0]
      raise ConfigError(
        f"{field}={config[field]!r} but the checkpoints in {workdir} were written with "
        f"{field}={before!r}; resume with --config.{field}={before!r} (results are "
        "identical either way), use a new workdir, or start over with --fresh."
      )
  if affecting:
    changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in affecting.items())
    raise ConfigError(
      f"{workdir} holds a run started with another config, and these fields change its "
      f"results: {changes}. Rerun with the old values to resume, use another workdir, "
      "or start over with --fresh (moves the old folder aside)."
    )
  return neutral


def _check_devices(workdir: Path, run_info: Optional[dict], device_count: int) -> None:
  """Refuses to continue a run on another number of devices (not bitwise the same)."""
  before = (run_info or {}).get("device_count")
  if before is not None and before != device_count:
    raise ConfigError(
      f"{workdir} was trained data-parallel on {before} device(s) and this run would use "
      f"{device_count}; the results differ in the last bits with the device count, so it "
      f"cannot continue: use {before} device(s) (num_devices, host_devices), another "
      "workdir, or start over with --fresh."
    )


def _write_run_files(
  workdir: Path,
  config,
  run_info: Optional[dict],
  device_count: int,
  start_step: int,
  neutral_changes: dict,
) -> dict:
  """Writes ``config.json`` (first start only) and adds this start to ``run.json``."""
  if not (workdir / CONFIG_FILE).exists():
    _write_atomic(workdir / CONFIG_FILE, dumps(config.to_dict(), indent=2))
  info = run_info or {
    "device_count": device_count,
    "process_count": jax.process_count(),
    "starts": [],
  }
  info["starts"].append(
    {
      "step": start_step,
      "changed": {key: [old, new] for key, (old, new) in neutral_changes.items()},
    }
  )
  _write_atomic(workdir / RUN_FILE, dumps(info, indent=2))
  return info


def _move_aside(path: Path, destination: Path) -> Path:
  """Renames ``path`` to ``destination``, or ``destination.N`` if that exists."""
  target = destination
  for n in itertools.count(1):
    if not target.exists():
      break
    target = destination.with_name(f"{destination.name}.{n}")
  target.parent.mkdir(parents=True, exist_ok=True)
  os.replace(path, target)
  return target


def _check_writable(folder: Path) -> None:
  """Creates ``folder`` if needed and writes a file into it, or raises RunFolderError."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".writable-{jax.process_index()}-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as error:
    raise RunFolderError(
      f"cannot write to {folder}: {error.strerror or error}; make it writable or use "
      "another workdir."
    ) from error


def checkpoint_manager(workdir: Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    (workdir / CHECKPOINT_DIR).resolve(),
    options=ocp.CheckpointManagerOptions(max_to_keep=CHECKPOINTS_TO_KEEP, create=True),
  )


def _checkpoint_item(state: TrainState, step: int, epoch: int, partial) -> dict:
  """What a checkpoint holds: the state after ``step`` global steps, the finished epochs,
  and the running sums of the unfinished epoch (:data:`PARTIAL_FIELDS`)."""
  return {
    "state": state,
    "step": np.array(step, np.int64),
    "epoch": np.array(epoch, np.int64),
    "partial": np.asarray(partial, np.float64),
  }


def _first_line(error: BaseException, limit: int = 160) -> str:
  text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _restore_latest(
  manager: ocp.CheckpointManager, workdir: Path, template: dict
) -> tuple[Optional[dict], ocp.CheckpointManager]:
  """The newest checkpoint that restores into ``template``, newest first.

  A checkpoint that does not restore at all (truncated or missing files) is moved to
  ``workdir/broken_checkpoints/`` and the previous one is tried; one warning line
  says so. A checkpoint that restores but into another structure (written by another
  version of the code) is an error: nothing is moved.

  Returns:
    ``(checkpoint or None, manager)``; the manager is a new one if any was moved.
  """
  broken = []
  restored = None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(template))
      break
    except Exception as error:  # pylint: disable=broad-except  # orbax raises many types
      try:
        manager.restore(step, args=ocp.args.StandardRestore())
      except Exception:  # pylint: disable=broad-except
        broken.append((step, error))
        continue
      raise RunFolderError(
        f"checkpoint {step} in {workdir / CHECKPOINT_DIR} is readable but holds another "
        f"state structure than this code builds ({_first_line(error)}); finish the run "
        "with the version that started it, or start over with --fresh."
      ) from error
  if not broken:
    return restored, manager
  manager.close()
  moved = []
  if _is_writer():
    for step, _ in broken:
      moved.append(
        str(
          _move_aside(
            workdir / CHECKPOINT_DIR / str(step), workdir / BROKEN_CHECKPOINT_DIR / str(step)
          )
        )
      )
  _sync("broken-checkpoints")
  fallback = (
    f"resuming from checkpoint {int(restored['step'])}"
    if restored is not None
    else "no checkpoint restores, starting from step 0"
  )
  logging.warning(
    "checkpoint(s) %s in %s do not restore (%s); moved to %s; %s.",
    [step for step, _ in broken],
    workdir / CHECKPOINT_DIR,
    _first_line(broken[0][1]),
    moved or workdir / BROKEN_CHECKPOINT_DIR,
    fallback,
  )
  return restored, checkpoint_manager(workdir)


def restore_checkpoint(workdir: str | Path, target: Optional[PyTree] = None) -> Optional[dict]:
  """The latest checkpoint of a run folder, or ``None`` if there is none.

  Args:
    workdir: the run folder.
    target: a tree of the saved structure (``{"state": TrainState, "step": ...,
      "epoch": ..., "partial": ...}``) to restore into; without it the raw tree comes
      back (named tuples as dicts).

  Returns:
    ``{"state": ..., "step": int, "epoch": int, "partial": ...}`` with NumPy leaves:
    the state after ``step`` global steps, of which ``epoch`` whole epochs.
  """
  manager = checkpoint_manager(Path(workdir))
  try:
    step = manager.latest_step()
    if step is None:
      return None
    args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    return manager.restore(step, args=args)
  finally:
    manager.close()


def _check_finite_state(state: TrainState, step: int, workdir: Path, last_saved: int) -> None:
  """Raises DivergedError if a parameter or batch statistic is not finite."""
  for leaf in jax.tree.leaves((state.params, state.batch_stats)):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.all(np.isfinite(leaf)):
      raise DivergedError(
        f"training diverged: non-finite parameters after step {step}; "
        f"{_kept_checkpoint(workdir, last_saved)}",
        step,
      )


def _kept_checkpoint(workdir: Path, last_saved: int) -> str:
  if last_saved:
    return (
      f"the last good checkpoint (step {last_saved}) is kept in "
      f"{workdir / CHECKPOINT_DIR}; lower the learning rate and start over with --fresh."
    )
  return "no checkpoint was written; lower the learning rate and start over with --fresh."


class _StopSignals:
  """While entered, SIGTERM and SIGINT (Ctrl-C) set ``signum`` instead of stopping the
  process: the loop saves the current step and raises :class:`Preempted`.

  Entered before anything compiles: a ``KeyboardInterrupt`` raised while XLA compiles
  can crash the process. Only installed in the main thread of a single-process run;
  elsewhere the signals keep their default action (with several processes, all would
  have to stop at one step).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return "Ctrl-C (SIGINT)" if self.signum == signal.SIGINT else "SIGTERM"

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      print(
        f"\n{signal.Signals(signum).name} received: stopping at the next step, after "
        "saving a checkpoint.",
        file=sys.stderr,
        flush=True,
      )
    self.signum = signum

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


class _WorkdirLock:
  """An exclusive lock on a run folder (``flock`` on ``<workdir>/run.lock``), held for
  the whole run, so that a second process on the same folder is refused instead of
  writing over the first one's checkpoints and metrics. The kernel releases it when
  the process ends, however it ends: a killed run leaves no stale lock."""

  FILE = "run.lock"

  def __init__(self, workdir: Path):
    self.workdir = workdir
    self._file = None

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top (POSIX only)

    self.workdir.mkdir(parents=True, exist_ok=True)
    handle = open(self.workdir / self.FILE, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise RunFolderError(
        f"{self.workdir} is in use by {holder}; wait for it to finish, stop it, or use "
        "another --workdir."
      ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    self._file = handle

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # closing the descriptor releases the lock
      self._file = None


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def initialize_multihost(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` when ``config.multihost`` (once per process)."""
  if not config.multihost or jax.distributed.is_initialized():
    return
  kwargs = {}
  if not _is_unset(config.coordinator_address):
    kwargs = dict(
      coordinator_address=config.coordinator_address,
      num_processes=config.num_processes,
      process_id=config.process_id,
    )
  # Without arguments JAX detects the cluster (Cloud TPU pods, SLURM, ...).
  jax.distributed.initialize(**kwargs)


def select_devices(config: ml_collections.ConfigDict) -> Optional[list]:
  """The local devices the steps run on; ``None`` means all local devices (and with
  ``parallel="jit"`` all devices of all processes)."""
  if config.num_devices is None:
    return None
  return jax.local_devices()[: config.num_devices]


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | Path, *, fresh: bool = False
) -> dict:
  """Trains, evaluates every epoch, checkpoints, and writes the run's reports.

  Args:
    config: see ``experiments/configs/default.py`` for the fields.
    workdir: run folder; created if needed. If it holds a checkpoint, training
      resumes from the newest one that restores.
    fresh: start over: an existing ``workdir`` is first renamed to
      ``<workdir>.old`` (``.old.1``, ... if taken), never deleted.

  Returns:
    The summary dict also written to ``workdir/summary.json``; if the run stopped
    early (``stop_after_epochs`` / ``stop_after_steps``) a dict with
    ``"stopped": True`` and the last finished epoch instead.

  Raises:
    ConfigError: (a ``ValueError``) for an invalid config, or one that differs from
      the run folder's in a field that changes results, or another device count;
      before any file is written.
    experiments.data.DatasetError: if the dataset is missing or corrupt (before any
      file is written).
    RunFolderError: the run folder is not writable (before training), holds an
      unreadable file, or is in use by another run.
    DivergedError: the train loss or a parameter became non-finite; the checkpoints
      written up to then are kept.
    Preempted: SIGTERM or SIGINT (Ctrl-C) arrived; a checkpoint of the current step
      was saved first.
  """
  run_start = time.perf_counter()
  initialize_multihost(config)
  # The signal handlers go in before anything compiles; the lock and the other
  # resources of the run are released on every way out.
  with _StopSignals() as stop, contextlib.ExitStack() as cleanup:
    return _train_and_evaluate(config, Path(workdir), fresh, stop, cleanup, run_start)


def _train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: Path,
  fresh: bool,
  stop: _StopSignals,
  cleanup: contextlib.ExitStack,
  run_start: float,
) -> dict:
  """The body of :func:`train_and_evaluate`."""
  validate_config(config)
  device_count = _global_device_count(config)
  neutral_changes, run_info = {}, None
  if not fresh:
    neutral_changes = check_config_change(workdir, config)
    run_info = _read_json(workdir / RUN_FILE)
    _check_devices(workdir, run_info, device_count)
  devices = select_devices(config)
  num_local_devices = len(devices) if devices is not None else jax.local_device_count()

  data = load_data(config)
  steps_per_epoch = len(data.train_images) // config.batch_size
  total_steps = config.num_epochs * steps_per_epoch
  model = make_model(config, data.num_classes)
  params, batch_stats = init_variables(config, model, data.image_shape)
  try:
    tx = make_optimizer(config, steps_per_epoch, params)
    state = TrainState(params, batch_stats, tx.init(params))
  except ValueError as error:  # the library's checks of the method's arguments
    raise ConfigError(str(error)) from error
  state = jax.tree.map(np.asarray, state)
  distill, teacher = None, None
  if config.teacher_workdir is not None:
    distill = (float(config.distill_weight), float(config.distill_temperature))
    try:
      teacher = distill_lib.load_teacher(config, make_model, data.num_classes)
    except ValueError as error:
      raise ConfigError(str(error)) from error

  # Everything is checked: from here on files are written.
  if _is_writer():
    if fresh and workdir.exists():
      old_lock = _WorkdirLock(workdir)
      old_lock.acquire()  # never move a folder out from under a run that is using it
      moved = _move_aside(workdir, workdir.with_name(workdir.name + ".old"))
      old_lock.release()
      logging.warning("Starting over: moved the old %s to %s.", workdir, moved)
    _check_writable(workdir)
  _sync("workdir")
  _check_writable(workdir / CHECKPOINT_DIR)
  if _is_writer():  # held from here to the end of the run; refuses a second run
    lock = _WorkdirLock(workdir)
    lock.acquire()
    cleanup.callback(lock.release)

  manager = checkpoint_manager(workdir)
  partial = np.zeros(len(PARTIAL_FIELDS), np.float64)
  # How the state and batches live on the devices and how the steps compile
  # (config.parallel); everything else below is shared by pmap and jit. A checkpoint
  # restores straight into the placement's layout: with jit, each device reads only
  # its own shards of the state, nothing is assembled on the host.
  placement = make_placement(config, devices, state, getattr(model, "param_specs", lambda: None)())
  restored, manager = _restore_latest(
    manager, workdir, _checkpoint_item(placement.restore_target(state), 0, 0, partial)
  )
  start_step = 0
  if restored is not None:
    state = restored["state"]
    start_step = int(restored["step"])
    partial = restored["partial"]
    logging.info(
      "Resuming %s from the checkpoint at step %d (epoch %d).",
      workdir,
      start_step,
      start_step // steps_per_epoch,
    )
  start_epoch, start_offset = divmod(start_step, steps_per_epoch)
  if _is_writer():
    run_info = _write_run_files(
      workdir, config, run_info, device_count, start_step, neutral_changes
    )
    _truncate_metrics(workdir, start_epoch)

  learning_rate = make_learning_rate(config, steps_per_epoch)
  replicated = placement.put_state(state)
  host_state = state

  has_pruning = _has_pruning(config)
  pruning_step_numbers = pruning_step_set(tx)

  def batch_arrays(images, labels) -> tuple:
    """The step's batch arrays: with a teacher, its logits for these images too."""
    arrays = (images, labels) if teacher is None else (images, labels, teacher(images))
    return placement.put_batch(*arrays)

  mask_step = placement.train_step(model, tx, has_pruning, distill=distill)
  # Dense training has no conditional to skip: one program serves every step.
  frozen_step = (
    placement.train_step(model, tx, has_pruning, skip_mask_update=True, distill=distill)
    if has_pruning
    else mask_step
  )
  eval_step = placement.eval_step(model)
  # Compile before the loop so that epoch times measure training only, with calls
  # whose results are thrown away (every later batch has the same shapes). Two
  # train calls: the replicated state's sharding names another mesh axis than a
  # pmap output's, and each variant compiles once. Not .lower().compile(): with
  # several processes a compiled pmap expects global shapes, while a pmap call
  # takes each process's local arrays.
  compile_start = time.perf_counter()
  if start_step < total_steps:
    sample = batch_arrays(*next(train_batches(config, data, 1, num_local_devices)))
    for train_step in dict.fromkeys([mask_step, frozen_step]):  # each distinct program once
      # A fresh replica: the step donates (consumes) the state it is given.
      warm, _ = train_step(placement.put_state(state), *sample)
      warm, _ = jax.block_until_ready(train_step(warm, *sample))
    jax.block_until_ready(
      eval_step(
        warm.params,
        warm.batch_stats,
        *placement.put_batch(
          *next(eval_batches(config, data.test_images, data.test_labels, num_local_devices))
        ),
      )
    )
    del warm, sample
  compile_time = time.perf_counter() - compile_start

  last_saved = start_step

  def save(step: int, epoch: int, partial_sums, host: Optional[TrainState] = None) -> None:
    """Checkpoints the state after ``step`` steps (``host``: it, already on the host)."""
    nonlocal last_saved
    if host is None:
      host = placement.get_state(replicated)
      _check_finite_state(host, step, workdir, last_saved)
    manager.save(
      step, args=ocp.args.StandardSave(_checkpoint_item(host, step, epoch, partial_sums))
    )
    last_saved = step

  stopped = False
  try:
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
      epoch_start = time.perf_counter()
      skip = start_offset if epoch == start_epoch + 1 else 0
      if skip:  # resuming inside this epoch: its running sums come from the checkpoint
        loss_sum, accuracy_sum, max_shortfall, away_before, back_before, time_before = (
          float(x) for x in partial
        )
      else:
        loss_sum = accuracy_sum = max_shortfall = time_before = 0.0
        away_before, back_before = drop_totals(config, host_state)

      def partial_sums():
        return [
          loss_sum,
          accuracy_sum,
          max_shortfall,
          away_before,
          back_before,
          time_before + time.perf_counter() - epoch_start,
        ]

      step = (epoch - 1) * steps_per_epoch + skip
      bar = tqdm.tqdm(
        total=steps_per_epoch,
        initial=skip,
        desc=f"epoch {epoch}/{config.num_epochs}",
        unit="step",
        # Bars only on a terminal: in a log (make demo > log, CI, a notebook's captured
        # output) every refresh would be a line; the epoch's log line says it all there.
        disable=not (config.progress and _is_writer() and sys.stderr.isatty()),
        leave=False,
        dynamic_ncols=True,
      )
      # The batches of an epoch are a pure function of (seed, epoch): a resume
      # inside it regenerates them and skips those already trained on.
      batches = itertools.islice(train_batches(config, data, epoch, num_local_devices), skip, None)
      with bar:
        for images, labels in batches:
          if config.stop_after_steps is not None and step >= config.stop_after_steps:
            raise StopTraining()
          if stop.requested:
            if step == 0:
              raise Preempted(
                f"stopped by {stop.name} before the first step (nothing to "
                "save); rerun the same command to start.",
                step,
                stop.signum,
              )
            if step != last_saved:
              save(step, epoch - 1, partial_sums())
            manager.wait_until_finished()
            raise Preempted(
              f"stopped by {stop.name}: saved a checkpoint at step {step} (epoch {epoch}, "
              f"step {step - (epoch - 1) * steps_per_epoch} of {steps_per_epoch}); "
              "rerun the same command to resume.",
              step,
              stop.signum,
            )
          train_step = mask_step if step in pruning_step_numbers else frozen_step
          replicated, metrics = train_step(replicated, *batch_arrays(images, labels))
          # Fetching the metrics blocks on this step: with several (simulated) CPU
          # devices, collectives stall when ~100 steps are queued unawaited.
          metrics = {key: placement.scalar(value) for key, value in jax.device_get(metrics).items()}
          if not math.isfinite(metrics["loss"]):
            raise DivergedError(
              f"training diverged: the train loss is {metrics['loss']} at step "
              f"{step + 1} (epoch {epoch}); {_kept_checkpoint(workdir, last_saved)}",
              step + 1,
            )
          loss_sum += metrics["loss"]
          accuracy_sum += metrics["accuracy"]
          max_shortfall = max(max_shortfall, metrics.get("shortfall", 0.0))
          step += 1
          bar.update()
          if step % 20 == 0:
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
          if (
            config.checkpoint_every_steps
            and step % config.checkpoint_every_steps == 0
            and step % steps_per_epoch
          ):  # the epoch's end has its own checkpoint
            save(step, epoch - 1, partial_sums())

      train_time = time_before + time.perf_counter() - epoch_start
      host_state = placement.get_state(replicated)
      _check_finite_state(host_state, step, workdir, last_saved)
      if has_pruning and int(dp.get_stats(host_state.opt_state).skipped_updates):
        raise RuntimeError(  # the loop ran a pruning step without its mask update
          f"{int(dp.get_stats(host_state.opt_state).skipped_updates)} pruning step(s) ran "
          "with skip_mask_update=True: the transformation runs other steps than it exposes."
        )
      eval_metrics = evaluate(eval_step, replicated, config, data, num_local_devices, placement)
      masks = masks_of(config, host_state)
      away_after, back_after = drop_totals(config, host_state)
      line = {
        "epoch": epoch,
        "step": step,
        "learning_rate": float(learning_rate(step - 1)),
        "train_loss": loss_sum / steps_per_epoch,
        "train_accuracy": accuracy_sum / steps_per_epoch,
        **eval_metrics,
        "sparsity": dp.sparsity(masks),
        "layer_sparsity": dp.layer_sparsity(masks),
        "dropped_away": away_after - away_before,
        "dropped_back": back_after - back_before,
        "max_shortfall": max_shortfall,
        "train_time_s": train_time,
        "epoch_time_s": time.perf_counter() - epoch_start + time_before,
      }
      # Metrics first, then the checkpoint: if we die in between, the resume
      # restarts from the previous checkpoint and drops this line.
      if _is_writer():
        _append_metrics(workdir, line)
      save(step, epoch, np.zeros(len(PARTIAL_FIELDS)), host_state)
      logging.info(
        "epoch %d/%d: train loss %.4f, %stest error %.2f%%, sparsity %.2f%% (%.1fs)",
        epoch,
        config.num_epochs,
        line["train_loss"],
        f"val error {100 * line['val_error']:.2f}%, " if "val_error" in line else "",
        100 * line["test_error"],
        100 * line["sparsity"],
        line["epoch_time_s"],
      )
      if config.stop_after_epochs is not None and epoch >= config.stop_after_epochs:
        if epoch < config.num_epochs:
          stopped = True
          break
  except StopTraining:
    stopped = True
  finally:
    manager.wait_until_finished()
    manager.close()

  if stopped:
    finished = report.read_metrics(workdir)
    return {"stopped": True, "last_epoch": finished[-1]["epoch"] if finished else 0}

  summary = build_summary(
    config, workdir, host_state, total_steps, run_start, validation_examples=len(data.val_images)
  )
  summary["compile_time_s"] = compile_time
  summary["starts"] = run_info["starts"] if run_info else []
  summary["changed_on_resume"] = sorted(
    {key for start in summary["starts"] for key in start["changed"]}
  )
  # Round-trip through JSON so the returned dict equals the file (tuples -> lists).
  summary = json.loads(dumps(summary))
  if _is_writer():
    _write_atomic(workdir / SUMMARY_FILE, dumps(summary, indent=2))
    report.write_report(workdir)
  return summary


def best_validation_epoch(metrics: list[dict]) -> Optional[dict]:
  """The metrics line chosen on validation: the lowest ``val_error`` among the epochs
  whose sparsity is the final one (the finished schedule's; every epoch for dense
  training), the earliest of equals. ``None`` without validation errors.

  Epochs at a lower sparsity are not candidates: choosing one would trade the
  compression the run was asked for against error.
  """
  if not metrics or any(line.get("val_error") is None for line in metrics):
    return None
  final = metrics[-1]["sparsity"]
  candidates = [line for line in metrics if line["sparsity"] == final]
  return min(candidates, key=lambda line: (line["val_error"], line["epoch"]))


def build_summary(
  config,
  workdir: Path,
  state: TrainState,
  total_steps: int,
  run_start: float,
  validation_examples: int = 0,
) -> dict:
  """The final numbers of a run, JSON-serialisable.

  ``validation_examples`` is the size of the run's validation split (0: none; then
  every ``val_*`` field and the chosen-on-validation fields are ``None``).
  """
  metrics = report.read_metrics(workdir)
  last = metrics[-1] if metrics else {}
  best = best_validation_epoch(metrics) if validation_examples else None
  masks = masks_of(config, state)
  counts = dp.count_params(state.params, masks)
  epoch_time = sum(line["epoch_time_s"] for line in metrics)
  train_time = sum(line["train_time_s"] for line in metrics)
  device = jax.local_devices()[0]
  device_count = (config.num_devices or jax.local_device_count()) * jax.process_count()
  return {
    "name": workdir.name,
    "model": config.model,
    "dataset": config.dataset,
    "method": config.method,
    "epochs": config.num_epochs,
    "steps": total_steps,
    # The validation split (the last validation_examples training images) and the final
    # model's error on it: the number to choose settings on. The test error is
    # reported, never chosen on.
    "validation_examples": validation_examples,
    "val_error": last.get("val_error"),
    "val_loss": last.get("val_loss"),
    "test_error": last.get("test_error"),
    "test_loss": last.get("test_loss"),
    # The epoch chosen on validation among those at the final sparsity, and its test
    # error (informational: the checkpoints keep the last epochs only).
    "best_val_epoch": None if best is None else best["epoch"],
    "best_val_error": None if best is None else best["val_error"],
    "test_error_at_best_val": None if best is None else best["test_error"],
    "train_loss": last.get("train_loss"),
    "train_accuracy": last.get("train_accuracy"),
    "sparsity": dp.sparsity(masks),
    "target_sparsity": None if config.method == "dense" else config.target_sparsity,
    "compression": counts["total"] / max(counts["nonzero"], 1),
    "nonzero_params": counts["nonzero"],
    "total_params": counts["total"],
    "prunable_params": counts.get("prunable", 0),
    "layer_sparsity": dp.layer_sparsity(masks),
    # Model size as float32 arrays, and as exported by dp.export_sparse
    # (kept values + smallest-integer flat indices of every pruned leaf).
    "dense_bytes": dp.params_nbytes(state.params),
    "sparse_bytes": dp.params_nbytes(dp.export_sparse(state.params, masks)),
    # Training and evaluation over all epochs, summed over resumes (no start-up).
    "wall_time_s": epoch_time,
    "run_wall_time_s": time.perf_counter() - run_start,
    "steps_per_s": total_steps / train_time if train_time else None,
    "device_kind": device.device_kind,
    "platform": device.platform,
    "device_count": device_count,
    "process_count": jax.process_count(),
    "config": config.to_dict(),
  }
