"""Where the train state and the batches live on the devices (``config.parallel``).

A placement puts the state and the batches on the devices and reads them back, gives
the step its reductions over the replicas (:meth:`mean`, :meth:`total`), and compiles
the step functions it is handed: :class:`PmapPlacement` (``jax.pmap`` over the local
devices) and :class:`JitPlacement` (``jax.jit`` over a mesh of all devices, optionally
FSDP or following the model's sharding annotations). The steps themselves are built in
:mod:`experiments.steps`; everything else in the loop is shared by both placements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import flax.jax_utils
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from droppruning_jax import masks as masks_lib
from droppruning_jax import skeleton
from experiments import config_checks, methods

if TYPE_CHECKING:
  from experiments.steps import TrainState

PyTree = Any


class PmapPlacement:
  """``parallel="pmap"``: the state replicated on the local devices (leading axis =
  device), batches split per device, ``jax.pmap`` steps.

  The placements share the loop; they differ only in how the state and the batches
  are put on the devices and read back, in how a step reduces over the replicas, and
  in how the step is compiled.
  """

  def __init__(self, devices: Optional[list]):
    self.devices = devices

  def restore_target(self, state: TrainState) -> TrainState:
    """What a checkpoint restores into: the host state (replicated after)."""
    return state

  def put_state(self, state: TrainState) -> TrainState:
    return flax.jax_utils.replicate(state, self.devices)

  def get_state(self, state: TrainState) -> TrainState:
    return unreplicate(state)

  def put_batch(self, *arrays: np.ndarray) -> tuple:
    """Arrays of shape ``(num_local_devices, per_device, ...)`` as the step takes them."""
    return arrays

  def scalar(self, value) -> float:
    """A reduced metric of a step, fetched to the host, as a float."""
    return float(value[0])

  @staticmethod
  def mean(tree: PyTree) -> PyTree:
    """Inside a step: the mean of ``tree`` over the replicas (``pmean`` over "batch")."""
    return jax.lax.pmean(tree, "batch")

  @staticmethod
  def total(tree: PyTree) -> PyTree:
    """Inside a step: the sum of ``tree`` over the replicas (``psum`` over "batch")."""
    return jax.lax.psum(tree, "batch")

  def compile_train_step(self, step: Callable, batch_arrays: int = 2) -> Callable:
    """A train step ``(state, *batch) -> (state, metrics)`` built with :meth:`mean`, as
    a ``jax.pmap`` over the devices (``batch_arrays``: unused, every argument is split
    along its leading device axis)."""
    del batch_arrays
    # The state is donated: its buffers are reused for the new state, and state that a
    # step passes through unchanged (the masks between pruning steps) is not copied.
    return jax.pmap(step, axis_name="batch", devices=self.devices, donate_argnums=(0,))

  def compile_eval_step(self, step: Callable) -> Callable:
    """An eval step built with :meth:`total`, as a ``jax.pmap`` over the devices."""
    return jax.pmap(step, axis_name="batch", devices=self.devices)


def fsdp_spec(shape: tuple[int, ...], axis: str, size: int) -> P:
  """How FSDP shards an array over mesh axis ``axis`` of ``size`` devices: its largest
  dimension divisible by ``size`` (the first of equals); replicated if none is."""
  dims = [d for d in range(len(shape)) if shape[d] % size == 0 and shape[d] >= size]
  if size == 1 or not dims:
    return P()
  dim = max(dims, key=lambda d: (shape[d], -d))
  return P(*(axis if d == dim else None for d in range(len(shape))))


def annotated_state_sharding(mesh: jax.sharding.Mesh, state, param_specs) -> Any:
  """Shardings of a train state on ``mesh`` that follow the params' annotations.

  A parameter takes its ``PartitionSpec``, with the axis names that ``mesh`` lacks
  replicated (so one annotated model runs on a 1-device mesh and on ``(data, model)``);
  an optimizer-state leaf (moments, masks, a stash) takes the sharding of the parameter
  whose key path its own ends with (the longest such), if it has that parameter's
  shape; every other leaf (counts, scalar mask markers, RNG keys) is replicated.

  Returns:
    A tree of ``NamedSharding`` of the type of ``state`` (a ``steps.TrainState``).

  Raises:
    ValueError: an annotated dimension that the mesh axis does not divide, named.
  """
  replicated = NamedSharding(mesh, P())
  owners = {}
  for (path, leaf), spec in zip(
    jax.tree_util.tree_flatten_with_path(state.params)[0],
    jax.tree.leaves(param_specs, is_leaf=methods.is_spec),
  ):
    names = tuple(n if n in mesh.shape else None for n in spec)
    for dim, name in zip(np.shape(leaf), names):
      if name is not None and dim % mesh.shape[name]:
        raise ValueError(
          f"parameter {masks_lib.path_to_str(path)} of shape {np.shape(leaf)} is annotated "
          f"{spec}, but mesh axis {name!r} of size {mesh.shape[name]} does not divide {dim}."
        )
    owners[skeleton.path_key(path)] = (np.shape(leaf), NamedSharding(mesh, P(*names)))

  def sharding(hit, leaf):
    shape, param_sharding = hit
    return param_sharding if np.shape(leaf) == shape else replicated

  def by_param(tree):
    return skeleton.map_by_param_path(sharding, tree, owners, default=lambda _: replicated)

  return state._replace(
    params=by_param(state.params),
    batch_stats=jax.tree.map(lambda _: replicated, state.batch_stats),
    opt_state=by_param(state.opt_state),
  )


class JitPlacement:
  """``parallel="jit"``: one global array per state leaf on a mesh of all devices of all
  processes (``config.mesh_shape`` / ``mesh_axes``), ``jax.jit`` steps.

  The batch is sharded over every mesh axis; the params and the optimizer state are
  replicated, or with ``config.fsdp_axis`` sharded over that axis (:func:`fsdp_spec`,
  by shape, so a mask takes its parameter's sharding), or, for a model whose parameters
  carry sharding annotations (``param_specs``, e.g. the ViT), placed by them
  (:func:`annotated_state_sharding`). The mesh axes are ``AxisType.Auto``: XLA places
  the collectives.
  """

  def __init__(
    self, config: ml_collections.ConfigDict, devices: Optional[list], state, param_specs=None
  ):
    devices = devices if devices is not None else jax.devices()
    names = tuple(config.mesh_axes)
    self.mesh = jax.sharding.Mesh(
      np.asarray(devices).reshape(config_checks.mesh_shape(config)),
      names,
      axis_types=(jax.sharding.AxisType.Auto,) * len(names),
    )
    self.batch_sharding = NamedSharding(self.mesh, P(names))
    self.replicated = NamedSharding(self.mesh, P())
    fsdp = None if config_checks.is_unset(config.fsdp_axis) else config.fsdp_axis

    def sharding(leaf):
      if fsdp is None:
        return self.replicated
      return NamedSharding(self.mesh, fsdp_spec(np.shape(leaf), fsdp, self.mesh.shape[fsdp]))

    if param_specs is not None:
      self.state_sharding = annotated_state_sharding(self.mesh, state, param_specs)
    else:
      self.state_sharding = jax.tree.map(sharding, state)

  def restore_target(self, state: TrainState) -> TrainState:
    """What a checkpoint restores into: every leaf's shape, dtype and sharding on the
    mesh, so that orbax reads each device's shards directly onto it."""
    return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(
        np.shape(leaf), np.asarray(leaf).dtype, sharding=sharding
      ),
      state,
      self.state_sharding,
    )

  def put_state(self, state: TrainState) -> TrainState:
    def put(leaf, sharding):
      if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        # Restored onto the mesh already: a copy on the devices, as the step donates
        # (consumes) the state it is given.
        return jax.device_put(leaf, sharding, may_alias=False)
      leaf = np.asarray(leaf)
      return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(put, state, self.state_sharding)

  def get_state(self, state: TrainState) -> TrainState:
    return jax.tree.map(_to_host, state)

  def put_batch(self, *arrays: np.ndarray) -> tuple:
    """This process's ``(num_local_devices, per_device, ...)`` arrays as global arrays."""
    return tuple(
      jax.make_array_from_process_local_data(
        self.batch_sharding, np.reshape(a, (-1, *np.shape(a)[2:]))
      )
      for a in arrays
    )

  def scalar(self, value) -> float:
    return float(value)

  @staticmethod
  def mean(tree: PyTree) -> PyTree:
    """Inside a step: ``tree`` itself (a jit step sees the whole batch)."""
    return tree

  @staticmethod
  def total(tree: PyTree) -> PyTree:
    """Inside a step: ``tree`` itself (a jit step sees the whole batch)."""
    return tree

  def compile_train_step(self, step: Callable, batch_arrays: int = 2) -> Callable:
    """A train step ``(state, *batch) -> (state, metrics)`` built with :meth:`mean`, as
    a ``jax.jit`` on the mesh, donating the state; ``batch_arrays``: how many batch
    arguments follow the state (images, labels[, teacher logits])."""
    return jax.jit(
      step,
      in_shardings=(self.state_sharding, *[self.batch_sharding] * batch_arrays),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=(0,),
    )

  def compile_eval_step(self, step: Callable) -> Callable:
    """An eval step ``(params, batch_stats, images, labels, weights) -> sums`` built with
    :meth:`total`, as a ``jax.jit`` on the mesh."""
    state = self.state_sharding
    batch = self.batch_sharding
    return jax.jit(
      step,
      in_shardings=(state.params, state.batch_stats, batch, batch, batch),
      out_shardings=self.replicated,
    )


def _to_host(x) -> np.ndarray:
  """A global array as a host NumPy array (a copy), gathered over the processes."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.array(multihost_utils.process_allgather(x, tiled=True))
  return np.array(x)


def make_placement(
  config: ml_collections.ConfigDict, devices: Optional[list], state, param_specs=None
):
  """The placement of ``config.parallel`` (``state``: a host state, for its shapes;
  ``param_specs``: the model's sharding annotations, which ``jit`` follows)."""
  if config.parallel == "jit":
    return JitPlacement(config, devices, state, param_specs)
  return PmapPlacement(devices)


def unreplicate(tree: PyTree) -> PyTree:
  """Replica 0 of a pmapped tree as host NumPy arrays (a copy)."""
  return jax.tree.map(lambda x: np.array(x[0]), tree)
