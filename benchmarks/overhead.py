"""Train-step time of Drop Pruning against a dense optax step, in the same process.

(a) steps that do not update masks, (b) mask-update steps, (c) a whole epoch with the
default ``update_every``; ratios of medians over interleaved repeats, after warm-up.

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


def measure(name: str, batch_size: int, repeats: int, epoch_steps: int, update_every: int):
  model, variables, x, y = common.init_model(name, batch_size)
  params = variables["params"]
  stats = variables.get("batch_stats")
  inner = optax.sgd(0.01, momentum=0.9)
  txs = {
      "dense": inner,
      "no_update": dp.drop_pruning(inner, target_sparsity=0.9, begin_step=FAR, end_step=FAR),
      "update": dp.drop_pruning(inner, target_sparsity=0.9, end_step=10**4, update_every=1),
  }
  steps = {k: common.make_train_step(model, tx) for k, tx in txs.items()}
  states = {k: tx.init(params) for k, tx in txs.items()}
  # count = 1 is a stochastic pruning step of the "update" transform; reusing the same
  # state keeps every timed call on that branch.
  _, _, states["update"], _ = steps["update"](params, stats, states["update"], x, y)

  def run(kind):
    return lambda: common.time_call(steps[kind], params, stats, states[kind], x, y)

  per_step = common.interleaved_median({k: run(k) for k in txs}, repeats)

  # (c) an epoch: the state is fed back, pruning every `update_every` steps.
  epoch_tx = dp.drop_pruning(inner, target_sparsity=0.9, end_step=50 * update_every,
                             update_every=update_every)
  epoch_step = common.make_train_step(model, epoch_tx)

  def epoch(step, tx):
    def go():
      p, s, o = params, stats, tx.init(params)
      start = time.perf_counter()
      for _ in range(epoch_steps):
        p, s, o, loss = step(p, s, o, x, y)
        loss.block_until_ready()  # as a CPU training loop does every step
      return time.perf_counter() - start
    return go

  epoch_times = common.interleaved_median(
      {"dense": epoch(steps["dense"], inner), "drop": epoch(epoch_step, epoch_tx)},
      max(3, repeats // 10), warmup=1,
  )
  return {
      "model": name,
      "params": sum(int(p.size) for p in jax.tree.leaves(params)),
      "batch_size": batch_size,
      "dense_step_ms": per_step["dense"] * 1e3,
      "ratio_no_update": per_step["no_update"] / per_step["dense"],
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
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  print(f"device: {common.device_description()}")
  print("| model | params | dense step (ms) | (a) no-update / dense | (b) update / dense | (c) epoch / dense |")
  print("|---|---|---|---|---|---|")
  for name in args.models.split(","):
    steps = args.epoch_steps if not name.startswith("vgg16") else min(args.epoch_steps, 60)
    row = measure(name, args.batch_size, args.repeats, steps, args.update_every)
    row["device"] = common.device_description()
    rows.append(row)
    print(f"| {name} | {row['params']:,} | {row['dense_step_ms']:.2f} | {row['ratio_no_update']:.3f} "
          f"| {row['ratio_update']:.2f} | {row['ratio_epoch']:.3f} |", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
