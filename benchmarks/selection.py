"""Cost of selecting the c lowest-importance active weights, against the weight count.

Compares the library's sort-free bisection (``droppruning_jax.selection.lowest_scores_many``) with a
two-pass histogram radix select (exact, same result), a full
sort (lexsort by (group, score)), ``lax.top_k`` and ``lax.approx_min_k`` (the last two
need a static k, as at the exact final step), and times a whole ``dp.drop_step`` with the
uniform and with the importance-weighted drop rules.
Fits the scaling exponent ``t ~ n^a`` by least squares in log-log space.

  python -m benchmarks.selection --sizes 1e4,1e5,1e6,3e6,1e7,3e7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import droppruning_jax as dp
from benchmarks import common
from droppruning_jax import selection as library_selection


def sort_select(mask, scores, k):
  order = jnp.lexsort((scores, ~mask))
  return jnp.zeros_like(mask).at[order].set(jnp.arange(mask.size) < k)


def radix_select(mask, scores, k):
  """Exact selection by a two-pass histogram radix select (16 key bits per pass).

  Pass 1 histograms the top 16 bits of the eligible keys and finds the bin holding
  the k-th smallest; pass 2 does the same for the low 16 bits inside that bin. The
  threshold is the bisection's and the final step is the library's
  ``select_at_threshold``, so the selection is identical (tested); the passes are
  scatter-adds instead of 32 counts.
  """
  keys, eligible = library_selection.sortable_keys(scores), mask
  k = jnp.clip(k, 0, jnp.sum(eligible, dtype=jnp.int32))
  high, low = (keys >> 16).astype(jnp.int32), (keys & 0xFFFF).astype(jnp.int32)

  def find_bin(digits, weights, rank):
    cumulative = jnp.cumsum(jnp.zeros(1 << 16, jnp.int32).at[digits].add(weights))
    bin_index = jnp.sum(cumulative < rank, dtype=jnp.int32)
    before = jnp.where(bin_index > 0, cumulative[jnp.maximum(bin_index - 1, 0)], 0)
    return bin_index, rank - before

  high_bin, rank = find_bin(high, eligible.astype(jnp.int32), k)
  low_bin, _ = find_bin(low, (eligible & (high == high_bin)).astype(jnp.int32), rank)
  threshold = (high_bin.astype(jnp.uint32) << 16) | low_bin.astype(jnp.uint32)
  return library_selection.select_at_threshold(keys, eligible, threshold, k)


def make_methods(k_static):
  return {
    "bisection (default)": jax.jit(
      lambda m, s, k: library_selection.lowest_scores_many([m], [s], [k], pruned_first=False)[0]
    ),
    "histogram radix (2 x 16 bit)": jax.jit(radix_select),
    "full sort": jax.jit(sort_select),
    "lax.top_k": jax.jit(lambda m, s, k: jax.lax.top_k(-jnp.where(m, s, jnp.inf), k_static)[1]),
    "lax.approx_min_k": jax.jit(
      lambda m, s, k: jax.lax.approx_min_k(jnp.where(m, s, jnp.inf), k_static)[1]
    ),
    "drop_step (whole)": jax.jit(
      lambda m, s, k: dp.drop_step(
        jax.random.PRNGKey(0), m, s, step_sparsity=0.6, drop_away_prob=0.5, drop_back_prob=0.1
      )[0]
    ),
    # Both weighted rules: one more bisection (the probabilities of both drops) on top.
    "drop_step (whole, weighted)": jax.jit(
      lambda m, s, k: dp.drop_step(
        jax.random.PRNGKey(0),
        m,
        s,
        step_sparsity=0.6,
        drop_away_prob=0.5,
        drop_back_prob=0.1,
        drop_away="importance",
        back_evidence=1.0 - s,  # any evidence: the cost does not depend on its values
      )[0]
    ),
  }


def median_seconds(fn, args, repeats):
  jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - start)
  return statistics.median(samples)


def fit_exponent(sizes, times):
  if len(sizes) < 2:
    return float("nan")
  return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="1e4,1e5,1e6,3e6,1e7,3e7")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--max-sort-size",
    type=float,
    default=3e6,
    help="skip sort-based methods above this size (slow on CPU)",
  )
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  sizes = [int(float(s)) for s in args.sizes.split(",")]
  results = {}
  print(f"device: {common.device_description()}")
  for n in sizes:
    rng = np.random.default_rng(0)
    mask = jnp.asarray(rng.random(n) < 0.5)
    scores = jnp.asarray(rng.random(n), jnp.float32)
    k = n // 10
    for name, fn in make_methods(k).items():
      if name in ("full sort", "lax.top_k", "lax.approx_min_k") and n > args.max_sort_size:
        continue
      seconds = median_seconds(fn, (mask, scores, k), args.repeats)
      results.setdefault(name, {})[n] = seconds
      print(f"n={n:>10,}  {name:<20} {seconds * 1e3:10.2f} ms", flush=True)
  print("\n| method | " + " | ".join(f"n={n:.0e}" for n in sizes) + " | exponent |")
  print("|---|" + "---|" * (len(sizes) + 1))
  for name, by_size in results.items():
    cells = [f"{by_size[n] * 1e3:.2f} ms" if n in by_size else "—" for n in sizes]
    exponent = fit_exponent(list(by_size), list(by_size.values()))
    print(f"| {name} | " + " | ".join(cells) + f" | {exponent:.2f} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(
        {
          **common.provenance(),
          "repeats": args.repeats,
          "seconds": {m: {str(n): t for n, t in v.items()} for m, v in results.items()},
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
