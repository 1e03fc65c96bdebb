"""Collectives in the compiled mask update of a sharded model, on simulated CPU devices.

Compiles ``tx.update`` (with and without the mask-update conditional) of ``drop_pruning``
for kernels sharded on their first axis (FSDP-style)
over a mesh of simulated CPU devices, and counts the collectives in the compiled HLO:
all-reduce, all-gather (and whether any gathers a kernel-sized operand),
reduce-scatter, all-to-all, collective-permute. Writes a JSON.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python -m benchmarks.sharding_hlo --devices 8 --out docs/benchmarks/sharding_hlo.json

``--model vit`` does the same for the experiments' ViT (every parameter annotated) on a 2x2
``("data", "model")`` mesh (tensor parallel x FSDP, auto axes under ``jax.set_mesh``) with
``drop_pruning(optax.adamw(...))``, and records the bytes of each kind of state per device.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
    python -m benchmarks.sharding_hlo --model vit --out docs/benchmarks/sharding_hlo_vit_4dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys


def _count(hlo: str) -> dict:
  ops = ["all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute"]
  counts = {}
  for op in ops:
    counts[op] = len(re.findall(rf" {op}(?:-start)?\(", hlo))
  return counts


def _computations(hlo: str) -> dict[str, str]:
  """HLO text split into its computations, by name."""
  blocks, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header and not line.startswith(" "):
      name = header.group(1)
      blocks[name] = ""
    elif name is not None:
      blocks[name] += line + "\n"
  return blocks


def _loops(hlo: str) -> list[dict]:
  """Every while loop: trip count if known, and the collectives of its body (per pass)."""
  blocks = _computations(hlo)
  loops = []
  for line in hlo.splitlines():
    found = re.search(r"while\(.*body=%?([\w.\-]+)", line)
    if found:
      trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      body = blocks.get(found.group(1), "")
      loops.append({"trip_count": int(trip.group(1)) if trip else None, "per_pass": _count(body)})
  return loops


def _gathered_shapes(hlo: str) -> list[str]:
  return re.findall(r"= (.*?) all-gather(?:-start)?\(", hlo)


def measure(devices: int, axis_type: str, distribution: str, shape: tuple[int, int]) -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import droppruning_jax as dp

  kind = AxisType.Explicit if axis_type == "explicit" else AxisType.Auto
  mesh = jax.make_mesh((devices,), ("fsdp",), axis_types=(kind,))
  rows, cols = shape
  params = {
    "a": {"kernel": jnp.ones((rows, cols)), "bias": jnp.zeros(cols)},
    "b": {"kernel": jnp.ones((rows, cols)), "bias": jnp.zeros(cols)},
  }
  tx = dp.drop_pruning(
    optax.sgd(0.1, momentum=0.9),
    target_sparsity=0.8,
    begin_step=4,
    update_every=4,
    end_step=40,
    sparsity_distribution=distribution,
    packed_masks=True,
  )
  specs = jax.tree.map(lambda x: P("fsdp") if x.ndim >= 2 else P(), params)
  result = {"devices": devices, "axes": axis_type, "distribution": distribution}
  with jax.set_mesh(mesh):
    params = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs))
    state = tx.init(params)  # eager: every state leaf takes its param's sharding
    result["state_shardings"] = sorted(
      {f"{x.shape}: {x.sharding.spec}" for x in jax.tree.leaves(state) if x.ndim >= 1}
    )
    # The switch holds the stochastic and the exact branch: each has a 32-pass
    # threshold bisection and an index bisection that runs only on ties.
    result.update(_compiled_updates(tx, params, state, rows * cols // 2))
  return result


def _compiled_updates(tx, params, state, big_elements: int) -> dict:
  import jax

  result = {}
  for key, skip in (("update_with_mask_update", False), ("update_without_mask_update", True)):
    hlo = (
      jax.jit(lambda g, s, p, skip=skip: tx.update(g, s, p, skip_mask_update=skip))
      .lower(params, state, params)
      .compile()
      .as_text()
    )
    result[key] = {
      "collectives": _count(hlo),
      "kernel_sized_all_gathers": [
        s for s in _gathered_shapes(hlo) if _elements(s) >= big_elements
      ],
      "loops": [loop for loop in _loops(hlo) if any(loop["per_pass"].values())],
    }
  return result


def _device_bytes(tree, device) -> int:
  """Bytes of ``tree``'s arrays that live on ``device``."""
  import jax

  return sum(
    shard.data.nbytes
    for x in jax.tree.leaves(tree)
    for shard in x.addressable_shards
    if shard.device == device
  )


def measure_vit(distribution: str) -> dict:
  """The ViT's pruning update on a 2x2 (data, model) mesh: collectives and state bytes."""
  import jax
  import optax
  from flax import nnx
  from jax.sharding import AxisType

  import droppruning_jax as dp
  from experiments import models

  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  tx = dp.drop_pruning(
    optax.adamw(1e-3),
    target_sparsity=0.9,
    begin_step=4,
    update_every=4,
    end_step=40,
    sparsity_distribution=distribution,
  )
  with jax.set_mesh(mesh):
    model = models.ViT(rngs=nnx.Rngs(0))  # placed by its annotations
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = tx.init(params)
    masks = dp.get_masks(state)
    device = jax.devices()[0]
    bytes_on_device0 = {
      "params": _device_bytes(params, device),
      "masks": _device_bytes(state.masks, device),
      "adam_state": _device_bytes(state.inner_state, device),
    }
    largest = max(x.size for x in jax.tree.leaves(params))
    result = {
      "model": "vit",
      "mesh": "2x2 (data, model), auto axes",
      "distribution": distribution,
      "params_total": sum(x.size for x in jax.tree.leaves(params)),
      "params_bytes_total": sum(x.nbytes for x in jax.tree.leaves(params)),
      "bytes_on_device_0": bytes_on_device0,
      "mask_shardings": sorted(
        {f"{x.shape}: {x.sharding.spec}" for x in jax.tree.leaves(masks) if x.ndim >= 1}
      ),
      **_compiled_updates(tx, params, state, largest // 2),
    }
  return result


def _elements(shape_text: str) -> int:
  total = 0
  for dims in re.findall(r"\[([\d,]*)\]", shape_text):
    n = 1
    for d in dims.split(","):
      if d:
        n *= int(d)
    total = max(total, n)
  return total


def state_bytes_table() -> list[dict]:
  """Bytes per device of each state array for 1e8-1e9 float32 params fully sharded (FSDP).

  Per parameter: bool mask 1 byte, packed mask 1/8, stash (``regrow_init="restore"``) 4,
  SGD momentum 4, Adam moments 8; the params themselves 4.
  """
  rows = []
  for params in (10**8, 10**9):
    for devices in (8, 64, 256):
      per = params / devices
      rows.append(
        {
          "params": params,
          "devices": devices,
          "params_per_device": int(per),
          "MiB": {
            "params_f32": round(4 * per / 2**20, 2),
            "mask_bool": round(per / 2**20, 2),
            "mask_packed": round(per / 8 / 2**20, 2),
            "stash_f32": round(4 * per / 2**20, 2),
            "momentum_f32": round(4 * per / 2**20, 2),
            "adam_moments_f32": round(8 * per / 2**20, 2),
          },
          "bisection_reads_MiB_per_update": round(32 * 5 * per / 2**20, 2),
        }
      )
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--rows", type=int, default=1024)
  parser.add_argument("--cols", type=int, default=256)
  parser.add_argument("--out", default="docs/benchmarks/sharding_hlo.json")
  parser.add_argument("--model", choices=("kernels", "vit"), default="kernels")
  args = parser.parse_args(argv)
  devices = 4 if args.model == "vit" else args.devices
  flag = f"--xla_force_host_platform_device_count={devices}"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    sys.exit(f"run with XLA_FLAGS={flag}")
  if args.model == "vit":
    report = {
      "command": " ".join(["python -m benchmarks.sharding_hlo", *sys.argv[1:]]),
      "runs": [measure_vit(dist) for dist in ("uniform", "global")],
    }
    _write(report, args.out)
    return
  runs = [
    measure(args.devices, axes, dist, (args.rows, args.cols))
    for axes in ("explicit", "auto")
    for dist in ("uniform", "global")
  ]
  report = {
    "command": " ".join(["python -m benchmarks.sharding_hlo", *sys.argv[1:]]),
    "runs": runs,
    "state_bytes_per_device": state_bytes_table(),
  }
  _write(report, args.out)


def _write(report: dict, out: str) -> None:
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w") as f:
    json.dump(report, f, indent=1)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
