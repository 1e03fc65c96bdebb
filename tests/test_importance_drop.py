"""Drop probabilities from importance (drop_away="importance", drop_back="gradient" or
"stash") and saliency importance (|w g|).

The weighted rules keep the expected numbers of the uniform rules (p c removed, q |P|
revived) and change which weights: the probabilities are checked against an independent
float64 solution, the counts over many draws against bounds derived from the Bernoulli
sums, and the transformation end to end (exact final sparsity, determinism, pmap).
"""

import functools

import chex
import flax.jax_utils
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from droppruning_jax import drop, importance, plan, skeleton, weighting
from tests.helpers import make_step, random_grads

N = 4000
P_AWAY, Q_BACK, POOL = 0.5, 0.1, 1000
DRAWS = 400


def reference_probabilities(scores, candidates, total, temperature):
  """``min(1, lam exp(-z / T))`` over the candidates, ``z`` standardised, summing to ``total``.

  Float64 and a plain bisection on ``log lam``: a separate derivation of what
  ``weighting.weighted_probabilities`` computes with a bisection over float32 keys.
  """
  s = np.asarray(scores, np.float64)[candidates]
  x = (s - s.mean()) / s.std() / temperature
  low, high = x.min() - np.log(len(x)) - 1.0, x.max() + 1.0  # sums below 1 and = len(x)
  for _ in range(200):
    mid = (low + high) / 2
    low, high = (mid, high) if np.exp(np.minimum(mid - x, 0.0)).sum() < total else (low, mid)
  out = np.zeros(np.shape(candidates))
  out[candidates] = np.exp(np.minimum(high - x, 0.0))
  return out


SIZE = 2000


@jax.jit
def _probs(scores, candidates, total, temperature):
  """One group of SIZE entries (shorter cases are padded with non-candidates): one compile."""
  return weighting.weighted_probabilities([[scores]], [[candidates]], [total], temperature)[0][0]


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 4.0])
def test_weighted_probabilities_equal_the_float64_solution(temperature):
  rng = np.random.default_rng(0)
  scores = rng.normal(size=SIZE).astype(np.float32)
  candidates = rng.random(SIZE) < 0.4
  total = 0.35 * candidates.sum()
  got = np.asarray(_probs(scores, candidates, np.float32(total), np.float32(temperature)))
  reference = reference_probabilities(scores, candidates, total, temperature)
  np.testing.assert_allclose(got, reference, atol=2e-6)
  assert np.all(got[~candidates] == 0.0) and np.all(got <= 1.0)
  assert abs(got.sum() - total) <= 1e-5 * total
  # Lower score, higher probability.
  order = np.argsort(scores[candidates])
  assert np.all(np.diff(got[candidates][order]) <= 1e-7)


@pytest.mark.parametrize(
  "scores,total,temperature,expected",
  [
    # Infinite scores (non-finite weights) leave only when the total needs them, then alike.
    ([1.0, 2.0, np.inf, np.inf], 3.5, 1.0, [1, 1, 0.75, 0.75]),
    ([np.nan, 0.0, 3.0], 2.0, 1e-3, [0, 1, 1]),
    ([-np.inf, -np.inf, 3.0], 1.0, 1.0, [0.5, 0.5, 0]),
    ([1.0, 2.0, 3.0], 0.0, 1.0, [0, 0, 0]),
    ([1.0, 2.0, 3.0], 3.0, 1.0, [1, 1, 1]),  # p = 1: every candidate leaves
    ([5.0, 5.0, 5.0, 5.0], 1.0, 1.0, [0.25] * 4),  # equal scores: uniform
    ([], 0.0, 1.0, []),  # no candidates
  ],
)
def test_weighted_probabilities_edge_cases(scores, total, temperature, expected):
  values = np.zeros(SIZE, np.float32)
  values[: len(scores)] = scores
  candidates = np.arange(SIZE) < len(scores)
  got = np.asarray(_probs(values, candidates, np.float32(total), np.float32(temperature)))
  np.testing.assert_array_equal(got[: len(scores)], expected)
  assert np.all(got[len(scores) :] == 0.0)


def test_both_layouts_give_the_float64_solution_per_group():
  # Several groups of several arrays solved together: each group as if alone, the flat
  # layout (blocks) as the layout that keeps the arrays' shapes (sharded leaves).
  rng = np.random.default_rng(3)
  shapes = [[(7, 9), (300,)], [(5,)], [(2, 3, 4), (1,), (600,)]]
  scores = [[jnp.asarray(rng.normal(size=s), jnp.float32) for s in g] for g in shapes]
  candidates = [[jnp.asarray(rng.random(s) < 0.7) for s in g] for g in shapes]
  totals = [0.4 * sum(int(c.sum()) for c in g) for g in candidates]

  @jax.jit
  def both(scores, candidates):
    return [
      weighting.weighted_probabilities(scores, candidates, totals, 0.8, layout=layout)
      for layout in ("blocks", "arrays")
    ]

  for result in both(scores, candidates):
    for g in range(len(shapes)):
      assert [a.shape for a in result[g]] == list(shapes[g])
      got = np.concatenate([np.asarray(a).reshape(-1) for a in result[g]])
      reference = reference_probabilities(
        np.concatenate([np.asarray(a).reshape(-1) for a in scores[g]]),
        np.concatenate([np.asarray(a).reshape(-1) for a in candidates[g]]),
        totals[g],
        0.8,
      )
      np.testing.assert_allclose(got, reference, atol=2e-6)


def _setup():
  """One mask of N weights, half pruned; scores and |gradients| without ties."""
  rng = np.random.default_rng(1)
  mask = np.ones(N, bool)
  mask[rng.permutation(N)[: N // 2]] = False
  scores = rng.random(N).astype(np.float32)
  evidence = rng.exponential(size=N).astype(np.float32)
  pool = np.zeros(N, bool)
  pool[np.flatnonzero(mask)[np.argsort(scores[mask])[:POOL]]] = True
  return mask, scores, evidence, pool


# E[s_new] = s (1 - q) + p c / n with s = 1/2: this target makes the pool exactly POOL.
TARGET = 0.5 * (1 - Q_BACK) + P_AWAY * POOL / N


@functools.partial(jax.jit, static_argnames=("drop_away", "weighted_back"))
def _many_draws(mask, scores, evidence, temperature, drop_away="importance", weighted_back=True):
  """DRAWS independent drop steps (vmap over keys): the new masks, (DRAWS, N)."""

  def one(key):
    new, _ = drop.drop_leaves(
      [mask],
      [scores],
      [jax.random.uniform(key, (N,))],
      step_sparsities=[TARGET],
      drop_away_prob=P_AWAY,
      drop_back_prob=Q_BACK,
      drop_back_scale="pruned",
      drop_away=drop_away,
      back_evidence=[evidence] if weighted_back else None,
      temperature=temperature,
    )
    return new[0]

  return jax.vmap(one)(jax.random.split(jax.random.PRNGKey(0), DRAWS))


@pytest.fixture(scope="module")
def draws():
  mask, scores, evidence, pool = _setup()
  run = {t: np.asarray(_many_draws(mask, scores, evidence, t)) for t in (1.0, 1e4, 1e-6)}
  # One weighted rule with the other uniform, both ways (at T = 1).
  run["away_only"] = np.asarray(_many_draws(mask, scores, evidence, 1.0, weighted_back=False))
  run["back_only"] = np.asarray(_many_draws(mask, scores, evidence, 1.0, drop_away="uniform"))
  return mask, scores, evidence, pool, run


def _quartile_check(counts_per_draw, probs, groups, sigmas=6.0):
  """Mean counts per group over the draws against sum p_i, within ``sigmas`` sd of the mean.

  The count of a group in one draw is a sum of independent Bernoullis: mean sum p_i,
  variance sum p_i (1 - p_i); the mean over DRAWS draws has variance that / DRAWS.
  """
  for group in groups:
    mean = probs[group].sum()
    sd = np.sqrt((probs[group] * (1 - probs[group])).sum() / DRAWS)
    observed = counts_per_draw[:, group].sum(axis=1).mean()
    assert abs(observed - mean) <= sigmas * sd + 1e-9, (observed, mean, sd)


def test_expected_counts_are_those_of_the_uniform_rules(draws):
  mask, _, _, pool, run = draws
  new = run[1.0]
  removed = mask & ~new
  revived = ~mask & new
  assert not np.any(removed & ~pool)  # only pool members leave
  # Per draw, the removals are a sum of Bernoullis with sum p_i = p c, so their variance is
  # sum p_i (1 - p_i) <= p c (1 - p) (Cauchy-Schwarz: sum p_i^2 >= (p c)^2 / c); likewise
  # the revivals, with q |P|.
  away = removed.sum(axis=1)
  assert abs(away.mean() - P_AWAY * POOL) <= 5 * np.sqrt(POOL * P_AWAY * (1 - P_AWAY) / DRAWS)
  back = revived.sum(axis=1)
  pruned = N // 2
  assert abs(back.mean() - Q_BACK * pruned) <= 5 * np.sqrt(pruned * Q_BACK * (1 - Q_BACK) / DRAWS)
  # And the expected sparsity after the step is the target, within the same bounds.
  sd = np.sqrt((POOL * P_AWAY * (1 - P_AWAY) + pruned * Q_BACK * (1 - Q_BACK)) / DRAWS) / N
  assert abs((1 - new.mean(axis=1)).mean() - TARGET) <= 5 * sd


def _quartiles(values, members):
  """Indices of ``members`` in four groups of rising ``values``."""
  index = np.flatnonzero(members)
  return np.array_split(index[np.argsort(values[index])], 4)


def test_less_important_pool_members_leave_more_often(draws):
  mask, scores, _, pool, run = draws
  removed = (mask & ~run[1.0]).astype(np.float64)
  probs = reference_probabilities(scores, pool, P_AWAY * POOL, 1.0)
  groups = _quartiles(scores, pool)
  _quartile_check(removed, probs, groups)
  rates = [removed[:, g].mean() for g in groups]
  assert rates[0] > 0.8 and rates[3] < 0.2, rates  # uniform: 0.5 each
  assert all(a > b for a, b in zip(rates, rates[1:])), rates


def test_large_gradients_come_back_more_often(draws):
  mask, _, evidence, _, run = draws
  revived = (~mask & run[1.0]).astype(np.float64)
  probs = reference_probabilities(-evidence, ~mask, Q_BACK * (N // 2), 1.0)
  groups = _quartiles(evidence, ~mask)
  _quartile_check(revived, probs, groups)
  rates = [revived[:, g].mean() for g in groups]
  assert rates[3] > 2.5 * Q_BACK and rates[0] < Q_BACK / 2, rates  # uniform: q each
  assert all(a < b for a, b in zip(rates, rates[1:])), rates


def test_high_temperature_is_uniform_and_low_temperature_is_magnitude(draws):
  mask, scores, evidence, pool, run = draws
  # T -> inf: every pool member leaves with p, every pruned weight returns with q.
  removed = (mask & ~run[1e4]).astype(np.float64)
  revived = (~mask & run[1e4]).astype(np.float64)
  _quartile_check(removed, np.where(pool, P_AWAY, 0.0), _quartiles(scores, pool))
  _quartile_check(revived, np.where(~mask, Q_BACK, 0.0), _quartiles(evidence, ~mask))
  # T -> 0: the p c = 500 least important pool members leave in every draw, and the
  # q |P| = 200 pruned weights of largest gradient come back.
  lowest = np.zeros(N, bool)
  lowest[np.flatnonzero(pool)[np.argsort(scores[pool])[: int(P_AWAY * POOL)]]] = True
  largest = np.zeros(N, bool)
  largest[np.flatnonzero(~mask)[np.argsort(-evidence[~mask])[: int(Q_BACK * N // 2)]]] = True
  expected = (mask & ~lowest) | largest
  assert np.all(run[1e-6] == expected[None])


@pytest.mark.parametrize("weighted", ["away_only", "back_only"])
def test_one_weighted_rule_with_the_other_uniform(draws, weighted):
  # One draw per weight serves both drops, so with the same keys the weighted side must
  # make exactly the choices it makes when both rules are weighted (run[1.0], whose
  # statistics the tests above check), and the uniform side must be u < p on the pool or
  # u < q on the pruned weights, draw by draw.
  mask, _, _, pool, run = draws
  new, both = run[weighted], run[1.0]
  keys = jax.random.split(jax.random.PRNGKey(0), DRAWS)  # _many_draws' keys
  u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (N,)))(keys))
  if weighted == "away_only":
    np.testing.assert_array_equal(mask & ~new, mask & ~both)
    np.testing.assert_array_equal(~mask & new, ~mask & (u < np.float32(Q_BACK)))
  else:
    np.testing.assert_array_equal(~mask & new, ~mask & both)
    np.testing.assert_array_equal(mask & ~new, pool & (u < np.float32(P_AWAY)))
  assert not np.array_equal(new, both)  # the uniform side chose other weights


def test_same_key_same_masks_with_and_without_jit(draws):
  # One draw of _many_draws (jit, vmap) again without jit, through drop_step.
  mask, scores, evidence, _, run = draws
  key = jax.random.split(jax.random.PRNGKey(0), DRAWS)[5]
  new, info = dp.drop_step(  # op by op
    key,
    jnp.asarray(mask),
    jnp.asarray(scores),
    step_sparsity=TARGET,
    drop_away_prob=P_AWAY,
    drop_back_prob=Q_BACK,
    drop_back_scale="pruned",
    drop_away="importance",
    back_evidence=jnp.asarray(evidence),
    temperature=1.0,
  )
  np.testing.assert_array_equal(np.asarray(new), run[1.0][5])
  assert int(info.pool_size) == POOL
  assert not np.array_equal(run[1.0][5], run[1.0][6])  # another key, another mask


def test_saliency_scores_and_grad_callables():
  rng = np.random.default_rng(5)
  w = rng.normal(size=(6, 7)).astype(np.float32)
  g = rng.normal(size=(6, 7)).astype(np.float32)
  key = jax.random.PRNGKey(0)
  got = importance.compute(
    importance.get_importance("saliency"), jnp.asarray(w), key, jnp.asarray(g)
  )
  np.testing.assert_array_equal(np.asarray(got), np.abs(w * g))
  g[0, 0] = np.nan  # a NaN gradient counts as most important, as a non-finite weight does
  got = importance.saliency(jnp.asarray(w), key, grad=jnp.asarray(g))
  assert float(got[0, 0]) == np.inf
  # A user callable (param, key) keeps working; one with a grad parameter receives it.
  assert not importance.uses_grad(lambda param, key: param)
  assert importance.uses_grad(lambda param, key, grad: grad)
  got = importance.compute(lambda param, key, *, grad: grad * 2, jnp.asarray(w), key, jnp.ones(1))
  np.testing.assert_array_equal(np.asarray(got), [2.0])
  with pytest.raises(ValueError, match="needs the gradient"):
    importance.compute(importance.saliency, jnp.asarray(w), key)


def test_saliency_prunes_the_lowest_w_times_g_not_the_lowest_w():
  # A baseline with importance="saliency": the exact step at count 0 (end_step=0) prunes
  # the 0.3 * 120 = 36 lowest |w g|; sgd(0) leaves w as it is.
  rng = np.random.default_rng(6)
  w = rng.normal(size=(12, 10)).astype(np.float32)
  g = rng.normal(size=(12, 10)).astype(np.float32)
  tx = dp.gradual_magnitude_pruning(
    optax.sgd(0.0), target_sparsity=0.3, end_step=0, importance="saliency"
  )
  params = {"w": jnp.asarray(w)}
  _, state = jax.jit(make_step(tx))(params, tx.init(params), {"w": jnp.asarray(g)})
  mask = np.asarray(dp.get_masks(state)["w"])
  lowest = {}
  for name, score in (("saliency", np.abs(w * g)), ("magnitude", np.abs(w))):
    lowest[name] = np.ones(w.size, bool)
    lowest[name][np.argsort(score.reshape(-1), kind="stable")[:36]] = False
    lowest[name] = lowest[name].reshape(w.shape)
  np.testing.assert_array_equal(mask, lowest["saliency"])
  assert (mask != lowest["magnitude"]).sum() > 10


# End to end: a small model, every new option at once; per leaf and one global pool.
STEPS = 22
WEIGHTED = dict(
  target_sparsity=0.8,
  begin_step=2,
  end_step=20,
  update_every=3,
  seed=3,
  drop_back_prob=0.1,
  drop_away="importance",
  drop_back="gradient",
  temperature=0.5,
  importance="saliency",
)


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {
    "a": {"kernel": jax.random.normal(k1, (30, 20)), "bias": jnp.zeros(20)},
    "b": {"kernel": jax.random.normal(k2, (20, 5))},
  }


def _weighted_tx(**overrides):
  return dp.drop_pruning(optax.sgd(0.05, momentum=0.9), **{**WEIGHTED, **overrides})


def _train(tx):
  """Masks and statistics after every step, from host-made gradients (traced and compiled
  anew on every call)."""
  params = _params()
  state = tx.init(params)
  step = jax.jit(make_step(tx))
  masks, stats = [], []
  for t in range(STEPS):
    params, state = step(params, state, random_grads(params, t))
    masks.append(jax.tree.map(np.asarray, dp.get_masks(state)))
    stats.append(dp.get_stats(state))
  return masks, stats


@pytest.fixture(scope="module")
def per_leaf_run():
  tx = _weighted_tx()
  return (tx, *_train(tx))


def _assert_exact_and_repeats(tx, masks, stats):
  """Per-leaf final sparsity exact, some weights revived, no shortfall, and the same seed
  gives the same masks at every step (a second run, traced and compiled anew)."""
  final = masks[-1]
  assert (~final["a"]["kernel"]).sum() == round(0.8 * 600)
  assert (~final["b"]["kernel"]).sum() == round(0.8 * 100)
  assert sum(int(s.dropped_back) for s in stats) > 0  # the drop back revived some
  assert max(float(s.shortfall) for s in stats) == 0.0
  again, _ = _train(tx)
  for a, b in zip(masks, again):
    chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("drop_back", ["gradient", "stash"])
def test_per_leaf_final_sparsity_is_exact_and_the_run_repeats(per_leaf_run, drop_back):
  if drop_back == "gradient":
    tx, masks, stats = per_leaf_run
  else:  # the stash is state that each mask update reads and writes
    tx = _weighted_tx(drop_back="stash")
    masks, stats = _train(tx)
  _assert_exact_and_repeats(tx, masks, stats)


@pytest.fixture(scope="module")
def uniform_run_masks():
  """The masks of WEIGHTED's run with both rules uniform (the same seed)."""
  uniform = {**WEIGHTED, "drop_away": "uniform", "drop_back": "uniform"}
  del uniform["temperature"]  # refused when no rule is weighted
  return _train(dp.drop_pruning(optax.sgd(0.05, momentum=0.9), **uniform))[0]


@pytest.mark.parametrize(
  "rules", [dict(drop_back="uniform"), dict(drop_away="uniform")], ids=["away_only", "back_only"]
)
def test_one_weighted_rule_final_sparsity_is_exact_and_the_run_repeats(
  per_leaf_run, uniform_run_masks, rules
):
  tx = _weighted_tx(**rules)
  masks, stats = _train(tx)
  # The rules are used: the same seed gives other masks than both rules weighted and than
  # both uniform.
  for other in (per_leaf_run[1], uniform_run_masks):
    assert any(
      not np.array_equal(a[k]["kernel"], b[k]["kernel"])
      for a, b in zip(masks, other)
      for k in ("a", "b")
    )
  _assert_exact_and_repeats(tx, masks, stats)


def test_global_final_sparsity_is_exact():
  tx = _weighted_tx(sparsity_distribution="global")
  masks, stats = _train(tx)
  final = masks[-1]
  assert (~final["a"]["kernel"]).sum() + (~final["b"]["kernel"]).sum() == round(0.8 * 700)
  assert final["a"]["kernel"].sum() >= 1 and final["b"]["kernel"].sum() >= 1
  assert sum(int(s.dropped_back) for s in stats) > 0


def _global_weighted_plan(drop_back):
  return plan.DropPlan.create(
    target_sparsity=0.8,
    end_step=20,
    drop_away_prob=0.5,
    drop_back_prob=0.1,
    begin_step=2,
    update_every=3,
    seed=0,
    initial_sparsity=0.0,
    sparsity_schedule=None,
    drop_back_scale="active",
    regrow_init="zero",
    importance="saliency",
    sparsity_distribution="global",
    drop_away="importance",
    drop_back=drop_back,
    temperature=0.5,
  )


GLOBAL_SHAPES = [(64, 48), (48, 16)]
GLOBAL_KEY, GLOBAL_COUNT = jax.random.PRNGKey(3), 8


def _global_leaves(drop_back):
  """Two leaves of different scales, masks about 40 % pruned (params, masks, grads, stash).

  Seed 0 leaves a clear gap at the pool's boundary (see the float64 reference test)."""
  rng = np.random.default_rng(0)
  # Leaf "b" has 4x the weights and 2x the gradients (powers of two: its normalised scores
  # and evidence are bit for bit the unscaled ones), so the float64 reference fails if
  # either per-leaf normalisation is dropped.
  params = [jnp.asarray(rng.normal(size=s) * c, jnp.float32) for s, c in zip(GLOBAL_SHAPES, [1, 4])]
  grads = [jnp.asarray(rng.normal(size=s) * c, jnp.float32) for s, c in zip(GLOBAL_SHAPES, [1, 2])]
  masks = [jnp.asarray(rng.random(s) < 0.6) for s in GLOBAL_SHAPES]
  # The skeleton passes no stash unless the policy keeps one.
  stash = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in GLOBAL_SHAPES]
  return params, masks, grads, stash if drop_back == "stash" else None


def _global_step(drop_back):
  global_plan = _global_weighted_plan(drop_back)

  @jax.jit
  def update(params, masks, grads, stash):
    context = skeleton.UpdateContext(
      GLOBAL_KEY, GLOBAL_COUNT, params, masks, ["a", "b"], grads, stash
    )
    return drop.global_update(global_plan, context, final_step=False)

  return global_plan, update


def test_global_weighted_step_equals_a_float64_reference():
  # One stochastic step of the global pool with both weighted rules (saliency importance,
  # gradient drop back), derived here in float64 from docs/algorithm.md: scores and
  # evidence normalised by their leaf's mean (active weights / pruned weights), each
  # leaf's top weight protected, the pool of c lowest scores, the probabilities of the
  # float64 bisection, the draws of fold_in(key, 1) over the concatenated leaves.
  global_plan, update = _global_step("gradient")
  params, masks, grads, _ = _global_leaves("gradient")
  new = np.concatenate(
    [np.asarray(m).reshape(-1) for m in update(params, masks, grads, None).masks]
  )
  mask = np.concatenate([np.asarray(m).reshape(-1) for m in masks])
  scores, evidence, protected = [], [], []
  for w, g, m in zip(params, grads, masks):
    w, g, m = (np.asarray(x, np.float64).reshape(-1) for x in (w, g, m))
    m = m.astype(bool)
    score = np.abs(w * g)
    scores.append(score / score[m].mean())
    evidence.append(np.abs(g) / np.abs(g)[~m].mean())
    top = np.zeros(m.size, bool)
    top[np.argmax(np.where(m, score, -np.inf))] = True
    protected.append(top)
  scores, evidence, protected = map(np.concatenate, (scores, evidence, protected))
  n, active = mask.size, int(mask.sum())
  p, rate = (float(r) for r in global_plan.rates(GLOBAL_COUNT))
  q = min(1.0, rate * active / (n - active))  # drop_back_scale="active"
  temperature = global_plan.temperature
  target = float(global_plan.overall_target(GLOBAL_COUNT))
  candidates = np.flatnonzero(mask & ~protected)
  raw = n * (target - (n - active) / n * (1 - q)) / p
  assert abs(raw - np.floor(raw) - 0.5) > 1e-3  # float32 cannot round c the other way
  c = round(raw)
  assert 0 < c < candidates.size
  order = candidates[np.argsort(scores[candidates])]
  gap = scores[order[c]] - scores[order[c - 1]]
  # Above the worst-case float32 error of the leaf means (n eps ~ 2e-4 for 3072 weights).
  assert gap > 2e-4 * scores[order[c]]
  pool = np.zeros(n, bool)
  pool[order[:c]] = True
  away = reference_probabilities(scores, pool, p * c, temperature)
  back = reference_probabilities(-evidence, ~mask, q * (n - active), temperature)
  u = np.asarray(jax.random.uniform(jax.random.fold_in(GLOBAL_KEY, 1), (n,)), np.float64)
  expected = (mask & ~(pool & (u < away))) | (~mask & (u < back))
  # A draw within rounding of its probability may fall either way; nothing else may differ.
  borderline = np.abs(u - np.where(mask, away, back)) < 1e-5
  assert borderline.sum() <= 2
  np.testing.assert_array_equal(new[~borderline], expected[~borderline])
  assert 100 < (new != mask).sum()  # the step changed the mask
  assert (mask & ~new).sum() > 0 and (~mask & new).sum() > 0


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
@pytest.mark.parametrize("drop_back", ["gradient", "stash"])
def test_sharded_global_pool_equals_one_device(drop_back):
  # _global_update_sharded (leaves in their shapes, the "arrays" layout) against the flat
  # pool, for one stochastic step with every new option.
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  _, update = _global_step(drop_back)
  params, masks, grads, stash = _global_leaves(drop_back)
  reference = update(params, masks, grads, stash)
  mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Explicit,))
  shard = lambda xs: [jax.device_put(x, NamedSharding(mesh, P("data"))) for x in xs]  # noqa: E731
  with jax.set_mesh(mesh):
    sharded = update(
      shard(params), shard(masks), shard(grads), None if stash is None else shard(stash)
    )
  for new, old, ref in zip(sharded.masks, masks, reference.masks):
    np.testing.assert_array_equal(np.asarray(new), np.asarray(ref))
    assert 50 < (np.asarray(new) != np.asarray(old)).sum()  # the step changed the mask


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs 2 (simulated) devices")
@pytest.mark.parametrize(
  "drop_back, distribution",
  [("gradient", "uniform"), ("stash", "uniform"), ("gradient", "global")],
  ids=["per_leaf", "per_leaf_stash", "global"],
)
def test_pmap_replicas_identical_and_equal_to_one_device(per_leaf_run, drop_back, distribution):
  if (drop_back, distribution) == ("gradient", "uniform"):
    tx, one_device, _ = per_leaf_run
  else:
    # The stash is state: replicated, it must stay identical on every replica. The global
    # pool normalises over all leaves at once: another code path.
    tx = _weighted_tx(drop_back=drop_back, sparsity_distribution=distribution)
    one_device, _ = _train(tx)
  devices = jax.local_devices()[:2]

  @functools.partial(jax.pmap, axis_name="batch")
  def pmap_step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = flax.jax_utils.replicate(_params(), devices)
  state = flax.jax_utils.replicate(tx.init(_params()), devices)
  for t in range(STEPS):
    grads = flax.jax_utils.replicate(random_grads(_params(), t), devices)
    params, state = pmap_step(params, state, grads)
    jax.block_until_ready(params)  # simulated-CPU collectives stall when steps queue up
    replicas = [jax.tree.map(lambda m, i=i: np.asarray(m[i]), state.masks) for i in range(2)]
    chex.assert_trees_all_equal(replicas[0], replicas[1])
    chex.assert_trees_all_equal(replicas[0], one_device[t])


# drop_back="stash": a pruned weight's evidence is the magnitude it had when it was last
# pruned (the stash the skeleton keeps), with the expected count of the uniform rule.
def _stash_plan(distribution="uniform", temperature=1.0, regrow_init="zero"):
  return plan.DropPlan.create(
    target_sparsity=0.8,
    end_step=20,
    drop_away_prob=P_AWAY,
    drop_back_prob=Q_BACK,
    begin_step=2,
    update_every=3,
    seed=0,
    initial_sparsity=0.0,
    sparsity_schedule=None,
    drop_back_scale="active",
    regrow_init=regrow_init,
    importance="magnitude",
    sparsity_distribution=distribution,
    drop_back="stash",
    temperature=temperature,
  )


def _stash_leaves(rng, shapes, scales):
  """Masks about half pruned and stashes of different scales per leaf, with gradients that
  rank the pruned weights the other way round (a rule that read them would fail)."""
  masks = [rng.random(s) < 0.5 for s in shapes]
  stash = [(rng.normal(size=s) * c).astype(np.float32) for s, c in zip(shapes, scales)]
  grads = [(1.0 / (np.abs(x) + 0.01)).astype(np.float32) for x in stash]
  return masks, stash, grads


def _finite_magnitude(x):
  x = np.asarray(x, np.float64)
  return np.where(np.isfinite(x), np.abs(x), 0.0)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_stash_evidence_probabilities_equal_the_float64_solution(temperature):
  rng = np.random.default_rng(11)
  shapes = [(40, 30), (500,)]
  masks, stash, grads = _stash_leaves(rng, shapes, (1.0, 10.0))
  # Non-finite stashed values are no evidence; 0 is what a weight pruned before any mask
  # update has: both count as 0, the least evidence.
  masks[0][0, :5] = False
  stash[0][0, :5] = [np.nan, np.inf, -np.inf, 0.0, 0.0]
  pruned = [~m for m in masks]
  totals = [Q_BACK * p.sum() for p in pruned]
  as_jnp = lambda xs: [jnp.asarray(x) for x in xs]  # noqa: E731

  # Per leaf: |stash| standardised over the leaf's pruned weights.
  evidence = weighting.back_evidence(_stash_plan().drop_back, as_jnp(grads), as_jnp(stash))
  got = weighting.weighted_probabilities(
    [[-e] for e in evidence], [[jnp.asarray(p)] for p in pruned], totals, temperature
  )
  for g, (x, p, total) in enumerate(zip(stash, pruned, totals)):
    reference = reference_probabilities(-_finite_magnitude(x), p, total, temperature)
    np.testing.assert_allclose(np.asarray(got[g][0]), reference, atol=2e-6)
  # The five entries of no evidence share the leaf's lowest probability.
  first = np.asarray(got[0][0])
  assert np.all(first[0, :5] == first[pruned[0]].min())

  # One global pool: |stash| divided per leaf by its mean over the leaf's pruned weights
  # (the leaves' scales differ tenfold), then standardised over all pruned weights.
  global_plan = _stash_plan("global", temperature)
  evidence = weighting.global_back_evidence(
    global_plan.drop_back, as_jnp(masks), as_jnp(grads), as_jnp(stash)
  )
  (got,) = weighting.weighted_probabilities(
    [[-e for e in evidence]], [[jnp.asarray(p) for p in pruned]], [sum(totals)], temperature
  )
  normalised = [
    _finite_magnitude(x) / _finite_magnitude(x)[p].mean() for x, p in zip(stash, pruned)
  ]
  reference = reference_probabilities(
    -np.concatenate([e.reshape(-1) for e in normalised]),
    np.concatenate([p.reshape(-1) for p in pruned]),
    sum(totals),
    temperature,
  )
  got = np.concatenate([np.asarray(a).reshape(-1) for a in got])
  np.testing.assert_allclose(got, reference, atol=2e-6)


STASH_COUNT = 8  # a stochastic pruning step of _stash_plan (begin 2, every 3)


def test_larger_stashed_magnitudes_come_back_more_often():
  # The mask update itself (per_leaf_update) over DRAWS keys; the pruned weights' stashes
  # include 200 zeros (pruned before any update), and the active weights carry large old
  # stashes (revived earlier) that must not count.
  rng = np.random.default_rng(12)
  (mask,), (stash,), (grads,) = _stash_leaves(rng, [(N,)], (1.0,))
  stash[np.flatnonzero(~mask)[:200]] = 0.0
  stash[mask] = 100.0
  params = np.where(mask, rng.normal(size=N), 0.0).astype(np.float32)
  stash_plan = _stash_plan()

  @jax.jit
  def many(params, mask, grads, stash):
    def one(key):
      context = skeleton.UpdateContext(key, STASH_COUNT, [params], [mask], ["w"], [grads], [stash])
      return drop.per_leaf_update(stash_plan, context, final_step=False).masks[0]

    return jax.vmap(one)(jax.random.split(jax.random.PRNGKey(1), DRAWS))

  new = np.asarray(many(params, mask, grads, stash))
  revived = (~mask & new).astype(np.float64)
  # q_eff = q |A| / |P| (drop_back_scale="active") = q at half sparsity.
  q_eff = Q_BACK * mask.sum() / (~mask).sum()
  probs = reference_probabilities(-np.abs(stash), ~mask, q_eff * (~mask).sum(), 1.0)
  groups = _quartiles(np.abs(stash), ~mask)
  zeros = np.flatnonzero(~mask)[:200]
  _quartile_check(revived, probs, groups + [zeros])
  rates = [revived[:, g].mean() for g in groups]
  assert all(a < b for a, b in zip(rates, rates[1:])), rates  # uniform: q_eff each
  assert rates[3] > 2 * q_eff and rates[0] < q_eff / 2, rates
  assert revived[:, zeros].mean() <= rates[0]
  # The expected count is the uniform rule's.
  pruned = (~mask).sum()
  sd = np.sqrt(pruned * q_eff * (1 - q_eff) / DRAWS)
  assert abs(revived.sum(axis=1).mean() - q_eff * pruned) <= 5 * sd


STASH_DROP = dict(WEIGHTED, drop_back="stash")


@pytest.mark.parametrize("regrow_init", ["zero", "restore"])
def test_stash_drop_back_keeps_the_stash_and_regrows_by_regrow_init(regrow_init):
  # With regrow_init="zero" the stash is kept (it is the evidence) but revived weights
  # restart at 0; with "restore" at their stashed value. Plain sgd, so that this step's
  # value of a weight pruned now is known here.
  lr = 0.05
  tx = dp.drop_pruning(optax.sgd(lr), **{**STASH_DROP, "regrow_init": regrow_init})
  params = _params()
  state = tx.init(params)
  assert state.stash is not None
  assert state.stash["a"]["kernel"].shape == (30, 20)
  without = dp.drop_pruning(optax.sgd(lr), **WEIGHTED).init(params)
  assert without.stash is None  # drop_back="gradient", regrow_init="zero": no stash
  step = jax.jit(make_step(tx))
  revived_count = restored_nonzero = 0
  for t in range(STEPS):
    grads = random_grads(params, t)
    new_params, new_state = step(params, state, grads)
    old_masks, new_masks = dp.get_masks(state), dp.get_masks(new_state)
    for name in ("a", "b"):
      old, new = np.asarray(old_masks[name]["kernel"]), np.asarray(new_masks[name]["kernel"])
      old_stash = np.asarray(state.stash[name]["kernel"])
      new_stash = np.asarray(new_state.stash[name]["kernel"])
      w = np.asarray(new_params[name]["kernel"])
      revived, pruned_now = new & ~old, old & ~new
      expected = old_stash[revived] if regrow_init == "restore" else 0.0
      np.testing.assert_array_equal(w[revived], expected)
      revived_count += revived.sum()
      restored_nonzero += (old_stash[revived] != 0).sum()
      # The stash takes the value of every weight pruned now (its value after this sgd
      # step) and keeps every other entry.
      g = np.asarray(grads[name]["kernel"])
      value = np.asarray(params[name]["kernel"]) + g * np.float32(-lr)
      np.testing.assert_allclose(new_stash[pruned_now], value[pruned_now], rtol=1e-6)
      np.testing.assert_array_equal(new_stash[~pruned_now], old_stash[~pruned_now])
    params, state = new_params, new_state
  assert revived_count > 0 and restored_nonzero > 0  # both cases are exercised


@pytest.mark.parametrize("distribution", ["uniform", "global"])
@pytest.mark.parametrize("drop_back", ["gradient", "stash"])
def test_weighted_drop_final_sparsity_is_exact_and_jit_equals_no_jit(distribution, drop_back):
  tx = _weighted_tx(drop_back=drop_back, sparsity_distribution=distribution)
  jitted, eager = jax.jit(make_step(tx)), make_step(tx)
  # Without jit, every step that changes the masks, the schedule's first step (sparsity 0)
  # and a step between two updates (sparse masks, no update) are replayed from the jitted
  # run's state: the same params and the same whole state (masks, count, stash, momentum,
  # statistics), floats to rounding, and so the same input to the next step. Replaying
  # every step would cost a minute: each eager step traces its branches anew.
  begin, every = WEIGHTED["begin_step"], WEIGHTED["update_every"]
  mask_updates = range(begin + every, WEIGHTED["end_step"] + 1, every)
  replayed = dropped_back = 0
  changed_at = set()
  params, state = _params(), tx.init(_params())
  for t in range(STEPS):
    grads = random_grads(params, t)
    new_params, new_state = jitted(params, state, grads)
    if t in mask_updates or t in (begin, begin + every + 1):
      eager_params, eager_state = eager(params, state, grads)
      chex.assert_trees_all_equal(dp.get_masks(eager_state), dp.get_masks(new_state))
      chex.assert_trees_all_equal_structs(eager_state, new_state)
      for x, y in zip(
        jax.tree.leaves((eager_params, eager_state)), jax.tree.leaves((new_params, new_state))
      ):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
          np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
        else:
          np.testing.assert_array_equal(x, y)
      replayed += 1
      if any(
        bool(np.any(np.asarray(a) != np.asarray(b)))
        for a, b in zip(
          jax.tree.leaves(dp.get_masks(state)), jax.tree.leaves(dp.get_masks(new_state))
        )
      ):
        changed_at.add(t)
    dropped_back += int(dp.get_stats(new_state).dropped_back)
    params, state = new_params, new_state
  # Only mask updates change the masks, and each but the last does; the last, forced to
  # p = 1 and q = 0 at end_step, lands on the target and may keep the masks as they are.
  assert replayed == len(mask_updates) + 2
  assert set(mask_updates[:-1]) <= changed_at <= set(mask_updates)
  assert dropped_back > 0
  final = dp.get_masks(state)
  pruned = [int((~np.asarray(final[name]["kernel"])).sum()) for name in ("a", "b")]
  if distribution == "global":
    assert sum(pruned) == round(0.8 * 700)
  else:
    assert pruned == [round(0.8 * 600), round(0.8 * 100)]


@pytest.mark.parametrize("distribution", ["uniform", "global"])
@pytest.mark.parametrize("drop_back", ["gradient", "stash"])
def test_resume_from_state_dict_mid_run_gives_the_uninterrupted_masks(drop_back, distribution):
  # A restart rebuilds the transformation and restores its state (as orbax does, from
  # numpy arrays): the weighted drops continue with the same keys, importance, gradients
  # and stash, so the masks are those of the run that never stopped. Per-leaf pools and
  # the global pool are different code paths (per-leaf draws against one pool's).
  kwargs = dict(drop_back=drop_back, sparsity_distribution=distribution)
  tx = _weighted_tx(**kwargs)
  step = jax.jit(make_step(tx))
  params, state = _params(), tx.init(_params())
  history = [(params, state)]
  for t in range(STEPS):
    params, state = step(params, state, random_grads(params, t))
    history.append((params, state))
  resume_at = 9  # mid-schedule, after mask updates at counts 2, 5 and 8
  saved = jax.tree.map(np.asarray, flax.serialization.to_state_dict(history[resume_at]))
  restarted = _weighted_tx(**kwargs)
  template = (_params(), restarted.init(_params()))
  params, state = flax.serialization.from_state_dict(template, saved)
  assert int(state.count) == resume_at
  assert int(dp.get_stats(history[-1][1]).total_dropped_back) > 0  # drop back ran
  step = jax.jit(make_step(restarted))
  for t in range(resume_at, STEPS):
    params, state = step(params, state, random_grads(params, t))
    chex.assert_trees_all_equal(dp.get_masks(state), dp.get_masks(history[t + 1][1]))
  chex.assert_trees_all_equal(params, history[-1][0])
  if drop_back == "stash":
    chex.assert_trees_all_equal(state.stash, history[-1][1].stash)
