"""Small shared fixtures for the tests: a toy parameter tree and a train step."""

import jax
import jax.numpy as jnp
import optax


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
