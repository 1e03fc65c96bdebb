"""The model, the optimizer and the pruning method a config names.

:func:`make_model` builds a linen model or an NNX one behind :class:`FunctionalNNX`
(one functional loop for both APIs); :func:`make_optimizer` wraps the inner optimizer
(:func:`make_inner_optimizer`, learning rate :func:`make_learning_rate`) in the method's
pruning transformation, whose schedule :func:`pruning_window` places in steps;
:func:`init_variables` initialises the model.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

import droppruning_jax as dp
from droppruning_jax import masks as masks_lib
from experiments import config_checks, finished_runs, models

PyTree = Any


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
    if all(spec == P() for spec in jax.tree.leaves(specs, is_leaf=is_spec)):
      return None
    return specs


def is_spec(x: Any) -> bool:
  """Whether ``x`` is a ``PartitionSpec`` (a leaf of a tree of specs)."""
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
  the pruning window when ``lr_rewind_epoch`` is set, ramped up over the first
  ``warmup_epochs``."""
  schedule = _decay_and_rewind(config, steps_per_epoch)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  if warmup_steps <= 0:
    return schedule
  # A linear ramp multiplies the schedule (Goyal et al. 2017): step 0 trains at
  # 1 / warmup_steps of it, the full rate from step warmup_steps - 1 on. It acts on the
  # start of training only: a rewind to epoch 0 restarts the decay, not the ramp.
  ramp = optax.linear_schedule(1.0 / warmup_steps, 1.0, max(warmup_steps - 1, 1))
  return lambda step: schedule(step) * ramp(step)


def _decay_and_rewind(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
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
  if config.method in config_checks.DYNAMIC_SPARSE_METHODS:
    return dp.dynamic_sparse_training(
      inner,
      regrowth=config_checks.DYNAMIC_SPARSE_METHODS[config.method],
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
  if config.method in config_checks.IMPORTANCE_METHODS:
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
  """``(params, batch_stats)`` of a fresh model, or of ``config.init_workdir``'s finished
  run when set (``finished_runs.start_from``: ValueError if it holds another model);
  ``batch_stats`` is ``{}`` without batch norm."""
  variables = jax.jit(functools.partial(model.init, train=False))(
    jax.random.PRNGKey(config.seed), jnp.zeros((1, *image_shape), jnp.float32)
  )
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  if config.init_workdir is not None:
    return finished_runs.start_from(config, params, batch_stats)
  return params, batch_stats
