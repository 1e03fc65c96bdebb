"""Train-step time of Drop Pruning against a dense optax step, in the same process.

(a) steps that do not update masks, compiled as the training loop runs them
(``skip_mask_update=True``: no conditional) and, for comparison, as a loop that does
not tell the transformation which steps prune (the ``lax.switch`` runs every step),
and against a hand-written step that only masks gradients and updates (the floor);
(b) mask-update steps; (a) and (b) again with ``packed_masks=True`` (masks stored as
bits); (c) a whole epoch with the default ``update_every`` in the README's first loop
(``dp.jit_train_step``: the step variant chosen per step on the host, as
``experiments/train.py`` does) and (c') in its simple loop (one jitted step with the
conditional). Ratios of medians over
interleaved repeats, after warm-up; by default as many step rounds as fit in
``--budget-s`` seconds (at least 10, at most 2,000), and as many epochs as fit in as
many seconds again (at least 3).

  python -m benchmarks.overhead --models lenet300,lenet5,vgg16_w0.25
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import optax

import droppruning_jax as dp
from benchmarks import common
from droppruning_jax import masks as masks_lib

FAR = 10**8  # a begin_step never reached: every step takes the no-update branch


def masking_floor(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """The least a masked step can do: mask the gradients and the updates, nothing else.

  No step count, no statistics, no schedule: a reference row that shows how much of
  the wrapper's no-update overhead is the masking itself.
  """

  def init_fn(params):
    return inner.init(params), dp.init_masks(params)

  def update_fn(updates, state, params):
    inner_state, masks = state
    grads = dp.apply_masks(updates, masks)
    updates, inner_state = inner.update(grads, inner_state, params)
    return masks_lib.masked_updates(updates, params, masks), (inner_state, masks)

  return optax.GradientTransformation(init_fn, update_fn)


def measure(
  name: str,
  batch_size: int,
  repeats: int | None,
  epoch_steps: int,
  update_every: int,
  donate: bool = True,
  budget_s: float = 30.0,
):
  model, variables, x, y = common.init_model(name, batch_size)
  params = variables["params"]
  stats = variables.get("batch_stats")
  inner = optax.sgd(0.01, momentum=0.9)
  never = dp.drop_pruning(inner, target_sparsity=0.9, begin_step=FAR, end_step=FAR)
  # update_every=1: every step until 10**4 is a (stochastic) mask-update step.
  always = dp.drop_pruning(inner, target_sparsity=0.9, end_step=10**4, update_every=1)
  never_packed = dp.drop_pruning(
    inner, target_sparsity=0.9, begin_step=FAR, end_step=FAR, packed_masks=True
  )
  always_packed = dp.drop_pruning(
    inner, target_sparsity=0.9, end_step=10**4, update_every=1, packed_masks=True
  )
  txs = {
    "dense": inner,
    "floor": masking_floor(inner),
    "no_update": never,
    "no_update_cond": never,
    "update": always,
    "no_update_packed": never_packed,
    "update_packed": always_packed,
  }
  steps = {k: common.make_train_step(model, tx, donate) for k, tx in txs.items()}
  for kind in ("no_update", "no_update_packed"):
    steps[kind] = common.make_train_step(model, txs[kind], donate, skip_mask_update=True)
  # Each kind carries its own state from call to call, as a training loop does.
  carries = {
    k: (common.fresh_copy(params), common.fresh_copy(stats), tx.init(params))
    for k, tx in txs.items()
  }

  def run(kind):
    def go():
      start = time.perf_counter()
      p, s, o, loss = steps[kind](*carries[kind], x, y)
      loss.block_until_ready()
      seconds = time.perf_counter() - start
      carries[kind] = (p, s, o)
      return seconds

    return go

  per_step, step_repeats = common.interleaved_median(
    {k: run(k) for k in txs}, repeats, budget_s=budget_s
  )

  # (c) an epoch: the state is fed back, pruning every `update_every` steps, in the
  # README's two loops: its first (dp.jit_train_step: the conditional only in pruning
  # steps) and its simple one (one jitted step, the conditional in every step).
  epoch_tx = dp.drop_pruning(
    inner, target_sparsity=0.9, end_step=50 * update_every, update_every=update_every
  )
  donate_argnums = (0, 1, 2) if donate else ()
  readme_loop = dp.jit_train_step(
    common.plain_train_step(model, epoch_tx),
    dp.pruning_steps(0, 50 * update_every, update_every),
    donate_argnums=donate_argnums,
  )
  simple_step = jax.jit(common.plain_train_step(model, epoch_tx), donate_argnums=donate_argnums)
  epoch_steps_by_kind = {
    "dense": (lambda t, *args: steps["dense"](*args), inner),
    "readme_loop": (readme_loop, epoch_tx),
    "simple_loop": (lambda t, *args: simple_step(*args), epoch_tx),
  }

  def epoch(kind):
    step_fn, tx = epoch_steps_by_kind[kind]

    def go():
      p, s, o = common.fresh_copy(params), common.fresh_copy(stats), tx.init(params)
      start = time.perf_counter()
      for t in range(epoch_steps):
        p, s, o, loss = step_fn(t, p, s, o, x, y)
        loss.block_until_ready()  # as a CPU training loop does every step
      return time.perf_counter() - start

    return go

  # Two warm-up epochs: the first compiles, the second sizes the budgeted repeat count.
  epoch_times, epoch_repeats = common.interleaved_median(
    {kind: epoch(kind) for kind in epoch_steps_by_kind},
    None if repeats is None else max(3, repeats // 10),
    warmup=2,
    budget_s=budget_s,
    min_repeats=3,
  )
  return {
    "model": name,
    "params": sum(int(p.size) for p in jax.tree.leaves(params)),
    "batch_size": batch_size,
    "repeats": step_repeats,
    "epoch_repeats": epoch_repeats,
    "dense_step_ms": per_step["dense"] * 1e3,
    "ratio_no_update": per_step["no_update"] / per_step["dense"],
    "ratio_masking_floor": per_step["floor"] / per_step["dense"],
    "ratio_no_update_with_cond": per_step["no_update_cond"] / per_step["dense"],
    "ratio_update": per_step["update"] / per_step["dense"],
    "ratio_no_update_packed": per_step["no_update_packed"] / per_step["dense"],
    "ratio_update_packed": per_step["update_packed"] / per_step["dense"],
    "epoch_steps": epoch_steps,
    "update_every": update_every,
    "ratio_epoch": epoch_times["readme_loop"] / epoch_times["dense"],
    "ratio_epoch_simple": epoch_times["simple_loop"] / epoch_times["dense"],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet300,lenet5,vgg16_w0.25")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument(
    "--repeats",
    type=int,
    default=None,
    help="interleaved rounds per model (default: as many as fit in --budget-s)",
  )
  parser.add_argument(
    "--budget-s",
    type=float,
    default=30.0,
    help="without --repeats: seconds for the step rounds of each model, and "
    "as many again for its epochs",
  )
  parser.add_argument("--epoch-steps", type=int, default=469)
  parser.add_argument("--update-every", type=int, default=100)
  parser.add_argument(
    "--no-donate",
    action="store_true",
    help="do not donate the train state to the step (copies pass-through state)",
  )
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  print(f"device: {common.device_description()}")
  print(
    "| model | params | dense step (ms) | (a) no-update / dense | masking alone / dense "
    "| (a') same, conditional kept "
    "| (b) update / dense | (c) epoch, README loop / dense | (c') epoch, simple loop / dense "
    "| (a) packed masks | (b) packed masks |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    steps = args.epoch_steps if not name.startswith("vgg16") else min(args.epoch_steps, 60)
    row = measure(
      name,
      args.batch_size,
      args.repeats,
      steps,
      args.update_every,
      donate=not args.no_donate,
      budget_s=args.budget_s,
    )
    row["donate"] = not args.no_donate
    row.update(common.provenance())
    rows.append(row)
    print(
      f"| {name} | {row['params']:,} | {row['dense_step_ms']:.2f} | {row['ratio_no_update']:.3f} "
      f"| {row['ratio_masking_floor']:.3f} "
      f"| {row['ratio_no_update_with_cond']:.3f} "
      f"| {row['ratio_update']:.2f} | {row['ratio_epoch']:.3f} | {row['ratio_epoch_simple']:.3f} "
      f"| {row['ratio_no_update_packed']:.3f} | {row['ratio_update_packed']:.2f} |",
      flush=True,
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
