"""The pure jax.random transforms: drop away, drop back, drop step, exact prune."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import droppruning_jax as dp
from droppruning_jax import drop, selection

N = 10_000


def _half_pruned_mask(seed=0):
  rng = np.random.default_rng(seed)
  mask = np.ones(N, bool)
  mask[rng.permutation(N)[: N // 2]] = False
  return jnp.asarray(mask)


def _binomial_bounds(trials, prob, sigmas=5.0):
  mean = trials * prob
  sd = np.sqrt(trials * prob * (1 - prob))
  return mean - sigmas * sd, mean + sigmas * sd


def test_drop_back_alone_revives_within_binomial_bounds():
  # Target s (1 - q) makes the pool c = 0: only drop back acts, each pruned weight
  # returning with probability q (drop_back_scale="pruned").
  mask = _half_pruned_mask()
  q = 0.2
  new, info = dp.drop_step(
    jax.random.PRNGKey(0),
    mask,
    jnp.ones(N),
    step_sparsity=0.5 * (1 - q),
    drop_away_prob=1.0,
    drop_back_prob=q,
    drop_back_scale="pruned",
  )
  assert int(info.pool_size) == 0
  revived = int(jnp.sum(new & ~mask))
  low, high = _binomial_bounds(N // 2, q)
  assert low <= revived <= high
  assert revived == int(info.dropped_back)
  assert bool(jnp.all(new[mask]))  # active weights stay active


def test_drop_back_with_zero_rate_revives_none():
  mask = _half_pruned_mask()
  new, _ = dp.drop_step(
    jax.random.PRNGKey(0),
    mask,
    jnp.ones(N),
    step_sparsity=0.5,
    drop_away_prob=1.0,
    drop_back_prob=0.0,
  )
  np.testing.assert_array_equal(np.asarray(new), np.asarray(mask))


def test_drop_away_alone_removes_about_p_times_pool_from_the_pool():
  # With q = 0 the pool is c = n (s' - s) / p: s' = 0.5 + 0.3 * 2000 / N gives c = 2000.
  mask = _half_pruned_mask()
  scores = jnp.asarray(np.random.default_rng(1).random(N), jnp.float32)
  pool_size, prob = 2000, 0.3
  new, info = dp.drop_step(
    jax.random.PRNGKey(3),
    mask,
    scores,
    step_sparsity=0.5 + prob * pool_size / N,
    drop_away_prob=prob,
    drop_back_prob=0.0,
  )
  assert int(info.pool_size) == pool_size
  removed = np.asarray(mask & ~new)
  low, high = _binomial_bounds(pool_size, prob)
  assert low <= removed.sum() <= high
  # Only the pool (the pool_size lowest-scoring active weights) can be removed.
  active_scores = np.where(np.asarray(mask), np.asarray(scores), np.inf)
  pool_threshold = np.sort(active_scores)[pool_size - 1]
  assert np.all(np.asarray(scores)[removed] <= pool_threshold)
  assert not np.any(removed & ~np.asarray(mask))


def test_drop_away_with_p_one_removes_exactly_the_pool():
  mask = _half_pruned_mask()
  scores = jnp.asarray(np.random.default_rng(1).random(N), jnp.float32)
  new, _ = dp.drop_step(
    jax.random.PRNGKey(3),
    mask,
    scores,
    step_sparsity=0.5 + 1234 / N,
    drop_away_prob=1.0,
    drop_back_prob=0.0,
  )
  assert int(jnp.sum(mask & ~new)) == 1234


def test_mean_sparsity_after_a_step_is_within_4_sigma_of_target():
  mask = _half_pruned_mask()
  scores = jnp.asarray(np.random.default_rng(2).random(N), jnp.float32)
  draws = 200
  p, q, target = 0.5, 0.1, 0.6

  def one(key):
    new, info = dp.drop_step(
      key,
      mask,
      scores,
      step_sparsity=target,
      drop_away_prob=p,
      drop_back_prob=q,
      drop_back_scale="pruned",
    )
    return 1.0 - jnp.mean(new), info

  sparsities, infos = jax.vmap(one)(jax.random.split(jax.random.PRNGKey(0), draws))
  pool = int(infos.pool_size[0])
  assert pool == round(N * (target - 0.5 * (1 - q)) / p)
  var = (pool * p * (1 - p) + (N // 2) * q * (1 - q)) / N**2
  sigma_of_mean = np.sqrt(var / draws)
  assert abs(float(jnp.mean(sparsities)) - target) <= 4 * sigma_of_mean
  assert float(jnp.max(infos.shortfall)) == 0.0


def test_drop_step_active_scale_revives_q_times_active_count():
  mask = _half_pruned_mask()
  scores = jnp.ones(N)
  new, info = dp.drop_step(
    jax.random.PRNGKey(5),
    mask,
    scores,
    step_sparsity=0.5,
    drop_away_prob=1.0,
    drop_back_prob=0.05,
    drop_back_scale="active",
  )
  # q_eff = 0.05 * |A| / |P| = 0.05: about 250 of the 5000 pruned weights come back.
  low, high = _binomial_bounds(N // 2, 0.05)
  assert low <= int(info.dropped_back) <= high
  assert int(info.dropped_back) == int(jnp.sum(new & ~mask))


def test_drop_step_records_shortfall_when_clip_binds():
  mask = jnp.asarray(np.arange(N) < 100)  # 99 % sparse, 100 active weights
  new, info = dp.drop_step(
    jax.random.PRNGKey(0),
    mask,
    jnp.ones(N),
    step_sparsity=0.995,
    drop_away_prob=1.0,
    drop_back_prob=0.5,
    drop_back_scale="pruned",
  )
  assert int(info.pool_size) == 99  # clipped at |A| - 1: the leaf keeps one weight
  assert float(info.shortfall) > 0.4
  assert int(jnp.sum(mask & ~new)) == 99
  assert int(jnp.sum(new)) >= 1


# One compiled step per size: the probabilities, target and draws are traced arguments.
_drop_step_jit = jax.jit(dp.drop_step, static_argnames="drop_back_scale")


@settings(deadline=None, max_examples=30)
@given(
  n=st.sampled_from([1, 2, 17, 300]),
  active_fraction=st.floats(min_value=0.0, max_value=1.0),
  target=st.floats(min_value=0.0, max_value=0.99),
  p=st.floats(min_value=0.01, max_value=1.0),
  q=st.floats(min_value=0.0, max_value=1.0),
  seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_drop_step_invariants(n, active_fraction, target, p, q, seed):
  rng = np.random.default_rng(seed)
  mask = jnp.asarray(rng.random(n) < active_fraction)
  scores = jnp.asarray(rng.random(n), jnp.float32)
  new, info = _drop_step_jit(
    jax.random.PRNGKey(seed),
    mask,
    scores,
    step_sparsity=target,
    drop_away_prob=p,
    drop_back_prob=q,
    drop_back_scale="pruned",
  )
  mask, new = np.asarray(mask), np.asarray(new)
  removed, revived = mask & ~new, new & ~mask
  assert 0 <= int(info.pool_size) <= mask.sum()
  assert removed.sum() == int(info.dropped_away) <= int(info.pool_size)
  assert revived.sum() == int(info.dropped_back)
  assert float(info.shortfall) >= 0.0
  # Removed weights are among the pool: no kept active weight scores below a removed one
  # unless it was outside the pool by the tie-break.
  if removed.any():
    pool_rank = np.argsort(np.lexsort((np.asarray(scores), ~mask)))
    assert pool_rank[removed].max() < int(info.pool_size)


class DropStepVariantsTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_same_key_same_mask_with_and_without_jit(self):
    mask = _half_pruned_mask()
    scores = jnp.asarray(np.random.default_rng(4).random(N), jnp.float32)

    def step(key):
      return dp.drop_step(
        key, mask, scores, step_sparsity=0.6, drop_away_prob=0.5, drop_back_prob=0.1
      )[0]

    reference = jax.jit(step)(jax.random.PRNGKey(7))
    chex.assert_trees_all_equal(self.variant(step)(jax.random.PRNGKey(7)), reference)
    self.assertFalse(bool(jnp.all(step(jax.random.PRNGKey(8)) == reference)))


# Sizes from 1 up, one compiled selection for all of them; the counts are traced.
_MANY_SIZES = (1, 2, 7, 64, 200)
_lowest_many_jit = jax.jit(
  lambda masks, scores, ks: selection.lowest_scores_many(
    masks, scores, [ks[i] for i in range(len(masks))], pruned_first=False
  )
)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_one_selection_loop_for_many_arrays_equals_numpy_lexsort(seed):
  # select_lowest_many gives each array its own exact threshold, as if selected
  # alone: the k lowest eligible scores, ties to the lowest index (np.lexsort order).
  rng = np.random.default_rng(seed)
  masks = [rng.random(n) < rng.random() for n in _MANY_SIZES]
  # Few distinct values, so that ties at the threshold happen.
  scores = [rng.integers(0, 5, n).astype(np.float32) for n in _MANY_SIZES]
  ks = [int(rng.integers(0, n + 2)) for n in _MANY_SIZES]
  selected = _lowest_many_jit(masks, scores, jnp.asarray(ks, jnp.int32))
  for mask, score, k, sel in zip(masks, scores, ks, selected):
    order = np.lexsort((np.arange(mask.size), score, ~mask))
    expected = np.zeros(mask.size, bool)
    expected[order[: min(k, int(mask.sum()))]] = True
    np.testing.assert_array_equal(np.asarray(sel), expected)


def test_one_drop_for_many_masks_equals_drop_step_per_mask():
  shapes = [(30, 20), (3, 3, 4, 6), (7,)]
  keys = jax.random.split(jax.random.PRNGKey(3), 3 * len(shapes))
  masks = [jax.random.uniform(k, s) < 0.6 for k, s in zip(keys[0::3], shapes)]
  scores = [jax.random.normal(k, s) for k, s in zip(keys[1::3], shapes)]
  uniforms = [jax.random.uniform(k, s) for k, s in zip(keys[2::3], shapes)]
  targets = [0.5, 0.7, 0.6]
  kwargs = dict(drop_away_prob=0.6, drop_back_prob=0.2)
  together, infos = drop.drop_leaves(masks, scores, uniforms, step_sparsities=targets, **kwargs)
  for key, mask, score, target, new, info in zip(
    keys[2::3], masks, scores, targets, together, infos
  ):
    # drop_step draws its uniforms from the key: the same draws as above.
    alone, alone_info = dp.drop_step(key, mask, score, step_sparsity=target, **kwargs)
    chex.assert_trees_all_equal((new, info), (alone, alone_info))
  exact = selection.prune_exact_many(masks, scores, targets)
  for mask, score, target, new in zip(masks, scores, targets, exact):
    chex.assert_trees_all_equal(new, dp.prune_exact(mask, score, target))


def test_many_selection_inputs_must_match():
  with pytest.raises(ValueError, match="must match"):
    selection.select_lowest_many([jnp.zeros(3, jnp.uint32)], [jnp.ones(3, bool)], [1, 2])
  with pytest.raises(ValueError, match="uniforms has shape"):
    drop.drop_leaves(
      [jnp.ones(4, bool)],
      [jnp.zeros(4)],
      [jnp.zeros(5)],
      step_sparsities=[0.5],
      drop_away_prob=0.5,
      drop_back_prob=0.1,
    )


@pytest.mark.parametrize("k", [0, 3, 5, 6, 8, 10])
def test_select_at_threshold_with_ties_that_fit_and_ties_that_do_not(k):
  """Both sides of the tie shortcut: every tie taken (it fits) or an index-order prefix."""
  keys = jnp.asarray([5, 1, 3, 3, 9, 3, 1, 3, 7, 3], jnp.uint32)
  eligible = jnp.ones(10, bool).at[2].set(False)
  order = np.lexsort((np.arange(10), np.asarray(keys), ~np.asarray(eligible)))
  expected = np.zeros(10, bool)
  expected[order[: min(k, 9)]] = True  # k = 10 is clipped to the 9 eligible entries
  threshold = jnp.sort(jnp.where(eligible, keys, jnp.uint32(2**32 - 1)))[max(k, 1) - 1]
  select = jax.jit(selection.select_at_threshold)
  np.testing.assert_array_equal(select(keys, eligible, threshold, k), expected)
  # Under vmap the conditional becomes a select of both sides: same answer.
  batched = jax.vmap(selection.select_at_threshold, in_axes=(None, None, None, 0))(
    keys, eligible, threshold, jnp.asarray([k, k])
  )
  np.testing.assert_array_equal(batched, np.stack([expected, expected]))
  # The plain prefix count (used off the CPU) and the CPU shortcut agree.
  at = eligible & (keys == threshold)
  room = k - int(jnp.sum(eligible & (keys < threshold)))
  np.testing.assert_array_equal(
    selection.tie_prefix(at, room), jax.jit(selection.tie_prefix_unless_all_fit)(at, room)
  )


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "weighted"])
def test_the_update_at_step_t_is_drop_step_with_the_documented_key(weighted):
  """docs/algorithm.md: the key of the pruning step at count t is ``fold_in(PRNGKey(seed),
  t)``, split into a score key and a draw key; with one prunable leaf the update is
  ``drop_step`` with the draw key, this step's schedule and the scores of the weights
  this step produces (``w + u``, ``u`` the inner update of the masked gradients)."""
  import optax

  from tests.helpers import make_step, random_grads

  def schedule(count):
    # 0.625 * 128 weights is an integer: the leaf's own target is exactly the overall one.
    return 0.625 * jnp.minimum(count, 8) / 8

  rules = {"drop_away": "importance", "temperature": 1.0} if weighted else {}
  kwargs = dict(target_sparsity=0.625, end_step=8, update_every=2, sparsity_schedule=schedule)

  def run(seed):
    tx = dp.drop_pruning(
      optax.sgd(0.1),
      **kwargs,
      seed=seed,
      **rules,
      **({"drop_back": "gradient"} if weighted else {}),
    )
    params = {"w": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (16, 8))}}
    state = tx.init(params)
    step = jax.jit(make_step(tx))
    out = []
    for t in range(7):  # pruning steps at counts 2, 4, 6 (8 is the exact one)
      before, mask = params, dp.get_masks(state)["w"]["kernel"]
      grads = random_grads(params, t)
      params, state = step(params, state, grads)
      out.append((before["w"]["kernel"], mask, grads["w"]["kernel"], state))
    return out

  seed = 7
  history = run(seed)
  for t in (2, 4, 6):
    weights, mask, grads, state = history[t]
    _, draw_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), t))
    produced = weights + -0.1 * jnp.where(mask, grads, 0.0)  # optax.sgd(0.1)'s update
    expected, _ = dp.drop_step(
      draw_key,
      mask,
      jnp.abs(produced),
      step_sparsity=schedule(t),
      drop_away_prob=0.5,
      drop_back_prob=0.1,
      back_evidence=jnp.abs(grads) if weighted else None,
      **rules,
    )
    got = dp.get_masks(state)["w"]["kernel"]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=str(t))
    assert int((~got).sum()) > 0
  # The key matters: another seed draws other masks.
  other = run(seed + 1)
  assert any(
    np.any(np.asarray(dp.get_masks(a[3])["w"]["kernel"] != dp.get_masks(b[3])["w"]["kernel"]))
    for a, b in zip(history, other)
  )


def test_a_group_of_leaves_is_one_pool_equal_to_the_leaves_concatenated():
  """drop_groups' contract: a group of several leaves drops exactly as one flat mask of
  their concatenation (the global pool), and the layout stays the leaves' own shapes."""
  shapes = [(12, 5), (2, 3, 4), (9,)]
  keys = jax.random.split(jax.random.PRNGKey(7), 4 * len(shapes))
  masks = [jax.random.uniform(k, s) < 0.7 for k, s in zip(keys[0::4], shapes)]
  scores = [jax.random.normal(k, s) for k, s in zip(keys[1::4], shapes)]
  uniforms = [jax.random.uniform(k, s) for k, s in zip(keys[2::4], shapes)]
  evidence = [jnp.abs(jax.random.normal(k, s)) for k, s in zip(keys[3::4], shapes)]
  protected = [jnp.zeros(s, bool).reshape(-1).at[0].set(True).reshape(s) for s in shapes]
  kwargs = dict(drop_away_prob=0.7, drop_back_prob=0.1, drop_away="importance", temperature=0.5)

  def flat(arrays):
    return [jnp.concatenate([a.reshape(-1) for a in arrays])]

  grouped, infos = drop.drop_groups(
    [masks],
    [scores],
    [uniforms],
    step_sparsities=[0.6],
    protected=[protected],
    back_evidence=[evidence],
    **kwargs,
  )
  together, flat_infos = drop.drop_leaves(
    flat(masks),
    flat(scores),
    flat(uniforms),
    step_sparsities=[0.6],
    protected=flat(protected),
    back_evidence=flat(evidence),
    **kwargs,
  )
  assert [m.shape for m in grouped[0]] == shapes
  chex.assert_trees_all_equal(flat(grouped[0])[0], together[0])
  chex.assert_trees_all_equal(infos, flat_infos)
  assert int(infos[0].dropped_away) > 0 and int(infos[0].pool_size) > 0
  for new, keep, mask in zip(grouped[0], protected, masks):
    assert bool(jnp.all(new[keep & mask]))  # an active protected weight never leaves
