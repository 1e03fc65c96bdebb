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
* The longest modules first: ``make test`` hands whole modules to its worker processes in
  collection order (``--dist loadfile``; ``pytest_configure`` below turns off xdist's
  default order, most tests first, which put the 4-test sharding module with its
  two-minute subprocess last), so that no long module keeps one worker busy at the end.
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


# The modules that take the longest (over a minute of a worker's time each, measured with
# `pytest --junitxml`), longest first; the others follow in their usual order. Only the
# order changes: a module missing here or renamed just runs later.
LONGEST_MODULES = (
  "test_experiments",
  "test_importance_drop",
  "test_sharding",
  "test_parallel",
  "test_wrapper",
  "test_methods_cli",
  "test_run_safety",
  "test_golden_masks",
  "test_vit",
  "test_benchmarks",
  "test_packed_masks",
  "test_edges",
  "test_drop",
  "test_dynamic_sparse",
)


def pytest_configure(config):
  # xdist's --no-loadscope-reorder, set here rather than in addopts so that the suite
  # still runs without xdist (``pytest -p no:xdist``).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
  # A stable sort: a module's tests keep their order.
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


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
