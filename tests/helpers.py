"""Shared test helpers: a toy parameter tree and a train step for the library's tests;
synthetic IDX data and subprocess runs for the experiment runner's tests."""

import gzip
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import droppruning_jax as dp


def toy_params(seed: int = 0):
  """Two prunable kernels (one conv-shaped), a bias and a norm scale."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {
    "dense": {"kernel": jax.random.normal(k1, (30, 20)), "bias": jnp.zeros(20)},
    "conv": {"kernel": jax.random.normal(k2, (3, 3, 4, 6))},
    "norm": {"scale": jnp.ones(6)},
    "out": {"kernel": jax.random.normal(k3, (20, 5))},
  }


def random_grads(params, step: int):
  """Gradients that differ at every step, deterministic in ``step``."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1000 + step), len(leaves))
  return jax.tree.unflatten(
    treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  )


def make_step(tx: optax.GradientTransformation, **update_kwargs):
  """``(params, state, grads) -> (params, state)``; ``update_kwargs`` go to ``tx.update``
  (e.g. ``skip_mask_update=True``)."""

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **update_kwargs)
    return optax.apply_updates(params, updates), state

  return step


# --- experiment runs ------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]

# A training run in a subprocess with one CPU device: ``python -c TRAIN_WORKER
# '<config fields as JSON>' <workdir>`` (lists become tuples, as ConfigDict fields).
TRAIN_WORKER = """
import sys, json
import jax
jax.config.update("jax_num_cpu_devices", 1)
from experiments import train
from experiments.configs import default
config = default.get_config()
for name, value in json.loads(sys.argv[1]).items():
  config[name] = tuple(value) if isinstance(value, list) else value
train.train_and_evaluate(config, sys.argv[2])
"""


def run_masks(tx, steps, params=None, check_zeros=True, jit=True):
  """Trains the toy params ``steps`` steps on ``random_grads``; ``(params, state, masks after
  each step)``, checking after each step that every pruned weight is exactly 0."""
  params = toy_params() if params is None else params
  state = tx.init(params)
  step = jax.jit(make_step(tx)) if jit else make_step(tx)
  history = []
  for t in range(steps):
    params, state = step(params, state, random_grads(params, t))
    masks = dp.get_masks(state)
    if check_zeros:
      for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
        if m.ndim:
          assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0), f"nonzero pruned weight at step {t}"
    history.append(masks)
  return params, state, history


def write_idx(path: Path, array: np.ndarray) -> None:
  """``array`` as a gzipped IDX file of unsigned bytes (the MNIST file format)."""
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_learnable_idx_dir(folder: Path, train_count: int = 256, test_count: int = 100) -> Path:
  """Synthetic MNIST-layout IDX files whose labels are learnable (mean brightness)."""
  from experiments import data as data_lib  # the library's tests do not need experiments/

  rng = np.random.default_rng(0)
  for split, count in (("train", train_count), ("test", test_count)):
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 100, size=(count, 28, 28)) + 15 * labels[:, None, None]
    images_name, labels_name = data_lib.IDX_FILENAMES[split]
    write_idx(folder / f"{images_name}.gz", images)
    write_idx(folder / f"{labels_name}.gz", labels)
  return folder


def small_config(config, **overrides):
  """A config shrunk to a few steps; ``overrides`` win."""
  config.progress = False
  config.num_epochs = 1
  # 16 steps: the drop schedules of the configs (91-95 %) need >= 10 pruning steps.
  config.batch_size = 8
  config.eval_batch_size = 32
  config.max_train_examples = 128
  config.max_test_examples = 64
  config.prune_begin_epoch = 0.0
  config.prune_end_epoch = 1.0
  config.update_every = 1
  for name, value in overrides.items():
    config[name] = value
  return config


def idx_config(idx_dir: Path, **overrides):
  """A small LeNet-300-100 run (one epoch of 16 steps) on the IDX files of ``idx_dir``."""
  from experiments.configs import default

  config = small_config(
    default.get_config(),
    dataset="fashion_mnist",
    model="lenet300",
    idx_dir=str(idx_dir),
    max_train_examples=None,
    max_test_examples=None,
    batch_size=16,
    eval_batch_size=50,
    target_sparsity=0.9,
  )
  for name, value in overrides.items():
    config[name] = value
  return config


def final_state(workdir: Path) -> dict:
  """The training state of the newest checkpoint of a run."""
  from experiments import checkpoints

  checkpoint = checkpoints.restore_checkpoint(workdir)
  assert checkpoint is not None
  return checkpoint["state"]


def assert_exact_final_sparsity(
  summary: dict, workdir: Path, target: float, pooled: bool = False
) -> None:
  """The last pruning step is exact, counted in the saved masks, and the summary reports
  those counts: every prunable layer has round(n * target) pruned, or with one global pool
  (``pooled``) all of them together have round(total * target) pruned."""
  import pytest  # only the tests need it

  masks = [
    np.asarray(m) for m in jax.tree.leaves(final_state(workdir)["opt_state"]["masks"]) if np.ndim(m)
  ]
  pruned = [int(np.sum(~m)) for m in masks]
  total = sum(m.size for m in masks)
  if pooled:
    assert sum(pruned) == round(total * target)
  else:
    assert pruned == [round(m.size * target) for m in masks]
  assert summary["sparsity"] == pytest.approx(sum(pruned) / total, rel=1e-12)
  assert sorted(summary["layer_sparsity"].values()) == pytest.approx(
    sorted(k / m.size for k, m in zip(pruned, masks)), rel=1e-12
  )


def subprocess_env(**extra: str) -> dict:
  """The environment of a subprocess run from the repository root, one CPU device per
  process (no simulated-device flags); the test run's compilation cache is inherited."""
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "XLA_FLAGS": "", **extra}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_two_processes(fields: dict, workdir: Path, timeout: int = 120) -> None:
  """Trains ``fields`` (a config's non-default fields) in two processes of one CPU device
  each, joined by ``jax.distributed``; skips the test if this JAX's CPU backend has no
  cross-process collectives, fails it if a process fails or times out."""
  import pytest  # only the tests need it

  port = free_port()
  workers = [
    subprocess.Popen(
      [
        sys.executable,
        "-c",
        TRAIN_WORKER,
        json.dumps(
          {
            **fields,
            "multihost": True,
            "coordinator_address": f"localhost:{port}",
            "num_processes": 2,
            "process_id": process_id,
          }
        ),
        str(workdir),
      ],
      env=subprocess_env(),
      cwd=REPO_ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for process_id in range(2)
  ]
  outputs = []
  for worker in workers:
    try:
      outputs.append(worker.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for w in workers:
        w.kill()
      pytest.fail(f"the two processes did not finish in {timeout} s")
  if any(w.returncode for w in workers) and any(
    "collective" in out.lower() and "not implemented" in out.lower() for out in outputs
  ):
    pytest.skip("this JAX's CPU backend has no cross-process collectives")
  assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
