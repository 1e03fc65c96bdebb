"""Knowledge distillation from a finished run (Hinton et al., 2015).

The student's loss mixes the label cross-entropy with the cross-entropy against the
teacher's softened predictions:

  loss = (1 - w) * CE(labels, s) + w * T^2 * CE(softmax(t / T), s / T)

with ``s``, ``t`` the student's and the teacher's logits, ``w = config.distill_weight``
and ``T = config.distill_temperature`` (``T^2`` keeps the soft term's gradients on the
scale of the hard one's). The teacher is a finished run folder (``config.teacher_workdir``,
usually a dense run); its logits for each training batch are computed by its own jitted
forward pass, in inference mode, and reach the train step as one more batch array, so
every placement (pmap, a jit mesh, several processes) shards them like the labels.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import finished_runs


def distillation_loss(
  logits: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array,
  weight: float,
  temperature: float,
) -> jax.Array:
  """The mean distillation loss of a batch (see the module docstring)."""
  hard = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature)
  soft = optax.softmax_cross_entropy(logits / temperature, targets) * temperature**2
  return jnp.mean((1.0 - weight) * hard + weight * soft)


def load_teacher(
  config: ml_collections.ConfigDict, make_model: Callable, num_classes: int
) -> Callable[[np.ndarray], jax.Array]:
  """The teacher's jitted forward pass ``images (..., H, W, C) -> logits (..., classes)``,
  the logits a device array (float32).

  Raises:
    ValueError: naming the folder, if it holds no finished run, or a run on other data
      or another validation split than ``config``'s.
  """
  teacher_config, variables = finished_runs.load_variables(config, "teacher_workdir")
  model = make_model(teacher_config, num_classes)
  # The weights go to the device once; every call then moves only the images there and
  # leaves the logits on the device for the step (no round trip through the host).
  variables = jax.device_put(variables)

  @jax.jit
  def apply(variables, images: jax.Array) -> jax.Array:
    flat = jnp.reshape(images, (-1, *images.shape[-3:]))
    logits = model.apply(variables, flat, train=False).astype(jnp.float32)
    return logits.reshape(*images.shape[:-3], logits.shape[-1])

  def forward(images) -> jax.Array:
    return apply(variables, images)  # the weights as an argument, not baked into the program

  return forward
