"""Tests for experiments.models: parameter counts, shapes, names."""

import jax
import jax.numpy as jnp
import pytest

from experiments import models


def _abstract_variables(model, input_shape):
  """Variable shapes without computing anything (cheap even for VGG16)."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False))


@pytest.mark.parametrize(
  "model, input_shape, expected_params",
  [
    (models.LeNet300100(), (2, 28, 28, 1), 266_610),
    (models.LeNet300100(), (2, 784), 266_610),
    (models.LeNet5(), (2, 28, 28, 1), 431_080),
    (models.VGG16(), (2, 32, 32, 3), 14_986_698),
  ],
)
def test_param_counts(model, input_shape, expected_params):
  variables = _abstract_variables(model, input_shape)
  assert models.num_params(variables["params"]) == expected_params


def test_vgg16_batch_stats_count():
  variables = _abstract_variables(models.VGG16(), (1, 32, 32, 3))
  # Mean and variance for each of the 4,224 conv channels.
  assert models.num_params(variables["batch_stats"]) == 2 * 4_224


def test_parameter_paths_are_readable():
  lenet300 = _abstract_variables(models.LeNet300100(), (1, 784))["params"]
  assert set(lenet300) == {"dense1", "dense2", "dense3"}
  assert lenet300["dense1"]["kernel"].shape == (784, 300)
  lenet5 = _abstract_variables(models.LeNet5(), (1, 28, 28, 1))["params"]
  assert set(lenet5) == {"conv1", "conv2", "dense1", "dense2"}
  assert lenet5["dense1"]["kernel"].shape == (800, 500)
  vgg = _abstract_variables(models.VGG16(), (1, 32, 32, 3))["params"]
  assert set(vgg) == (
    {f"conv{i}" for i in range(1, 14)} | {f"bn{i}" for i in range(1, 14)} | {"dense1", "dense2"}
  )
  assert vgg["conv13"]["kernel"].shape == (3, 3, 512, 512)


def test_vgg16_width_multiplier_scales_widths():
  params = _abstract_variables(models.VGG16(width_multiplier=0.25), (1, 32, 32, 3))["params"]
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 16)
  assert params["conv13"]["kernel"].shape == (3, 3, 128, 128)
  assert params["dense1"]["kernel"].shape == (128, 128)
  assert params["dense2"]["kernel"].shape == (128, 10)


def test_scaled_width_rounds_and_keeps_one_channel():
  assert models.scaled_width(64, 1 / 16) == 4
  assert models.scaled_width(100, 0.125) == 12  # round(12.5) -> 12 (banker's)
  assert models.scaled_width(64, 0.001) == 1


def test_tiny_vgg16_forward_train_and_eval():
  model = models.VGG16(width_multiplier=1 / 16)
  x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
  # The "unsafe_rbg" key compiles the initialisers several times faster than
  # the default threefry key on CPU (about 2 s instead of 7 s here).
  variables = jax.jit(lambda key, x: model.init(key, x, train=False))(
    jax.random.key(0, impl="unsafe_rbg"), x
  )

  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
    variables, x
  )
  assert logits.shape == (3, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))
  # Training mode moves the running statistics towards the batch statistics.
  old_mean = variables["batch_stats"]["bn1"]["mean"]
  new_mean = updates["batch_stats"]["bn1"]["mean"]
  assert not jnp.allclose(old_mean, new_mean)

  eval_logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert eval_logits.shape == (3, 10)


@pytest.mark.parametrize(
  "name, input_shape",
  [
    ("lenet300", (2, 784)),
    ("lenet5", (2, 28, 28, 1)),
    ("vgg16", (2, 32, 32, 3)),
  ],
)
def test_get_model_returns_models_with_uniform_call(name, input_shape):
  model = models.get_model(name)
  variables = _abstract_variables(model, input_shape)
  logits = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False),
    variables,
    jax.ShapeDtypeStruct(input_shape, jnp.float32),
  )
  assert logits.shape == (2, 10)


def test_get_model_passes_kwargs():
  model = models.get_model("vgg16", width_multiplier=0.5, num_classes=100)
  assert isinstance(model, models.VGG16)
  assert model.width_multiplier == 0.5
  assert model.num_classes == 100


def test_get_model_unknown_name():
  with pytest.raises(ValueError, match=r"'resnet50'.*lenet300, lenet5, vgg16"):
    models.get_model("resnet50")
