"""Test set-up, run before any JAX backend is initialised.

* Two simulated CPU devices, for the pmap and sharding tests.
* One persistent compilation cache for the whole test run, also used by the
  subprocesses the tests start (they inherit the environment): programs that several
  tests, runs or processes build alike (the experiment runs with the same shapes, a
  resumed run, the second process of a pair) compile once. Results are the same with
  or without it; a cache folder named in the environment is kept.
* XLA's expensive compiler passes off in the modules whose programs are small
  (``jax_disable_most_optimizations``): their time goes into compiling, and skipping the
  passes nearly halves it there. The modules that train real runs (and share the
  ``finished_run`` results, or start subprocesses) set ``DEFAULT_COMPILER_PASSES = True``
  and keep the default passes, where a slower program would cost more than the saved
  compiling. The passes change the rounding of some results, so a module never mixes
  the two; the masks do not depend on them here (the golden masks, recorded with the
  default passes, are replayed without them bit for bit). Setting ``JAX_DISABLE_MOST_OPTIMIZATIONS``
  (0 or 1) in the environment applies that choice to the whole suite instead.
* The fixtures shared by the experiment runner's test modules (with pytest-xdist, as
  ``make test`` runs the suite, each worker process builds its own; the compilation cache
  is set up once, by the first process, and inherited by the workers).
"""

import atexit
import json
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="droppruning-jax-tests-cache-")
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import chex  # noqa: E402  (after the environment: it imports jax)
import jax  # noqa: E402
import pytest  # noqa: E402

from tests import helpers  # noqa: E402

chex.set_n_cpu_devices(2)


@pytest.fixture(autouse=True, scope="module")
def _compiler_passes(request):
  """Skips XLA's expensive passes for the module unless it sets DEFAULT_COMPILER_PASSES
  (or the environment decides for the whole suite)."""
  if "JAX_DISABLE_MOST_OPTIMIZATIONS" in os.environ:
    yield
    return
  fast = not getattr(request.module, "DEFAULT_COMPILER_PASSES", False)
  if fast != jax.config.read("jax_disable_most_optimizations"):
    # The passes change the rounding of some results (not the masks), so no program
    # compiled in one mode may be reused in the other: drop the in-memory caches (the
    # persistent one keys on the compile options).
    jax.clear_caches()
    jax.config.update("jax_disable_most_optimizations", fast)
  yield


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
  """Synthetic MNIST-layout IDX files (256 train, 100 test) with learnable labels."""
  return helpers.write_learnable_idx_dir(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  """``finished_run(config) -> (summary, workdir)``: a finished training run, memoised on
  the config, so that tests comparing against the same reference run train it once."""
  from experiments import train

  runs = {}

  def run(config):
    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    if key not in runs:
      workdir = tmp_path_factory.mktemp("run")
      runs[key] = (train.train_and_evaluate(config, workdir), workdir)
    return runs[key]

  return run
