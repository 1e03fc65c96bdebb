"""Shared benchmark helpers: models, a train step, interleaved timing."""

from __future__ import annotations

import functools
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from experiments import models

MODEL_INPUTS = {
  "lenet300": ((28, 28, 1), lambda: models.LeNet300100()),
  "lenet5": ((28, 28, 1), lambda: models.LeNet5()),
  "vgg16_w0.25": ((32, 32, 3), lambda: models.VGG16(width_multiplier=0.25)),
  "vgg16": ((32, 32, 3), lambda: models.VGG16()),
}


def device_description() -> str:
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  return f"{device.platform}:{device.device_kind} x{jax.device_count()} ({cpu})"


def provenance() -> dict[str, str]:
  """What a result was measured on and with: device, jax version, git commit of the code.

  ``commit`` ends in ``+changes`` when the library or the benchmarks in the working tree
  differed from it; it is ``unknown`` outside a git checkout.
  """
  root = Path(__file__).resolve().parents[1]

  def git(*args: str) -> str:
    return subprocess.run(
      ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()

  try:
    commit = git("rev-parse", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no", "--", "droppruning_jax", "benchmarks"):
      commit += "+changes"
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  return {"device": device_description(), "jax": jax.__version__, "commit": commit}


def init_model(name: str, batch_size: int, seed: int = 0):
  shape, make = MODEL_INPUTS[name]
  model = make()
  x = jax.random.normal(jax.random.PRNGKey(seed), (batch_size, *shape))
  y = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch_size,), 0, 10)
  variables = model.init(jax.random.PRNGKey(seed), x[:1], train=False)
  return model, variables, x, y


def plain_train_step(model, tx: optax.GradientTransformation) -> Callable:
  """The step of :func:`make_train_step`, not jitted, with a keyword ``skip_mask_update``
  that it passes to ``tx.update`` when given (for ``dp.jit_train_step``)."""

  def loss_fn(params, batch_stats, x, y):
    variables = {"params": params}
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
      logits, new_vars = model.apply(variables, x, train=True, mutable=["batch_stats"])
      new_stats = new_vars["batch_stats"]
    else:
      logits, new_stats = model.apply(variables, x, train=True), None
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, new_stats

  def step(params, batch_stats, opt_state, x, y, *, skip_mask_update=None):
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y)
    kwargs = {} if skip_mask_update is None else {"skip_mask_update": skip_mask_update}
    updates, opt_state = tx.update(grads, opt_state, params, **kwargs)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  return step


def make_train_step(
  model, tx: optax.GradientTransformation, donate: bool = True, **update_kwargs
) -> Callable:
  """A jitted train step (params, batch_stats, opt_state, x, y) -> (..., loss).

  ``donate`` donates params, batch stats and optimizer state, as a training loop
  does (state that the step passes through unchanged, like the masks between
  pruning steps, is then aliased instead of copied). ``update_kwargs`` go to
  ``tx.update`` (e.g. ``skip_mask_update=True``).
  """
  step = functools.partial(plain_train_step(model, tx), **update_kwargs)
  return jax.jit(step, donate_argnums=(0, 1, 2) if donate else ())


def fresh_copy(tree):
  """A copy that a donating step may consume."""
  return jax.tree.map(jnp.copy, tree)


def time_call(fn: Callable, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def interleaved_orders(
  names: list[str], repeats: int, seed: int = 0, last: str | None = None
) -> list[list[str]]:
  """One shuffled order per repeat, such that no function ever runs twice in a row.

  A function that runs right after itself finds its state in the caches; with a
  fixed or mirrored order that happens to the first and last names only, which
  biases the ratios on a CPU (it made the first name, the dense baseline, look up to
  5 % faster). Random orders give every function the same mix of predecessors.
  ``last`` is the function that ran just before the first order (the last one of a
  warm-up round).
  """
  rng = random.Random(seed)
  orders = []
  for _ in range(repeats):
    order = list(names)
    rng.shuffle(order)
    if len(order) > 1 and order[0] == last:
      order[0], order[-1] = order[-1], order[0]
    orders.append(order)
    last = order[-1]
  return orders


def repeats_for_budget(
  seconds_per_round: float, budget_s: float, low: int = 10, high: int = 2000
) -> int:
  """How many interleaved rounds fit in ``budget_s``, clipped to ``[low, high]``.

  A fixed count is wrong at both ends: 100 rounds of a 1.3 ms step left the ratio
  varying by about 2 % from process to process on the CPU (1,000 rounds: 0.7 %),
  while 100 rounds of a 0.3 s step take two minutes.

  Args:
    seconds_per_round: the time of one round of every measured function.
    budget_s: seconds to spend.
    low, high: bounds on the count.

  Returns:
    The number of rounds.

  Raises:
    ValueError: if a time is not positive.
  """
  if not seconds_per_round > 0 or not budget_s > 0:
    raise ValueError(
      f"seconds_per_round={seconds_per_round!r} and budget_s={budget_s!r} must be positive."
    )
  return int(min(high, max(low, int(budget_s / seconds_per_round))))


def interleaved_median(
  fns: dict[str, Callable],
  repeats: int | None,
  warmup: int = 3,
  budget_s: float | None = None,
  min_repeats: int = 10,
) -> tuple[dict[str, float], int]:
  """Median seconds per call of each function, in shuffled interleaved orders.

  Args:
    fns: name -> function that runs the measured thing once and returns its seconds.
    repeats: interleaved rounds to run; ``None``: as many as fit in ``budget_s``,
      judged from the fastest warm-up round (:func:`repeats_for_budget`).
    warmup: untimed rounds first (compilation, caches).
    budget_s: seconds for the rounds when ``repeats`` is ``None``.
    min_repeats: the fewest rounds a budget may choose.

  Returns:
    ``(medians, repeats)``: the median seconds per function and the rounds run.

  Raises:
    ValueError: ``repeats=None`` without ``budget_s`` or without a warm-up round.
  """
  names = list(fns)
  if repeats is None and (budget_s is None or warmup < 1):
    raise ValueError("repeats=None needs budget_s and at least one warm-up round.")
  round_s = [sum(fns[name]() for name in names) for _ in range(warmup)]
  if repeats is None:
    # The fastest warm-up round: the first one may include compilation.
    repeats = repeats_for_budget(min(round_s), budget_s, low=min_repeats)
  samples = {name: [] for name in names}
  for order in interleaved_orders(names, repeats, last=names[-1] if warmup else None):
    for name in order:
      samples[name].append(fns[name]())
  return {name: statistics.median(values) for name, values in samples.items()}, repeats
