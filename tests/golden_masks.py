"""Masks recorded from fixed-seed runs of every pruning policy, and the runs that make them.

``tests/test_golden_masks.py`` replays the runs and asserts the masks are identical bit
for bit to ``tests/data/golden_masks.npz``: a refactoring must not change a single
mask for the same seed. ``python -m tests.golden_masks --write`` records them again
(only for an intended change of the algorithm, stated in the commit message).
"""

import argparse
import pathlib

import jax
import numpy as np
import optax

import droppruning_jax as dp
from tests import helpers

GOLDEN_PATH = pathlib.Path(__file__).parent / "data" / "golden_masks.npz"
NUM_STEPS = 32
COMMON = dict(target_sparsity=0.8, begin_step=2, end_step=27, update_every=3, seed=3)
DYNAMIC = dict(target_sparsity=0.8, end_step=27, update_every=3, seed=3)  # no begin_step


def _drop(**kwargs):
  return lambda inner: dp.drop_pruning(inner, **{**COMMON, **kwargs})


CASES = {
  "drop_default": _drop(),
  "drop_scale_pruned": _drop(drop_back_prob=0.02, drop_back_scale="pruned"),
  "drop_random_importance": _drop(importance="random"),
  "drop_global": _drop(sparsity_distribution="global"),
  "drop_global_random": _drop(sparsity_distribution="global", importance="random"),
  "drop_global_weighted": _drop(
    sparsity_distribution="global", drop_away="importance", drop_back="gradient"
  ),
  "drop_global_stash": _drop(
    sparsity_distribution="global", drop_away="importance", drop_back="stash", temperature=0.5
  ),
  "drop_erk": _drop(sparsity_distribution="erk"),
  "drop_mapping": _drop(sparsity_distribution={"dense/*": 0.85, "conv/*": 0.5, "out/*": 0.8}),
  "drop_restore": _drop(regrow_init="restore"),
  "drop_packed": _drop(packed_masks=True),
  "drop_annealed": _drop(
    drop_away_prob=dp.cosine_anneal(0.5, 1.0, 2, 27),
    drop_back_prob=dp.cosine_anneal(0.2, 0.0, 2, 27),
  ),
  "drop_initial": _drop(initial_sparsity=0.3, drop_away_prob=0.8, drop_back_prob=0.05),
  "drop_weighted": _drop(drop_away="importance", drop_back="gradient", temperature=1.0),
  "drop_stash": _drop(drop_away="importance", drop_back="stash", temperature=0.5),
  "drop_saliency": _drop(importance="saliency"),
  "rigl": lambda inner: dp.rigl(inner, **DYNAMIC),
  "set": lambda inner: dp.set_pruning(inner, **DYNAMIC, sparsity_distribution="erk"),
  "gradual": lambda inner: dp.gradual_magnitude_pruning(inner, **COMMON),
  "random": lambda inner: dp.random_pruning(inner, **COMMON),
  "han_quality": lambda inner: dp.han_pruning(inner, pruning_steps=[3, 9, 20], quality=0.7),
  "han_rates": lambda inner: dp.han_pruning(
    inner, pruning_steps=[3, 9, 20], layer_rates={"dense/*": 0.9, "conv/*": 0.6, "out/*": 0.7}
  ),
}


def run_case(name: str) -> dict[str, np.ndarray]:
  """Trains the toy params for ``NUM_STEPS``; returns the masks after every step, bit-packed."""
  tx = CASES[name](optax.sgd(0.05, momentum=0.9))
  params = helpers.toy_params(0)
  state = tx.init(params)
  step = jax.jit(helpers.make_step(tx))
  out = {}
  for t in range(NUM_STEPS):
    params, state = step(params, state, helpers.random_grads(params, t))
    leaves = [np.asarray(m) for m in jax.tree.leaves(dp.get_masks(state)) if np.ndim(m) > 0]
    out[f"{name}/{t}"] = np.packbits(np.concatenate([m.reshape(-1) for m in leaves]))
  return out


def record() -> dict[str, np.ndarray]:
  out = {}
  for name in CASES:
    out.update(run_case(name))
  return out


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--write", action="store_true", help="overwrite the recorded masks")
  args = parser.parse_args()
  masks = record()
  if args.write:
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **masks)
    print(f"wrote {len(masks)} mask sets to {GOLDEN_PATH}")
  else:
    print(f"recorded {len(masks)} mask sets (not written; pass --write)")
