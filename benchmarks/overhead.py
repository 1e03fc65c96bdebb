"""Train-step time of Drop Pruning against a dense optax step, in the same process.

(a) steps that do not update masks, compiled as the training loop runs them
(``skip_mask_update=True``: no conditional) and, for comparison, as a loop that does
not tell the transformation which steps prune (the ``lax.switch`` runs every step);
(b) mask-update steps; (c) a whole epoch with the default ``update_every``, choosing
the step per step as ``experiments/train.py`` does. Ratios of medians over
interleaved repeats, after warm-up.

  python -m benchmarks.overhead --models lenet300,lenet5,vgg16_w0.25 --repeats 50
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import optax

import droppruning_jax as dp
from benchmarks import common

FAR = 10**8  # a begin_step never reached: every step takes the no-update branch


def measure(name: str, batch_size: int, repeats: int, epoch_steps: int, update_every: int,
            donate: bool = True):
  model, variables, x, y = common.init_model(name, batch_size)
  params = variables["params"]
  stats = variables.get("batch_stats")
  inner = optax.sgd(0.01, momentum=0.9)
  never = dp.drop_pruning(inner, target_sparsity=0.9, begin_step=FAR, end_step=FAR)
  # update_every=1: every step until 10**4 is a (stochastic) mask-update step.
  always = dp.drop_pruning(inner, target_sparsity=0.9, end_step=10**4, update_every=1)
  txs = {"dense": inner, "no_update": never, "no_update_cond": never, "update": always}
  steps = {k: common.make_train_step(model, tx, donate) for k, tx in txs.items()}
  steps["no_update"] = common.make_train_step(model, never, donate, skip_mask_update=True)
  # Each kind carries its own state from call to call, as a training loop does.
  carries = {k: (common.fresh_copy(params), common.fresh_copy(stats), tx.init(params))
             for k, tx in txs.items()}

  def run(kind):
    def go():
      start = time.perf_counter()
      p, s, o, loss = steps[kind](*carries[kind], x, y)
      loss.block_until_ready()
      seconds = time.perf_counter() - start
      carries[kind] = (p, s, o)
      return seconds
    return go

  per_step = common.interleaved_median({k: run(k) for k in txs}, repeats)

  # (c) an epoch: the state is fed back, pruning every `update_every` steps.
  epoch_tx = dp.drop_pruning(inner, target_sparsity=0.9, end_step=50 * update_every,
                             update_every=update_every)
  epoch_step_fns = (common.make_train_step(model, epoch_tx, donate),
                    common.make_train_step(model, epoch_tx, donate, skip_mask_update=True))
  prune_at = set(dp.pruning_steps(0, 50 * update_every, update_every))

  def epoch(step_fns, tx, prune_at):
    def go():
      p, s, o = common.fresh_copy(params), common.fresh_copy(stats), tx.init(params)
      start = time.perf_counter()
      for t in range(epoch_steps):
        step = step_fns[0] if t in prune_at else step_fns[1]
        p, s, o, loss = step(p, s, o, x, y)
        loss.block_until_ready()  # as a CPU training loop does every step
      return time.perf_counter() - start
    return go

  epoch_times = common.interleaved_median(
      {"dense": epoch((steps["dense"], steps["dense"]), inner, set()),
       "drop": epoch(epoch_step_fns, epoch_tx, prune_at)},
      max(3, repeats // 10), warmup=1,
  )
  return {
      "model": name,
      "params": sum(int(p.size) for p in jax.tree.leaves(params)),
      "batch_size": batch_size,
      "dense_step_ms": per_step["dense"] * 1e3,
      "ratio_no_update": per_step["no_update"] / per_step["dense"],
      "ratio_no_update_with_cond": per_step["no_update_cond"] / per_step["dense"],
      "ratio_update": per_step["update"] / per_step["dense"],
      "epoch_steps": epoch_steps,
      "update_every": update_every,
      "ratio_epoch": epoch_times["drop"] / epoch_times["dense"],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet300,lenet5,vgg16_w0.25")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--epoch-steps", type=int, default=469)
  parser.add_argument("--update-every", type=int, default=100)
  parser.add_argument("--no-donate", action="store_true",
                      help="do not donate the train state to the step (copies pass-through state)")
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  print(f"device: {common.device_description()}")
  print("| model | params | dense step (ms) | (a) no-update / dense | (a') same, conditional kept "
        "| (b) update / dense | (c) epoch / dense |")
  print("|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    steps = args.epoch_steps if not name.startswith("vgg16") else min(args.epoch_steps, 60)
    row = measure(name, args.batch_size, args.repeats, steps, args.update_every,
                  donate=not args.no_donate)
    row["donate"] = not args.no_donate
    row["device"] = common.device_description()
    rows.append(row)
    print(f"| {name} | {row['params']:,} | {row['dense_step_ms']:.2f} | {row['ratio_no_update']:.3f} "
          f"| {row['ratio_no_update_with_cond']:.3f} "
          f"| {row['ratio_update']:.2f} | {row['ratio_epoch']:.3f} |", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
