"""drop_pruning under jax.jit on a mesh of 4 simulated CPU devices (explicit and auto axes).

The checks run in one subprocess with 4 devices (the suite itself has 2); it prints a
JSON report that the tests below read. Every step blocks on its result: simulated
collectives stall when many steps are queued. The mask comparisons compile without XLA's
expensive passes (about half the compile time), one of them and the HLO checks with the
default passes, as users compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 26  # pruning steps 4, 8, ..., 24 (exact at 24), then frozen


def _tx(distribution: str, packed: bool):
  """Drop Pruning with ``distribution`` ("uniform", "global"), or by name: "weighted" (the
  importance-weighted drops, per leaf), "rigl", "set"."""
  import optax

  import droppruning_jax as dp

  if distribution in ("rigl", "set"):
    method = dp.rigl if distribution == "rigl" else dp.set_pruning
    return method(
      optax.sgd(0.05, momentum=0.9),
      target_sparsity=0.8,
      update_every=4,
      end_step=24,
      packed_masks=packed,
    )
  if distribution == "weighted":
    weighted = {"drop_away": "importance", "drop_back": "gradient", "temperature": 1.0}
    distribution = "uniform"
  else:
    weighted = {}
  return dp.drop_pruning(
    optax.sgd(0.05, momentum=0.9),
    target_sparsity=0.8,
    begin_step=4,
    update_every=4,
    end_step=24,
    drop_back_prob=0.05,
    sparsity_distribution=distribution,
    regrow_init="restore",
    packed_masks=packed,
    **weighted,
  )


def _params():
  import jax
  import jax.numpy as jnp

  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {
    "a": {"kernel": jax.random.normal(k1, (64, 48)) * 0.1, "bias": jnp.zeros(48)},
    "b": {"kernel": jax.random.normal(k2, (48, 16)) * 0.1, "bias": jnp.zeros(16)},
  }


def _grads(i, params):
  """Host-made gradients: every device sees bit-identical inputs at every step."""
  import jax

  keys = jax.random.split(jax.random.PRNGKey(100 + i), len(jax.tree.leaves(params)))
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(
    treedef, [jax.random.normal(k, x.shape) * 0.01 for k, x in zip(keys, leaves)]
  )


def _train_exact(tx, params, shard):
  """Runs tx with host gradients; ``shard`` places params and grads (identity: one device)."""
  import jax
  import numpy as np
  import optax

  import droppruning_jax as dp

  @jax.jit
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  grads = [_grads(i, params) for i in range(STEPS)]  # made before placing params
  params = shard(params)
  state = tx.init(params)
  init_specs = _specs(state, params)
  for g in grads:
    params, state = step(params, state, shard(g))
    jax.block_until_ready(params)
  masks = jax.tree.map(np.asarray, dp.get_masks(state))
  return masks, init_specs, _specs(state, params)


def _specs(state, params):
  """For each state array of a param's shape (masks, stash, moments, packed bits): its spec."""
  import jax

  def spec(x):  # P() and P(None, None) both mean replicated: drop trailing Nones
    entries = list(getattr(x.sharding, "spec", ["single device"]))
    while entries and entries[-1] is None:
      entries.pop()
    return str(entries)

  shapes = {x.shape: spec(x) for x in jax.tree.leaves(params)}
  out = []
  for x in jax.tree.leaves(state):
    if x.shape in shapes:
      out.append([list(x.shape), spec(x), shapes[x.shape]])
    elif x.dtype.name == "uint8":  # packed mask bits
      out.append([list(x.shape), spec(x), None])
  return out


def _same(a, b) -> bool:
  import jax
  import numpy as np

  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


def _worker() -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import droppruning_jax as dp

  assert jax.device_count() == 4
  # The runs compare masks within this process: without XLA's expensive passes (as in the
  # suite's small-program modules, tests/conftest.py) they compile in about half the time.
  # One exact case and the compiled HLO below are checked with the default passes, as
  # users compile (unless JAX_DISABLE_MOST_OPTIMIZATIONS, inherited from the suite's
  # environment, sets one choice for the whole process).
  passes_chosen = "JAX_DISABLE_MOST_OPTIMIZATIONS" in os.environ
  if not passes_chosen:
    jax.config.update("jax_disable_most_optimizations", True)
  report = {"exact": [], "snippet": [], "hlo": []}
  meshes = {
    axes: jax.make_mesh((4,), ("data",), axis_types=(kind,))
    for axes, kind in (("explicit", AxisType.Explicit), ("auto", AxisType.Auto))
  }
  exact_cases = {  # (distribution, packed): [(axes, layout), ...]
    ("uniform", False): [("explicit", "fsdp"), ("explicit", "dp"), ("auto", "fsdp")],
    ("global", True): [("explicit", "fsdp")],
    # The other policies on the same skeleton: weighted drops per leaf (each device draws
    # its slice of the uniforms), RigL (gradient regrowth) and SET (random regrowth).
    ("weighted", False): [("explicit", "fsdp")],
    ("rigl", False): [("explicit", "fsdp")],
    ("set", True): [("explicit", "fsdp")],
  }

  def run_exact_cases(cases, label=""):
    for (distribution, packed), layouts in cases.items():
      tx = _tx(distribution, packed)
      reference, _, _ = _train_exact(tx, _params(), lambda t: t)
      for axes, layout in layouts:
        mesh = meshes[axes]

        def shard(tree, mesh=mesh, layout=layout):
          spec = lambda x: P("data") if layout == "fsdp" and x.ndim >= 2 else P()  # noqa: E731
          return jax.device_put(tree, jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), tree))

        with jax.set_mesh(mesh):
          masks, init_specs, specs = _train_exact(tx, _params(), shard)
        report["exact"].append(
          {
            "case": f"{distribution} packed={packed} {axes} {layout}{label}",
            "equal": _same(masks, reference),
            "pruned": int(sum((~np.asarray(m)).sum() for m in jax.tree.leaves(masks))),
            "init_specs": init_specs,
            "specs": specs,
          }
        )

  run_exact_cases(exact_cases)

  # The snippet of the issue: a real loss on a sharded batch, FSDP kernels, no set_mesh.
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 64))
  y = jax.random.normal(jax.random.PRNGKey(2), (32, 16))

  def loss(p, x, y):
    h = jnp.tanh(x @ p["a"]["kernel"] + p["a"]["bias"])
    return jnp.mean((h @ p["b"]["kernel"] + p["b"]["bias"] - y) ** 2)

  def grads_shard_map(mesh, p, x, y):
    # A user's step written with shard_map: per-shard gradients, then a mean over "data".
    def local(p, x, y):
      return jax.tree.map(lambda g: jax.lax.pmean(g, "data"), jax.grad(loss)(p, x, y))

    specs = jax.tree.map(lambda _: P(), p)
    return jax.shard_map(local, mesh=mesh, in_specs=(specs, P("data"), P("data")), out_specs=specs)(
      jax.tree.map(lambda a: jax.sharding.reshard(a, P()) if _sharded(a) else a, p), x, y
    )

  def _sharded(a):
    return any(s is not None for s in jax.typeof(a).sharding.spec)

  def run(tx, params, x, y, mesh=None, use_shard_map=False):
    @jax.jit
    def train_step(p, s, x, y):
      g = grads_shard_map(mesh, p, x, y) if use_shard_map else jax.grad(loss)(p, x, y)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    state = tx.init(params)
    for _ in range(STEPS):
      params, state = train_step(params, state, x, y)
      jax.block_until_ready(params)
    return jax.tree.map(np.asarray, dp.get_masks(state))

  snippet_cases = {  # distribution: [(axes, set_mesh, shard_map), ...]
    "uniform": [("explicit", False, False), ("auto", False, False), ("explicit", True, True)],
    "global": [("explicit", False, False)],
  }
  for distribution, variants in snippet_cases.items():
    tx = _tx(distribution, True)
    reference = run(tx, _params(), x, y)
    for axes, set_mesh, use_shard_map in variants:
      mesh = meshes[axes]
      fsdp = lambda a, mesh=mesh: NamedSharding(mesh, P("data") if a.ndim >= 2 else P())  # noqa: E731
      params = jax.device_put(_params(), jax.tree.map(fsdp, _params()))
      xs, ys = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, y))
      if set_mesh:
        with jax.set_mesh(mesh):
          masks = run(tx, params, xs, ys, mesh, use_shard_map)
      else:
        masks = run(tx, params, xs, ys)
      report["snippet"].append(
        {
          "case": f"{distribution} {axes} set_mesh={set_mesh} shard_map={use_shard_map}",
          "equal": _same(masks, reference),
          "pruned": int(sum((~np.asarray(m)).sum() for m in jax.tree.leaves(masks))),
        }
      )

  if not passes_chosen:  # the default passes from here on
    # As in tests/conftest.py: no program compiled in one mode is reused in the other.
    jax.clear_caches()
    jax.config.update("jax_disable_most_optimizations", False)
    run_exact_cases({("global", True): [("explicit", "fsdp")]}, label=" default passes")

  # Compiled update of FSDP-sharded kernels: no all-gather.
  # (Auto axes without set_mesh take the single-device path: docs/scale.md, measured by
  # benchmarks/sharding_hlo.py.)
  hlo_cases = [("explicit", "uniform", False), ("explicit", "global", True)]
  hlo_cases += [("auto", "global", True)]
  for axes, distribution, set_mesh in hlo_cases:
    mesh = meshes[axes]
    tx = _tx(distribution, True)
    params = jax.device_put(
      _params(),
      jax.tree.map(lambda a: NamedSharding(mesh, P("data") if a.ndim >= 2 else P()), _params()),
    )
    state = tx.init(params)
    compile_update = lambda p, s, tx=tx: (  # noqa: E731
      jax.jit(lambda g, s, p: tx.update(g, s, p)).lower(p, s, p).compile().as_text()
    )
    if set_mesh:
      with jax.set_mesh(mesh):
        hlo = compile_update(params, state)
    else:
      hlo = compile_update(params, state)
    report["hlo"].append(
      {
        "case": f"{distribution} {axes} set_mesh={set_mesh}",
        "all_gather": hlo.count(" all-gather(") + hlo.count(" all-gather-start("),
        "all_reduce": hlo.count(" all-reduce(") + hlo.count(" all-reduce-start("),
      }
    )
  return report


@pytest.fixture(scope="module")
def report() -> dict:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  env["PYTHONPATH"] = str(ROOT)
  result = subprocess.run(
    [sys.executable, str(Path(__file__))],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_sharded_masks_equal_single_device_masks(report):
  cases = report["exact"]
  default_passes = "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ
  assert len(cases) == 7 + default_passes
  for case in cases:
    assert case["equal"], case["case"]
    assert case["pruned"] > 0, case["case"]


def test_state_leaves_take_their_params_sharding(report):
  for case in report["exact"]:
    for specs in (case["init_specs"], case["specs"]):
      assert specs, case["case"]
      for shape, spec, param_spec in specs:
        if param_spec is not None:  # masks, stash, momentum: the param's spec
          assert spec == param_spec, (case["case"], shape, spec, param_spec)
        elif "fsdp" in case["case"]:  # packed bits follow the first axis when they split
          assert spec in ("['data']", "[]"), (case["case"], shape, spec)
    if "fsdp" in case["case"] and "packed=True" in case["case"]:
      assert any(s[1] == "['data']" and s[2] is None for s in case["specs"]), case["case"]


def test_issue_snippet_runs_and_matches_single_device(report):
  cases = report["snippet"]
  assert len(cases) == 4
  for case in cases:
    assert case["pruned"] == 3072, case  # exact final sparsity: round(0.8 * 3840)
    # shard_map's per-shard gradient mean rounds differently from the full-batch mean,
    # so its params (and masks) are not bit-identical to the single-device run.
    if "shard_map=False" in case["case"]:
      assert case["equal"], case


def test_compiled_sharded_update_has_no_all_gather(report):
  assert len(report["hlo"]) == 3
  for case in report["hlo"]:
    assert case["all_gather"] == 0, case
    assert case["all_reduce"] > 0, case  # the bisection counts really are sharded


if __name__ == "__main__":
  print(json.dumps(_worker()))
