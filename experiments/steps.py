"""The train state, the steps that update and evaluate it, and host-side views of it.

:func:`train_step_fn` and :func:`eval_step_fn` are one replica's steps, written once
for every placement: the reductions over the replicas come from the placement
(``placement.mean``, ``placement.total``), and :func:`make_train_step` /
:func:`make_eval_step` hand the step to the placement to compile (``jax.pmap`` or
``jax.jit``). :func:`evaluate` runs the eval step over the validation and test splits;
:func:`masks_of` and :func:`drop_totals` read an unreplicated state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import droppruning_jax as dp
from droppruning_jax import skeleton
from experiments import distill as distill_lib
from experiments import input_pipeline
from experiments import placement as placement_lib

PyTree = Any


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


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def uses_pruning(config) -> bool:
  """Whether the method prunes (every method but ``dense``)."""
  return config.method != "dense"


def train_step_fn(
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


def eval_step_fn(model, total: Any):
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


def make_train_step(
  placement: Any,
  model,
  tx,
  has_pruning: bool,
  skip_mask_update: bool = False,
  distill: Any = None,
):
  """The train step of :func:`train_step_fn` reduced with ``placement.mean`` and
  compiled by ``placement`` (``jax.pmap`` or ``jax.jit``, donating the state)."""
  step = train_step_fn(model, tx, has_pruning, skip_mask_update, placement.mean, distill)
  batch_arrays = 2 if distill is None else 3  # images, labels[, teacher logits]
  return placement.compile_train_step(step, batch_arrays)


def make_eval_step(placement: Any, model):
  """The eval step of :func:`eval_step_fn` summed with ``placement.total`` and compiled
  by ``placement``."""
  return placement.compile_eval_step(eval_step_fn(model, placement.total))


def evaluate(
  eval_step,
  state: TrainState,
  config,
  data: input_pipeline.Data,
  num_local_devices: int,
  placement: Any = None,
) -> dict:
  """Mean loss and error on the validation split (``val_*``, only if there is one) and
  on the test split (``test_*``)."""
  placement = placement or placement_lib.PmapPlacement(None)
  splits = [("test", data.test_images, data.test_labels)]
  if len(data.val_images):
    splits.insert(0, ("val", data.val_images, data.val_labels))
  results = {}
  for name, images, labels in splits:
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch in input_pipeline.eval_batches(config, images, labels, num_local_devices):
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


def masks_of(config, state: TrainState) -> PyTree:
  """The masks of an unreplicated state; all-``True`` masks for the dense method."""
  if uses_pruning(config):
    return dp.get_masks(state.opt_state)
  return dp.init_masks(state.params)


def drop_totals(config, state: TrainState) -> tuple[int, int]:
  """``(dropped away, dropped back)`` so far, summed over the run; ``(0, 0)`` if dense."""
  if not uses_pruning(config):
    return 0, 0
  stats = dp.get_stats(state.opt_state)
  return int(stats.total_dropped_away), int(stats.total_dropped_back)
