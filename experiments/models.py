"""Flax models used in the Drop Pruning experiments.

Every model is called as ``model.apply(variables, x, train=...)`` so that one
training loop can drive all of them; models without batch norm ignore ``train``.
Layers carry explicit names, so parameter paths read like
``params/dense1/kernel`` or ``params/conv3/kernel``, which is what masks and
per-layer sparsity reports print.

Parameter counts (``params`` collection only):

* ``LeNet300100``: 266,610.
* ``LeNet5`` on 28x28x1 input: 431,080.
* ``VGG16`` on 32x32x3 input, ``width_multiplier=1.0``: 14,986,698
  (plus 8,448 batch-norm running statistics in ``batch_stats``).

``NNXLeNet300100`` and ``NNXLeNet5`` are the same networks as Flax NNX modules
(``nnx.Module``), with the same layer and parameter names, so
``nnx.state(model, nnx.Param).to_pure_dict()`` has the paths of the linen
``params`` collection. ``get_nnx_model`` builds them by name.

``ViT`` is a small vision transformer (NNX only): a patch embedding, pre-LN blocks of
``nnx.MultiHeadAttention`` and an MLP, every parameter (biases and LayerNorm scales
included) annotated for a ``("data", "model")`` mesh as large NNX code bases write
them: tensor parallel over ``"model"`` (attention heads, MLP hidden units), FSDP over
``"data"`` (the embedding dimension). Build it under ``nnx.use_eager_sharding(False)``
without a mesh, or under ``jax.set_mesh(mesh)``; the runner reads the annotations with
``nnx.get_partition_spec`` and places the state by them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

# Image size of MNIST-like inputs; LeNet-5 reshapes flat (B, 784) input to it.
_MNIST_IMAGE_SHAPE = (28, 28, 1)

# VGG-16 feature extractor: an int is a 3x3 conv with that many output
# channels, "M" is a 2x2 max pool with stride 2.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip

# Width of VGG-16's hidden classifier layer at width_multiplier=1.0.
VGG16_HIDDEN_UNITS = 512


def _flatten(x: jax.Array) -> jax.Array:
  """Flattens all but the leading batch axis."""
  return x.reshape((x.shape[0], -1))


def scaled_width(width: int, multiplier: float) -> int:
  """Returns ``width`` scaled by ``multiplier``, rounded, at least 1.

  Args:
    width: Channel or unit count at multiplier 1.0.
    multiplier: Scale factor, e.g. ``0.25`` for a quarter-width network.

  Returns:
    ``max(1, int(round(width * multiplier)))``.
  """
  return max(1, int(round(width * multiplier)))


class LeNet300100(nn.Module):
  """LeNet-300-100: a 784-300-100-10 fully connected network with ReLU.

  Accepts images of shape ``(B, 28, 28, 1)`` or already flat ``(B, 784)``
  input. 266,610 parameters.

  Attributes:
    num_classes: Number of output logits.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(B, num_classes)``.

    Args:
      x: Input batch, ``(B, 28, 28, 1)`` or ``(B, 784)``.
      train: Ignored; accepted so that all models share one call signature.
    """
    del train  # No dropout or batch norm.
    x = _flatten(x)
    x = nn.relu(nn.Dense(300, name="dense1")(x))
    x = nn.relu(nn.Dense(100, name="dense2")(x))
    return nn.Dense(self.num_classes, name="dense3")(x)


class LeNet5(nn.Module):
  """LeNet-5 in the Caffe variant used by the pruning literature.

  conv 20@5x5 (VALID) -> max pool 2 -> conv 50@5x5 (VALID) -> max pool 2 ->
  flatten -> dense 500 (ReLU) -> dense ``num_classes``. As in Caffe's
  ``lenet_train_test.prototxt`` the convolutions have no activation.
  431,080 parameters on 28x28x1 input.

  Attributes:
    num_classes: Number of output logits.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(B, num_classes)``.

    Args:
      x: Input batch, ``(B, 28, 28, 1)``, or flat ``(B, 784)`` MNIST images.
      train: Ignored; accepted so that all models share one call signature.
    """
    del train  # No dropout or batch norm.
    if x.ndim == 2:
      x = x.reshape((x.shape[0], *_MNIST_IMAGE_SHAPE))
    x = nn.Conv(20, (5, 5), padding="VALID", name="conv1")(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = _flatten(x)
    x = nn.relu(nn.Dense(500, name="dense1")(x))
    return nn.Dense(self.num_classes, name="dense2")(x)


class VGG16(nn.Module):
  """VGG-16 for CIFAR-10 (32x32x3 input) with batch norm.

  Thirteen 3x3 SAME convolutions, each followed by batch norm and ReLU, with
  2x2 max pooling per ``VGG16_CONFIG``; the five pools reduce 32x32 to 1x1, so
  the classifier sees ``512 * width_multiplier`` features: dense 512 (ReLU) ->
  dense ``num_classes``.

  The convolutions have no bias: the batch-norm shift that follows makes a
  bias redundant. At ``width_multiplier=1.0`` the model has 14,986,698
  parameters in ``params`` (14,710,464 conv kernels, 8,448 batch-norm
  scales/biases, 267,786 dense weights and biases) and 8,448 running
  statistics in ``batch_stats``.

  Layer names are ``conv1`` ... ``conv13``, ``bn1`` ... ``bn13``, ``dense1``
  and ``dense2``. Initialise with ``model.init(key, x, train=False)`` and train
  with ``model.apply(variables, x, train=True, mutable=["batch_stats"])``.

  Attributes:
    num_classes: Number of output logits.
    width_multiplier: Scales every conv width and the hidden dense width
      (``max(1, int(round(width * width_multiplier)))``); small values give
      cheap models for tests.
  """

  num_classes: int = 10
  width_multiplier: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(B, num_classes)``.

    Args:
      x: Input batch, ``(B, 32, 32, 3)``.
      train: If True, batch norm uses batch statistics and updates the
        running averages (the ``batch_stats`` collection must be mutable);
        otherwise it uses the running averages.
    """
    conv_index = 0
    for layer in VGG16_CONFIG:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      conv_index += 1
      x = nn.Conv(
        scaled_width(layer, self.width_multiplier),
        (3, 3),
        padding="SAME",
        use_bias=False,
        name=f"conv{conv_index}",
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        name=f"bn{conv_index}",
      )(x)
      x = nn.relu(x)
    x = _flatten(x)
    hidden_units = scaled_width(VGG16_HIDDEN_UNITS, self.width_multiplier)
    x = nn.relu(nn.Dense(hidden_units, name="dense1")(x))
    return nn.Dense(self.num_classes, name="dense2")(x)


class NNXLeNet300100(nnx.Module):
  """LeNet-300-100 as an ``nnx.Module``: 784-300-100-10 with ReLU (266,610 parameters).

  Args:
    num_classes: Number of output logits.
    rngs: Initialisation randomness (``nnx.Rngs``).
    in_features: Flattened input size (784 for MNIST-like images).
  """

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, in_features: int = 784):
    self.dense1 = nnx.Linear(in_features, 300, rngs=rngs)
    self.dense2 = nnx.Linear(300, 100, rngs=rngs)
    self.dense3 = nnx.Linear(100, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(B, num_classes)`` of ``(B, 28, 28, 1)`` or flat input."""
    del train  # No dropout or batch norm.
    x = _flatten(x)
    x = nnx.relu(self.dense1(x))
    x = nnx.relu(self.dense2(x))
    return self.dense3(x)


class NNXLeNet5(nnx.Module):
  """LeNet-5 (Caffe variant, as ``LeNet5``) as an ``nnx.Module``; 431,080 parameters.

  Args:
    num_classes: Number of output logits.
    rngs: Initialisation randomness (``nnx.Rngs``).
  """

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 20, (5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(20, 50, (5, 5), padding="VALID", rngs=rngs)
    self.dense1 = nnx.Linear(4 * 4 * 50, 500, rngs=rngs)
    self.dense2 = nnx.Linear(500, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(B, num_classes)`` of ``(B, 28, 28, 1)`` or flat ``(B, 784)`` input."""
    del train  # No dropout or batch norm.
    if x.ndim == 2:
      x = x.reshape((x.shape[0], *_MNIST_IMAGE_SHAPE))
    x = nn.max_pool(self.conv1(x), (2, 2), strides=(2, 2))
    x = nn.max_pool(self.conv2(x), (2, 2), strides=(2, 2))
    x = nnx.relu(self.dense1(_flatten(x)))
    return self.dense2(x)


# Mesh axes of the ViT's annotations: tensor parallel and FSDP.
MODEL_AXIS, FSDP_AXIS = "model", "data"


def _annotated(init: Callable, *names: str | None) -> Callable:
  return nnx.with_partitioning(init, names)


class ViTBlock(nnx.Module):
  """A pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp2(gelu(mlp1(norm2(x))))``.

  Attention and MLP are split Megatron-style over ``MODEL_AXIS`` (heads; hidden units) and
  their embedding dimension over ``FSDP_AXIS``; norms and biases are annotated too.
  """

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    xavier = nnx.initializers.xavier_uniform()
    zeros, ones = nnx.initializers.zeros_init(), nnx.initializers.ones_init()
    norm = {"scale_init": _annotated(ones, FSDP_AXIS), "bias_init": _annotated(zeros, FSDP_AXIS)}
    self.norm1 = nnx.LayerNorm(dim, **norm, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      heads,
      dim,
      kernel_init=_annotated(xavier, FSDP_AXIS, MODEL_AXIS, None),  # (embed, heads, head_dim)
      bias_init=_annotated(zeros, MODEL_AXIS, None),
      out_kernel_init=_annotated(xavier, MODEL_AXIS, None, FSDP_AXIS),
      out_bias_init=_annotated(zeros, FSDP_AXIS),
      decode=False,
      rngs=rngs,
    )
    self.norm2 = nnx.LayerNorm(dim, **norm, rngs=rngs)
    self.mlp1 = nnx.Linear(
      dim,
      mlp_dim,
      kernel_init=_annotated(xavier, FSDP_AXIS, MODEL_AXIS),
      bias_init=_annotated(zeros, MODEL_AXIS),
      rngs=rngs,
    )
    self.mlp2 = nnx.Linear(
      mlp_dim,
      dim,
      kernel_init=_annotated(xavier, MODEL_AXIS, FSDP_AXIS),
      bias_init=_annotated(zeros, FSDP_AXIS),
      rngs=rngs,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp2(nnx.gelu(self.mlp1(self.norm2(x))))


class ViT(nnx.Module):
  """A vision transformer for 28x28 images: ``patch_size`` patches embedded by a strided
  convolution, a class token, learned position embeddings, ``depth`` pre-LN blocks, a
  final LayerNorm and a linear head on the class token (``cls_token``, ``pos_embedding``,
  ``patch_embed``, ``block{i}``, ``norm``, ``head``).

  With the defaults (dim 64, depth 2, 4 heads, MLP 128, 7x7 patches: 17 tokens) it has
  72,074 parameters. Under the default prunable rule the kernels and the position
  embedding (a 2-D ``*embedding``) are pruned; the class token, biases and norm scales stay
  dense.
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    rngs: nnx.Rngs,
    image_size: int = 28,
    channels: int = 1,
    patch_size: int = 7,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_dim: int = 128,
  ):
    if image_size % patch_size:
      raise ValueError(f"patch_size={patch_size} does not divide image_size={image_size}.")
    tokens = (image_size // patch_size) ** 2 + 1
    self.patch_embed = nnx.Conv(
      channels,
      dim,
      (patch_size, patch_size),
      strides=(patch_size, patch_size),
      padding="VALID",
      kernel_init=_annotated(nnx.initializers.lecun_normal(), None, None, None, FSDP_AXIS),
      bias_init=_annotated(nnx.initializers.zeros_init(), FSDP_AXIS),
      rngs=rngs,
    )
    self.cls_token = nnx.Param(jnp.zeros((dim,)), out_sharding=(FSDP_AXIS,))
    self.pos_embedding = nnx.Param(
      nnx.initializers.normal(0.02)(rngs.params(), (tokens, dim)), out_sharding=(None, FSDP_AXIS)
    )
    self.depth = depth
    for i in range(depth):
      setattr(self, f"block{i}", ViTBlock(dim, heads, mlp_dim, rngs=rngs))
    self.norm = nnx.LayerNorm(
      dim,
      scale_init=_annotated(nnx.initializers.ones_init(), FSDP_AXIS),
      bias_init=_annotated(nnx.initializers.zeros_init(), FSDP_AXIS),
      rngs=rngs,
    )
    self.head = nnx.Linear(
      dim,
      num_classes,
      kernel_init=_annotated(nnx.initializers.zeros_init(), FSDP_AXIS, None),
      bias_init=_annotated(nnx.initializers.zeros_init(), None),
      rngs=rngs,
    )

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(B, num_classes)`` of ``(B, 28, 28, 1)`` or flat ``(B, 784)`` input."""
    del train  # No dropout.
    if x.ndim == 2:
      x = x.reshape((x.shape[0], *_MNIST_IMAGE_SHAPE))
    x = self.patch_embed(x)
    x = x.reshape((x.shape[0], -1, x.shape[-1]))
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding[...]
    for i in range(self.depth):
      x = getattr(self, f"block{i}")(x)
    return self.head(self.norm(x)[:, 0])


_NNX_MODEL_FACTORIES: dict[str, Callable[..., nnx.Module]] = {
  "lenet300": NNXLeNet300100,
  "lenet5": NNXLeNet5,
  "vit": ViT,
}

NNX_MODEL_NAMES: Sequence[str] = tuple(_NNX_MODEL_FACTORIES)


def get_nnx_model(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Returns an NNX model by name (``"lenet300"``, ``"lenet5"`` or ``"vit"``), initialised
  from ``rngs``.

  Raises:
    ValueError: If ``name`` has no NNX version.
  """
  try:
    factory = _NNX_MODEL_FACTORIES[name]
  except KeyError:
    raise ValueError(
      f"No NNX version of model {name!r}; NNX models: {', '.join(NNX_MODEL_NAMES)}."
    ) from None
  return factory(rngs=rngs, **kwargs)


_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {
  "lenet300": LeNet300100,
  "lenet5": LeNet5,
  "vgg16": VGG16,
}

LINEN_MODEL_NAMES: Sequence[str] = tuple(_MODEL_FACTORIES)
# Every model, linen or NNX (the ViT is NNX only).
MODEL_NAMES: Sequence[str] = (
  *LINEN_MODEL_NAMES,
  *(n for n in NNX_MODEL_NAMES if n not in _MODEL_FACTORIES),
)


def get_model(name: str, **kwargs) -> nn.Module:
  """Returns a model instance by name.

  Args:
    name: One of ``"lenet300"``, ``"lenet5"``, ``"vgg16"``.
    **kwargs: Passed to the model constructor, e.g. ``num_classes`` or
      ``width_multiplier`` (VGG16 only).

  Returns:
    An unbound ``flax.linen.Module``.

  Raises:
    ValueError: If ``name`` is not a known model.
  """
  try:
    factory = _MODEL_FACTORIES[name]
  except KeyError:
    raise ValueError(
      f"Unknown linen model {name!r}; linen models: {', '.join(LINEN_MODEL_NAMES)}."
    ) from None
  return factory(**kwargs)


def num_params(params) -> int:
  """Returns the total number of scalars in a parameter pytree.

  Works on concrete arrays and on ``jax.ShapeDtypeStruct`` leaves (the output
  of ``jax.eval_shape``).
  """
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
