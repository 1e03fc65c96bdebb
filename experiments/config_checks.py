"""The config's choices and the checks a config passes before a run starts.

The names each choice field takes (``METHODS``, ``OPTIMIZERS``, ...), the fields a resume
may change (``RUN_CONTROL_FIELDS``) or never can (``STATE_LAYOUT_FIELDS``), the device
mesh of ``parallel="jit"`` (:func:`mesh_shape`), and :func:`validate_config`, which
names the first wrong field and value before any data is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections

from droppruning_jax import importance as importance_lib
from droppruning_jax import plan as plan_lib
from experiments import data as data_lib
from experiments import errors, models

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
# The dynamic sparse methods, by their regrowth (dp.dynamic_sparse_training's ``regrowth``).
DYNAMIC_SPARSE_METHODS = {"rigl": "gradient", "set": "random"}
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
# the resulting device count is checked separately (see run_folder.check_devices).
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
# its default: such a run trained on the whole training split, under jax.pmap.
MISSING_FIELD_VALUES = {"validation_examples": 0, "parallel": "pmap"}


def is_unset(value: Any) -> bool:
  return value is None or value == ""


def global_device_count(config: ml_collections.ConfigDict) -> int:
  local = config.num_devices if config.num_devices else jax.local_device_count()
  return local * jax.process_count()


def mesh_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The axis sizes of ``parallel="jit"``'s mesh, with ``-1`` resolved.

  Raises:
    ValueError: the shape, names or FSDP axis do not fit the devices.
  """
  shape, names = tuple(config.mesh_shape), tuple(config.mesh_axes)
  devices = global_device_count(config)
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
  if not is_unset(config.fsdp_axis) and config.fsdp_axis not in names:
    raise ValueError(f"fsdp_axis={config.fsdp_axis!r} is not one of mesh_axes={names}.")
  return resolved


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a config before any data is loaded or any step is compiled.

  Must run after ``jax.distributed.initialize`` (it counts devices). The checks run in
  a fixed order and the first that fails names its field.

  Raises:
    ValueError: naming the field and the value that is wrong.
  """
  _check_choices(config)
  _check_counts(config)
  _check_optimization(config)
  _check_devices(config)
  if config.method != "dense":
    _check_pruning_schedule(config)
    _check_pruning_rules(config)
  if config.lr_rewind_epoch is not None:
    _check_lr_rewind(config)
  _check_run_folders(config)
  if config.teacher_workdir is not None:
    _check_distillation(config)
  if config.method in DYNAMIC_SPARSE_METHODS:
    _check_dynamic_sparse(config)
  if config.method == "han":
    _check_han(config)


def _fail(message: str):
  raise errors.ConfigError(f"invalid config: {message}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_choices(config: ml_collections.ConfigDict) -> None:
  """The named choices: method, optimizer, schedule, model and its API, parallel mode
  (and the jit mesh), dataset."""
  if config.method not in METHODS:
    _fail(f"method={config.method!r} is not one of {METHODS}.")
  if config.optimizer not in OPTIMIZERS:
    _fail(f"optimizer={config.optimizer!r} is not one of {OPTIMIZERS}.")
  if config.lr_schedule not in LR_SCHEDULES:
    _fail(f"lr_schedule={config.lr_schedule!r} is not one of {LR_SCHEDULES}.")
  if config.model not in models.MODEL_NAMES:
    _fail(f"model={config.model!r} is not one of {tuple(models.MODEL_NAMES)}.")
  if config.model_api not in MODEL_APIS:
    _fail(f"model_api={config.model_api!r} is not one of {MODEL_APIS}.")
  if config.model_api == "linen" and config.model not in models.LINEN_MODEL_NAMES:
    _fail(f"model={config.model!r} is an NNX model only: add --config.model_api=nnx.")
  if config.model_api == "nnx" and config.model not in models.NNX_MODEL_NAMES:
    _fail(
      f"model_api='nnx' has no NNX version of model={config.model!r}; NNX models: "
      f"{tuple(models.NNX_MODEL_NAMES)}."
    )
  if config.parallel not in PARALLEL_MODES:
    _fail(f"parallel={config.parallel!r} is not one of {PARALLEL_MODES}.")
  if config.parallel == "jit":
    try:
      mesh_shape(config)
    except ValueError as error:
      _fail(str(error))
  if config.dataset not in data_lib.DATASET_NAMES:
    _fail(f"dataset={config.dataset!r} is not one of {data_lib.DATASET_NAMES}.")
  if config.dataset not in MODEL_DATASETS[config.model]:
    _fail(
      f"model={config.model!r} cannot read dataset={config.dataset!r}; it takes "
      f"{MODEL_DATASETS[config.model]}."
    )


def _check_counts(config: ml_collections.ConfigDict) -> None:
  """The integer fields: batch sizes, epochs, caps, stops, the validation split, the
  seed, the simulated host devices."""
  for name in ("batch_size", "eval_batch_size", "num_epochs"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      _fail(f"{name}={value!r} must be a positive integer.")
  for name in (
    "max_train_examples",
    "max_test_examples",
    "stop_after_epochs",
    "stop_after_steps",
    "checkpoint_every_steps",
  ):
    value = config[name]
    if value is not None and (not _is_int(value) or value < 1):
      _fail(f"{name}={value!r} must be unset or a positive integer.")
  if config.validation_examples is not None and (
    not _is_int(config.validation_examples) or config.validation_examples < 0
  ):
    _fail(
      f"validation_examples={config.validation_examples!r} must be unset or an integer >= 0 "
      "(0: no validation split)."
    )
  # numpy's generators take no negative seeds; JAX keys take 32 bits.
  if not _is_int(config.seed) or not 0 <= config.seed < 2**31:
    _fail(f"seed={config.seed!r} must be an integer in [0, 2**31).")
  if not _is_int(config.host_devices) or config.host_devices < 0:
    _fail(f"host_devices={config.host_devices!r} must be 0 (JAX's default) or a positive integer.")


def _check_optimization(config: ml_collections.ConfigDict) -> None:
  """The optimizer's numbers, the model width, the step schedule's fractions."""
  if not _is_number(config.learning_rate) or config.learning_rate <= 0:
    _fail(f"learning_rate={config.learning_rate!r} must be a finite number > 0.")
  if not _is_number(config.momentum) or not 0.0 <= config.momentum < 1.0:
    _fail(f"momentum={config.momentum!r} is outside [0, 1).")
  if not _is_number(config.weight_decay) or config.weight_decay < 0:
    _fail(f"weight_decay={config.weight_decay!r} must be a finite number >= 0.")
  if not _is_number(config.warmup_epochs) or not 0 <= config.warmup_epochs < config.num_epochs:
    _fail(
      f"warmup_epochs={config.warmup_epochs!r} must be a number in [0, num_epochs="
      f"{config.num_epochs!r})."
    )
  if not _is_number(config.lr_step_factor) or config.lr_step_factor <= 0:
    _fail(f"lr_step_factor={config.lr_step_factor!r} must be a finite number > 0.")
  if config.model == "vgg16" and (
    not _is_number(config.width_multiplier) or config.width_multiplier <= 0
  ):
    _fail(f"width_multiplier={config.width_multiplier!r} must be a finite number > 0.")
  if config.lr_schedule == "step":
    fractions = list(config.lr_step_fractions)
    if (
      not fractions
      or any(not _is_number(f) or not 0 < f < 1 for f in fractions)
      or fractions != sorted(fractions)
    ):
      _fail(
        f"lr_step_fractions={tuple(fractions)!r} must be increasing fractions of the "
        "training inside (0, 1)."
      )


def _check_devices(config: ml_collections.ConfigDict) -> None:
  """The local devices chosen, and batch sizes that split evenly over all devices."""
  if config.num_devices is not None:
    if config.multihost:
      _fail(
        "num_devices cannot be combined with multihost=True (every process uses all "
        "its local devices)."
      )
    if not 1 <= config.num_devices <= jax.local_device_count():
      _fail(
        f"num_devices={config.num_devices!r} is outside [1, {jax.local_device_count()}] "
        f"(the local devices: {jax.local_devices()})."
      )
  devices = global_device_count(config)
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % devices:
      _fail(
        f"{name}={config[name]} is not divisible by the {devices} devices "
        f"({jax.process_count()} process(es) x {devices // jax.process_count()} local); "
        "pick a multiple, or set num_devices / host_devices."
      )


def _check_pruning_schedule(config: ml_collections.ConfigDict) -> None:
  """A pruning method's target, update period, drop probabilities and window."""
  if not _is_number(config.target_sparsity) or not 0.0 <= config.target_sparsity < 1.0:
    _fail(f"target_sparsity={config.target_sparsity!r} is outside [0, 1).")
  if not _is_int(config.update_every) or config.update_every < 1:
    _fail(f"update_every={config.update_every!r} must be a positive integer.")
  for name in ("drop_away_prob", "drop_back_prob"):
    if not _is_number(config[name]) or not 0.0 <= config[name] <= 1.0:
      _fail(f"{name}={config[name]!r} is outside [0, 1].")
  begin, end = config.prune_begin_epoch, config.prune_end_epoch
  if not (_is_number(begin) and _is_number(end)) or not 0 <= begin <= end <= config.num_epochs:
    _fail(
      f"need 0 <= prune_begin_epoch={begin} <= prune_end_epoch={end} <= "
      f"num_epochs={config.num_epochs}."
    )


def _check_pruning_rules(config: ml_collections.ConfigDict) -> None:
  """A pruning method's named rules: annealing, sparsity distribution, importance, the
  weighted drop rules and their temperature (each only where it applies)."""
  if config.drop_anneal not in ("none", "cosine"):
    _fail(f"drop_anneal={config.drop_anneal!r} is not one of ('none', 'cosine').")
  if config.sparsity_distribution not in SPARSITY_DISTRIBUTIONS:
    _fail(
      f"sparsity_distribution={config.sparsity_distribution!r} is not one of "
      f"{SPARSITY_DISTRIBUTIONS}."
    )
  if config.importance not in IMPORTANCES:
    _fail(f"importance={config.importance!r} is not one of {IMPORTANCES}.")
  if config.importance != "magnitude" and config.method not in IMPORTANCE_METHODS:
    _fail(
      f"importance={config.importance!r} applies to the methods {IMPORTANCE_METHODS}, "
      f"not method={config.method!r}."
    )
  if config.drop_away not in DROP_AWAY_RULES:
    _fail(f"drop_away={config.drop_away!r} is not one of {DROP_AWAY_RULES}.")
  if config.drop_back not in DROP_BACK_RULES:
    _fail(f"drop_back={config.drop_back!r} is not one of {DROP_BACK_RULES}.")
  weighted = config.drop_away != "uniform" or config.drop_back != "uniform"
  if weighted and config.method != "drop":
    name = "drop_away" if config.drop_away != "uniform" else "drop_back"
    _fail(f"{name}={config[name]!r} applies to method='drop', not method={config.method!r}.")
  if config.temperature is not None:
    if not _is_number(config.temperature) or config.temperature <= 0:
      _fail(f"temperature={config.temperature!r} must be unset or a finite number > 0.")
    if not weighted:
      _fail(
        f"temperature={config.temperature!r} has no effect with drop_away='uniform' and "
        "drop_back='uniform'; it weights drop_away='importance' or drop_back='gradient' "
        "or 'stash'."
      )


def _check_lr_rewind(config: ml_collections.ConfigDict) -> None:
  """``lr_rewind_epoch`` (set): a pruning method, and a rewind after the pruning window."""
  if config.method == "dense":
    _fail(
      f"lr_rewind_epoch={config.lr_rewind_epoch!r} rewinds the learning rate after the "
      "last mask update; method='dense' has none."
    )
  if not _is_number(config.lr_rewind_epoch) or not (
    0 <= config.lr_rewind_epoch <= config.prune_end_epoch < config.num_epochs
  ):
    _fail(
      f"need 0 <= lr_rewind_epoch={config.lr_rewind_epoch!r} <= prune_end_epoch="
      f"{config.prune_end_epoch} < num_epochs={config.num_epochs} (the rewound schedule "
      "runs after the pruning window)."
    )


def _check_run_folders(config: ml_collections.ConfigDict) -> None:
  """A finished run named as the teacher or the start is a folder, not an empty path.

  A config that cannot know the folder (lenet5_distill.py's teacher) leaves it empty, so
  that a run without one stops here rather than at ``Path("")``, the current folder.
  """
  for field in ("teacher_workdir", "init_workdir"):
    value = config[field]
    if value is not None and not str(value).strip():
      _fail(
        f"{field}={value!r} names no run folder: pass --config.{field}=DIR, a finished run "
        "(the config file's docstring says which)."
      )


def _check_distillation(config: ml_collections.ConfigDict) -> None:
  """The distillation loss's weight and temperature (with a ``teacher_workdir``)."""
  if not _is_number(config.distill_weight) or not 0.0 <= config.distill_weight <= 1.0:
    _fail(f"distill_weight={config.distill_weight!r} is outside [0, 1].")
  if not _is_number(config.distill_temperature) or config.distill_temperature <= 0:
    _fail(f"distill_temperature={config.distill_temperature!r} must be a finite number > 0.")


def _check_dynamic_sparse(config: ml_collections.ConfigDict) -> None:
  """RigL and SET: a fixed sparsity in (0, 1), the drop fraction and its decay, a
  per-layer distribution, a topology that changes for some time."""
  if config.target_sparsity == 0:
    _fail(
      f"target_sparsity={config.target_sparsity!r}: method={config.method!r} trains at a "
      "fixed sparsity from the first step and needs one in (0, 1)."
    )
  if not _is_number(config.drop_fraction) or not 0.0 < config.drop_fraction <= 1.0:
    _fail(f"drop_fraction={config.drop_fraction!r} is outside (0, 1].")
  if config.drop_fraction_decay not in DROP_FRACTION_DECAYS:
    _fail(
      f"drop_fraction_decay={config.drop_fraction_decay!r} is not one of {DROP_FRACTION_DECAYS}."
    )
  if config.sparsity_distribution == "global":
    _fail(
      f"method={config.method!r} keeps a fixed target per layer: "
      "sparsity_distribution='global' is not supported (use 'uniform' or 'erk')."
    )
  if config.prune_end_epoch <= 0:
    _fail(
      f"prune_end_epoch={config.prune_end_epoch!r} must be > 0 for method="
      f"{config.method!r} (the topology changes until then)."
    )


def _check_han(config: ml_collections.ConfigDict) -> None:
  """Han et al.'s cycles, and its quality or a per-layer sparsity distribution."""
  if not isinstance(config.han_cycles, int) or config.han_cycles < 1:
    _fail(f"han_cycles={config.han_cycles!r} must be a positive integer.")
  if config.han_quality is not None and (
    not _is_number(config.han_quality) or config.han_quality <= 0
  ):
    _fail(f"han_quality={config.han_quality!r} must be unset or a finite number > 0.")
  if config.han_quality is None and config.sparsity_distribution == "global":
    _fail(
      "method='han' prunes per layer: sparsity_distribution='global' is not "
      "supported (use 'uniform' or 'erk', or set han_quality)."
    )
