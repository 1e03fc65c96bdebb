"""RigL and SET (droppruning_jax.dynamic_sparse): exact sparsity from init on, the RigL
and SET updates against a NumPy reference (SET's with the documented key of every step),
SET's regrowth distribution, regrown weights and moments, seeds, jit, pmap, resume and
packed masks."""

import functools
import math

import chex
import flax.jax_utils
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from droppruning_jax import dynamic_sparse
from tests.helpers import make_step, random_grads

TARGET = 0.8
END = 7
EVERY = 2
STEPS = 9  # counts 0..8: topology updates at 2, 4 and 6, frozen from 7 on
UPDATES = (2, 4, 6)
SHAPES = {"w1": (24, 16), "w2": (16, 4)}
METHODS = {"rigl": dp.rigl, "set": dp.set_pruning}


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {
    "w1": {"kernel": jax.random.normal(k1, SHAPES["w1"]) * 0.3, "bias": jnp.zeros(16)},
    "w2": {"kernel": jax.random.normal(k2, SHAPES["w2"]) * 0.3},
  }


def _tx(method, inner=None, **kwargs):
  kwargs = {"target_sparsity": TARGET, "end_step": END, "update_every": EVERY, **kwargs}
  return METHODS[method](optax.adam(1e-2) if inner is None else inner, **kwargs)


@functools.cache
def _setup(method, distribution, packed, seed):
  tx = _tx(method, sparsity_distribution=distribution, packed_masks=packed, seed=seed)
  return tx, jax.jit(make_step(tx))


def _step(method, distribution="uniform", packed=False, seed=0):
  """The jitted ``(params, state, grads) -> (params, state)`` of a configuration (cached)."""
  return _setup(method, distribution, packed, seed)[1]


@functools.cache
def _run(method, distribution, packed, seed):
  tx, step = _setup(method, distribution, packed, seed)
  params = _params()
  state = tx.init(params)
  history = [(params, state)]
  for t in range(STEPS):
    params, state = step(params, state, random_grads(params, t))
    history.append((params, state))
  return history


def _history(method, distribution="uniform", packed=False, seed=0):
  """``[(params, state)]`` after init and after each of the counts 0..STEPS-1 (jitted, cached)."""
  return _run(method, distribution, packed, seed)


def _kernels(tree):
  return {name: np.asarray(tree[name]["kernel"]) for name in SHAPES}


def _expected_pruned(distribution):
  """Pruned weights per kernel, derived here: ``round(n * target)``, or ERK by its formula."""
  sizes = {name: math.prod(shape) for name, shape in SHAPES.items()}
  if distribution == "uniform":
    return {name: round(n * TARGET) for name, n in sizes.items()}
  # ERK: density eps * sum(shape) / prod(shape), eps from the kept budget (no layer is
  # dense at this target: both densities stay below 1).
  eps = (1 - TARGET) * sum(sizes.values()) / sum(sum(s) for s in SHAPES.values())
  density = {name: eps * sum(SHAPES[name]) / sizes[name] for name in SHAPES}
  assert all(d < 1 for d in density.values())
  return {name: round(sizes[name] * (1 - density[name])) for name in SHAPES}


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_exact_sparsity_from_init_on_and_pruned_weights_exactly_zero(method, distribution):
  expected = _expected_pruned(distribution)
  # By hand: 384 * 0.8 = 307.2, 64 * 0.8 = 51.2; ERK: eps = 0.2 * 448 / (40 + 20) = 1.4933,
  # densities 40 eps / 384 and 20 eps / 64 keep 59.73 and 29.87 weights.
  assert expected == ({"w1": 307, "w2": 51} if distribution == "uniform" else {"w1": 324, "w2": 34})
  history = _history(method, distribution)
  previous = None
  for i, (params, state) in enumerate(history):
    masks = _kernels(dp.get_masks(state))
    assert {name: int((~m).sum()) for name, m in masks.items()} == expected, f"entry {i}"
    assert dp.get_masks(state)["w1"]["bias"].shape == ()  # not prunable
    if i > 0:  # the first update zeroes the weights the random topology pruned
      for name, param in _kernels(params).items():
        assert np.all(param[~masks[name]] == 0.0)
      count = i - 1
      stats = dp.get_stats(state)
      if count in UPDATES:
        assert int(stats.last_step) == count
        assert int(stats.dropped_away) == int(stats.dropped_back)
      else:  # no update: unchanged, and frozen from END on
        for name in SHAPES:
          np.testing.assert_array_equal(masks[name], previous[name])
    previous = masks
  assert int(dp.get_stats(history[-1][1]).total_dropped_back) > 0


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_regrown_weights_start_at_zero_with_zero_adam_moments(method):
  history = _history(method)
  regrown_seen = 0
  for (_, old_state), (params, state) in zip(history, history[1:]):
    old, new = _kernels(dp.get_masks(old_state)), _kernels(dp.get_masks(state))
    moments = [optax.tree_utils.tree_get(state.inner_state, k) for k in ("mu", "nu")]
    for name in SHAPES:
      regrown = new[name] & ~old[name]
      regrown_seen += int(regrown.sum())
      np.testing.assert_array_equal(_kernels(params)[name][regrown], 0.0)
      for moment in moments:
        values = np.asarray(moment[name]["kernel"])
        np.testing.assert_array_equal(values[regrown], 0.0)
        np.testing.assert_array_equal(values[~new[name]], 0.0)
  assert regrown_seen > 0


def _numpy_dynamic_sparse(lr, alpha, steps, init_masks=None, set_seed=None):
  """RigL with plain SGD, in NumPy: masked gradient step, then drop by |w| and regrow by
  the dense |g| at the update counts; argsort (stable: ties by flat index) for the choices.

  With ``set_seed``, SET instead: the inactive weights of lowest documented key regrow, the
  key of prunable leaf ``i`` at count ``t`` being ``bits(fold_in(fold_in(PRNGKey(seed), t),
  i))`` (uint32 of the leaf's shape)."""
  p = _kernels(_params())
  if init_masks is None:
    init_masks = _kernels(dp.get_masks(_history("rigl")[0][1]))
  m = {name: mask.copy() for name, mask in init_masks.items()}
  masks = []
  for t in range(steps):
    g = _kernels(random_grads(_params(), t))
    new = {}
    for name in SHAPES:
      candidate = p[name] + np.float32(-lr) * np.where(m[name], g[name], np.float32(0))
      flat = m[name].reshape(-1).copy()
      if t % EVERY == 0 and 0 < t < END:
        d = alpha * (1 + math.cos(math.pi * t / END)) / 2
        x = d * flat.sum()
        assert abs(x - math.floor(x) - 0.5) > 1e-3  # float32 rounding cannot matter
        k = round(x)
        active = np.flatnonzero(flat)
        drop = active[np.argsort(np.abs(candidate.reshape(-1)[active]), kind="stable")[:k]]
        flat[drop] = False
        inactive = np.flatnonzero(~flat)
        if set_seed is None:
          grow_scores = -np.abs(g[name].reshape(-1)[inactive])
        else:
          step_key = jax.random.fold_in(jax.random.PRNGKey(set_seed), t)
          # Leaf i of the prunable leaves in flatten order (sorted keys; biases skipped).
          leaf_key = jax.random.fold_in(step_key, sorted(SHAPES).index(name))
          bits = np.asarray(jax.random.bits(leaf_key, SHAPES[name], jnp.uint32))
          grow_scores = bits.reshape(-1)[inactive]
        flat[inactive[np.argsort(grow_scores, kind="stable")[:k]]] = True
      new[name] = flat.reshape(m[name].shape)
      p[name] = np.where(new[name] & m[name], candidate, np.float32(0))
    m = new
    masks.append({name: mask.copy() for name, mask in m.items()})
  return masks, p


def _assert_run_matches(tx, params, state, reference, ref_params):
  """The jitted run from ``(params, state)`` has the reference's masks after every count
  (and changes them somewhere), and its final kernels."""
  step = jax.jit(make_step(tx))
  changed = 0
  for t in range(STEPS):
    old = _kernels(dp.get_masks(state))
    params, state = step(params, state, random_grads(params, t))
    ours = _kernels(dp.get_masks(state))
    for name in SHAPES:
      np.testing.assert_array_equal(ours[name], reference[t][name], err_msg=f"{name} count {t}")
      changed += int((ours[name] != old[name]).sum())
  assert changed > 0
  for name, value in _kernels(params).items():
    np.testing.assert_array_equal(value, ref_params[name])


def test_rigl_matches_numpy_reference():
  lr, alpha = 0.125, 0.5  # a power of two: p - lr g is exact in float32 on both sides
  tx = _tx("rigl", optax.sgd(lr), drop_fraction=alpha)
  params = _params()
  state = tx.init(params)
  chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(_history("rigl")[0][1]))
  reference, ref_params = _numpy_dynamic_sparse(lr, alpha, STEPS)
  _assert_run_matches(tx, params, state, reference, ref_params)


def test_set_matches_numpy_reference_with_the_documented_keys():
  # The update at count t draws from fold_in(PRNGKey(seed), t), so a seed other than the
  # default and the three updates of the run check the key at every step, not only at init.
  lr, alpha, seed = 0.125, 0.5, 11
  tx = _tx("set", optax.sgd(lr), drop_fraction=alpha, seed=seed)
  params = _params()
  state = tx.init(params)
  reference, ref_params = _numpy_dynamic_sparse(
    lr, alpha, STEPS, init_masks=_kernels(dp.get_masks(state)), set_seed=seed
  )
  _assert_run_matches(tx, params, state, reference, ref_params)


def test_dropped_weight_may_be_regrown_in_the_same_update_and_ties_go_to_lowest_index():
  mask = jnp.asarray([True, True, True, False, False, False, False, False])
  weights = jnp.asarray([0.5, 0.5, 2.0, 0, 0, 0, 0, 0])  # a tie: index 0 is dropped
  drop_keys = dynamic_sparse.magnitude_keys([weights])

  @jax.jit
  def update(grads):
    grow = dynamic_sparse.gradient_regrowth(None, [weights], [grads])
    return dynamic_sparse.drop_and_regrow([mask], drop_keys, grow, 1 / 3)[0]

  # k = 1. The dropped weight has the largest gradient: it is regrown, nothing changes.
  same = np.asarray(update(jnp.asarray([9.0, 0, 0, 1, 3, 3, 0, 0])))
  np.testing.assert_array_equal(same, np.asarray(mask))
  # Otherwise the tie |g| = 3 goes to the lower index, 4.
  moved = np.asarray(update(jnp.asarray([0.0, 0, 0, 1, -3, 3, 0, 0])))
  np.testing.assert_array_equal(moved, [False, True, True, False, True, False, False, False])


def test_set_regrows_uniformly_among_the_inactive_weights():
  n, trials, fraction = 200, 4000, 0.2
  mask = jnp.arange(n) % 4 == 0  # 50 active
  weights = jnp.linspace(1.0, 2.0, n)  # distinct: the drop is the same in every trial
  drop_keys = dynamic_sparse.magnitude_keys([weights])

  @jax.jit
  def regrow_many(keys):
    def one(key):
      grow = dynamic_sparse.random_regrowth(key, [weights], None)
      return dynamic_sparse.drop_and_regrow([mask], drop_keys, grow, fraction)[0]

    return jax.vmap(one)(keys)

  new = np.asarray(regrow_many(jax.random.split(jax.random.PRNGKey(7), trials)))
  k = round(fraction * 50)
  dropped = np.arange(0, 4 * k, 4)  # the k active weights of lowest magnitude
  after = np.asarray(mask).copy()
  after[dropped] = False
  inactive = np.flatnonzero(~after)  # 150 pruned before + k dropped now
  assert np.all(new[:, after])
  assert np.all(new[:, inactive].sum(axis=1) == k)
  # Each inactive weight is regrown with probability k / |inactive| in each trial.
  prob = k / inactive.size
  counts = new[:, inactive].sum(axis=0)
  sd = math.sqrt(trials * prob * (1 - prob))
  assert np.all(np.abs(counts - trials * prob) < 6 * sd), (counts.min(), counts.max())
  # The just-dropped weights together: hypergeometric per trial (k drawn from |inactive|).
  big_n, small_k = inactive.size, dropped.size
  var = k * (small_k / big_n) * (1 - small_k / big_n) * (big_n - k) / (big_n - 1)
  total = new[:, dropped].sum()
  assert abs(total - trials * k * small_k / big_n) < 6 * math.sqrt(trials * var)


def test_drop_fraction_schedules():
  for t, expected in ((0, 0.3), (25, 0.3 * (1 + math.cos(math.pi / 4)) / 2), (50, 0.15), (100, 0)):
    value = float(dynamic_sparse.drop_fraction_at(jnp.int32(t), 0.3, 100, "cosine"))
    assert value == pytest.approx(expected, abs=1e-7)
    assert float(dynamic_sparse.drop_fraction_at(jnp.int32(t), 0.3, 100, "constant")) == (
      pytest.approx(0.3)
    )


def test_same_seed_same_masks_different_seed_different_masks():
  first = _history("set")
  again = _tx("set").init(_params())  # a new instance, same seed
  chex.assert_trees_all_equal(dp.get_masks(again), dp.get_masks(first[0][1]))
  # A new instance with the same seed also draws the same regrowth (test_jit_and_no_jit_...)
  # and continues a restored run identically (test_resume_...); another seed draws another
  # topology.
  for seed in (1, 2):
    other = _kernels(dp.get_masks(_tx("set", seed=seed).init(_params())))
    mine = _kernels(dp.get_masks(first[0][1]))
    assert any(np.any(other[name] != mine[name]) for name in SHAPES)


@pytest.mark.parametrize("seed", [0, 5])
def test_init_topology_is_the_documented_draw_against_numpy(seed):
  """docs/algorithm.md: leaf i (in prunable order) prunes the round(n s) weights of lowest
  uint32 key ``bits(fold_in(fold_in(PRNGKey(seed), 0), i))``, ties by flat index."""
  masks = _kernels(dp.get_masks(_tx("set", seed=seed).init(_params())))
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
  for i, (name, shape) in enumerate(SHAPES.items()):
    bits = np.asarray(jax.random.bits(jax.random.fold_in(key, i), shape, jnp.uint32)).ravel()
    expected = np.ones(bits.size, bool)
    expected[np.argsort(bits, kind="stable")[: round(bits.size * TARGET)]] = False
    np.testing.assert_array_equal(masks[name].ravel(), expected, err_msg=name)


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_jit_and_no_jit_give_identical_masks(method):
  # Every topology update of _history(method)'s jitted run, replayed eagerly (op by op) by a
  # new instance of its configuration from the jitted state before it.
  tx = _tx(method)
  history = _history(method)
  step = make_step(tx)
  for count in UPDATES:
    params, state = history[count]  # before the topology update at this count
    params, state = step(params, state, random_grads(params, count))
    jit_params, jit_state = history[count + 1]
    assert int(dp.get_stats(state).dropped_away) > 0, count
    chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(jit_state))
    chex.assert_trees_all_close(params, jit_params, atol=1e-6)


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_pmap_replicas_identical_and_equal_to_one_device(method):
  # SET's regrowth draws from the update's key, RigL's follows the averaged gradients.
  tx = _tx(method)

  @functools.partial(jax.pmap, axis_name="batch")
  def pmap_step(params, state, grads):
    # Both devices hold the same gradients, so the mean is exactly the one-device
    # gradients of _history(method) (x + x is exact, and so is halving it).
    grads = jax.lax.pmean(grads, "batch")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  devices = jax.local_devices()[:2]
  params = flax.jax_utils.replicate(_params(), devices)
  state = flax.jax_utils.replicate(tx.init(_params()), devices)
  history = _history(method)
  for t in range(5):  # two topology updates, at counts 2 and 4
    grads = flax.jax_utils.replicate(random_grads(_params(), t), devices)
    params, state = pmap_step(params, state, grads)
    int(state.count[0])  # block every step: simulated-CPU collectives stall otherwise
    replicas = [jax.tree.map(lambda m, i=i: m[i], state.masks) for i in range(2)]
    chex.assert_trees_all_equal(replicas[0], replicas[1])
    one_params, one_state = history[t + 1]
    chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(one_state))
    chex.assert_trees_all_close(jax.tree.map(lambda p: p[0], params), one_params, atol=1e-6)
  assert int(dp.get_stats(state).total_dropped_back) > 0


@pytest.mark.parametrize(
  "method,packed", [("rigl", False), ("set", True)], ids=["rigl_bool", "set_packed"]
)
def test_resume_from_state_dict_mid_run_gives_the_uninterrupted_masks(method, packed):
  history = _history(method, packed=packed)
  resume_at = 3  # after counts 0, 1, 2: between two topology updates
  params, state = history[resume_at]
  saved = jax.tree.map(np.asarray, flax.serialization.to_state_dict((params, state)))
  tx = _tx(method, packed_masks=packed)  # a new instance, as after a restart
  template = (_params(), tx.init(_params()))
  params, state = flax.serialization.from_state_dict(template, saved)
  assert int(state.count) == resume_at
  step = _step(method, packed=packed)  # compiled once for this configuration
  for t in range(resume_at, STEPS):
    params, state = step(params, state, random_grads(params, t))
    chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(history[t + 1][1]))
  chex.assert_trees_all_equal(params, history[-1][0])


def test_packed_masks_equal_bool_masks():
  packed, plain = _history("set", packed=True), _history("set")
  assert isinstance(packed[-1][1].masks["w1"]["kernel"], dp.PackedMask)
  for (_, a), (_, b) in zip(packed, plain):
    chex.assert_trees_all_equal(dp.get_masks(a), dp.get_masks(b))


def test_mapping_targets_and_init_errors():
  tx = dp.rigl(
    optax.sgd(0.1),
    target_sparsity=0.5,
    end_step=10,
    update_every=5,
    sparsity_distribution={"w1/*": 0.5, "w2/kernel": 0.25},
  )
  masks = _kernels(dp.get_masks(tx.init(_params())))
  assert {name: int((~m).sum()) for name, m in masks.items()} == {"w1": 192, "w2": 16}
  tx = dp.set_pruning(
    optax.sgd(0.1),
    target_sparsity=0.5,
    end_step=10,
    update_every=5,
    sparsity_distribution={"w1/*": 0.5},
  )
  with pytest.raises(ValueError, match="w2/kernel"):
    tx.init(_params())


@pytest.mark.parametrize("method", ["rigl", "set"])
@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"target_sparsity": 0.0}, r"target_sparsity=0\.0"),
    ({"target_sparsity": 1.0}, r"target_sparsity=1\.0"),
    ({"target_sparsity": float("nan")}, r"target_sparsity=nan"),
    ({"target_sparsity": "0.5"}, r"target_sparsity='0\.5'"),
    ({"end_step": 0}, r"end_step=0"),
    ({"end_step": 2.5}, r"end_step=2\.5"),
    ({"update_every": 0}, r"update_every=0"),
    ({"update_every": 2**40}, r"update_every=1099511627776"),
    ({"update_every": END}, rf"update_every={END} >= end_step={END}: the topology would never"),
    ({"drop_fraction": 0.0}, r"drop_fraction=0\.0"),
    ({"drop_fraction": 1.5}, r"drop_fraction=1\.5"),
    ({"drop_fraction_decay": "linear"}, r"drop_fraction_decay='linear'"),
    ({"sparsity_distribution": "global"}, r"sparsity_distribution='global'"),
    ({"sparsity_distribution": "erdos"}, r"sparsity_distribution='erdos'"),
    ({"sparsity_distribution": {"w1/*": 1.0}}, r"1\.0 for 'w1/\*'"),
    ({"seed": "a"}, r"seed='a'"),
    ({"packed_masks": "yes"}, r"packed_masks='yes'"),
    ({"prunable": 3}, r"prunable=3"),
  ],
)
def test_bad_arguments_raise_at_construction(method, kwargs, match):
  with pytest.raises(ValueError, match=match):
    _tx(method, optax.sgd(0.1), **kwargs)


def _masks_after(tx, steps):
  params, state = _params(), None
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  for t in range(steps):
    params, state = step(params, state, random_grads(params, t))
  return dp.get_masks(state)


@pytest.mark.parametrize("front, regrowth", [(dp.rigl, "gradient"), (dp.set_pruning, "random")])
def test_rigl_and_set_are_the_two_regrowth_criteria_of_one_transformation(front, regrowth):
  kwargs = dict(target_sparsity=0.7, end_step=12, update_every=3, seed=4)
  named = _masks_after(front(optax.sgd(0.1), **kwargs), steps=9)
  general = dp.dynamic_sparse_training(optax.sgd(0.1), regrowth=regrowth, **kwargs)
  chex.assert_trees_all_equal(named, _masks_after(general, steps=9))
  with pytest.raises(ValueError, match="regrowth.*'magnitude'"):
    dp.dynamic_sparse_training(optax.sgd(0.1), regrowth="magnitude", **kwargs)
