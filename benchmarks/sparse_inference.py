"""Inference with the exported sparse LeNet-300-100 (BCOO kernels) against the dense model.

Random masks at each sparsity, the same masked weights in both; medians of interleaved
calls after warm-up; reports sparse time / dense time (below 1 = sparse is faster).

  python -m benchmarks.sparse_inference --sparsities 0.9,0.98,0.99 --batches 1,128
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import droppruning_jax as dp
from benchmarks import common
from droppruning_jax import export
from experiments import models

LAYERS = ("dense1", "dense2", "dense3")


def mlp_logits(kernels, biases, x):
  h = x
  for i, (kernel, bias) in enumerate(zip(kernels, biases)):
    h = h @ kernel + bias
    if i < len(kernels) - 1:
      h = jax.nn.relu(h)
  return h


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sparsities", default="0.9,0.98,0.99")
  parser.add_argument("--batches", default="1,128")
  parser.add_argument("--repeats", type=int, default=200)
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  model = models.LeNet300100()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]
  rng = np.random.default_rng(0)
  print(f"device: {common.device_description()}")
  print("| sparsity | batch | dense (ms) | BCOO (ms) | BCOO / dense | max abs logit diff |")
  print("|---|---|---|---|---|---|")
  forward = jax.jit(mlp_logits)
  for sparsity in (float(s) for s in args.sparsities.split(",")):
    masks = jax.tree.map(
      lambda m: jnp.asarray(rng.random(m.shape) >= sparsity) if m.ndim else m, dp.init_masks(params)
    )
    masked = dp.apply_masks(params, masks)
    exported = export.export_sparse(masked, masks)
    dense_kernels = [masked[n]["kernel"] for n in LAYERS]
    sparse_kernels = [export.to_bcoo(exported[n]["kernel"]) for n in LAYERS]
    biases = [masked[n]["bias"] for n in LAYERS]
    for batch in (int(b) for b in args.batches.split(",")):
      x = jax.random.normal(jax.random.PRNGKey(batch), (batch, 784))
      diff = float(
        jnp.max(jnp.abs(forward(dense_kernels, biases, x) - forward(sparse_kernels, biases, x)))
      )
      times, _ = common.interleaved_median(
        {
          "dense": lambda: common.time_call(forward, dense_kernels, biases, x),
          "bcoo": lambda: common.time_call(forward, sparse_kernels, biases, x),
        },
        args.repeats,
      )
      print(
        f"| {sparsity:.0%} | {batch} | {times['dense'] * 1e3:.3f} | {times['bcoo'] * 1e3:.3f} "
        f"| {times['bcoo'] / times['dense']:.2f} | {diff:.1e} |",
        flush=True,
      )
      rows.append(
        {
          "sparsity": sparsity,
          "batch": batch,
          "dense_s": times["dense"],
          "bcoo_s": times["bcoo"],
          "max_abs_logit_diff": diff,
        }
      )
  if args.out:
    with open(args.out, "w") as f:
      json.dump({**common.provenance(), "repeats": args.repeats, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
