"""Compact export of a pruned model: per-leaf flat indices + values.

A pruned leaf with ``k`` kept weights of ``n`` is stored as the ``k`` flat indices
(the smallest unsigned integer type that can address ``n`` entries) and the ``k``
values; every other leaf stays dense. The round trip back to dense params is exact.
For inference, :func:`to_bcoo` turns a stored kernel into a
``jax.experimental.sparse.BCOO`` matrix.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from droppruning_jax import masks as masks_lib

PyTree = Any


class SparseLeaf(NamedTuple):
  """One pruned leaf in compact form.

  Attributes:
    indices: flat (row-major) indices of the kept weights, ascending, unsigned.
    values: the kept weights, in the leaf's dtype.
    shape: the dense shape.
  """

  indices: np.ndarray
  values: np.ndarray
  shape: tuple[int, ...]

  @property
  def nbytes(self) -> int:
    return int(self.indices.nbytes + self.values.nbytes)


def _index_dtype(size: int) -> np.dtype:
  for dtype in (np.uint8, np.uint16, np.uint32):
    if size - 1 <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def _is_sparse_leaf(x: Any) -> bool:
  return isinstance(x, SparseLeaf)


def export_sparse(params: PyTree, masks: PyTree) -> PyTree:
  """Exports params with every prunable leaf as a :class:`SparseLeaf`.

  Args:
    params: the (masked) parameters.
    masks: their mask tree (e.g. ``dp.get_masks(opt_state)``).

  Returns:
    A tree of the same structure: ``SparseLeaf`` for prunable leaves, NumPy arrays
    for the others.

  Raises:
    ValueError: if the trees do not match.
  """
  masks = masks_lib.unpack_masks(masks)
  masks_lib.check_masks_match(params, masks)

  def export_leaf(param, mask):
    param = np.asarray(param)
    if not masks_lib.is_prunable_mask(mask):
      return param
    flat_mask = np.asarray(mask).reshape(-1)
    indices = np.flatnonzero(flat_mask).astype(_index_dtype(flat_mask.size))
    return SparseLeaf(indices=indices, values=param.reshape(-1)[indices], shape=param.shape)

  return jax.tree.map(export_leaf, params, masks)


def sparse_to_dense(exported: PyTree) -> PyTree:
  """Rebuilds dense params (pruned entries exactly 0) from :func:`export_sparse` output."""

  def dense_leaf(leaf):
    if not _is_sparse_leaf(leaf):
      return jnp.asarray(leaf)
    flat = np.zeros(int(np.prod(leaf.shape)), dtype=leaf.values.dtype)
    flat[leaf.indices.astype(np.int64)] = leaf.values
    return jnp.asarray(flat.reshape(leaf.shape))

  return jax.tree.map(dense_leaf, exported, is_leaf=_is_sparse_leaf)


def params_nbytes(tree: PyTree) -> int:
  """Bytes of a params tree, dense or exported (indices + values for sparse leaves)."""
  leaves = jax.tree.leaves(tree, is_leaf=_is_sparse_leaf)
  return int(
    sum(leaf.nbytes if _is_sparse_leaf(leaf) else np.asarray(leaf).nbytes for leaf in leaves)
  )


def nonzero_count(exported: PyTree) -> int:
  """Number of stored weights: kept entries of sparse leaves plus every dense entry."""
  leaves = jax.tree.leaves(exported, is_leaf=_is_sparse_leaf)
  return int(sum(leaf.values.size if _is_sparse_leaf(leaf) else np.size(leaf) for leaf in leaves))


def to_bcoo(leaf: SparseLeaf) -> sparse.BCOO:
  """A ``BCOO`` matrix of a stored kernel, for sparse inference (``x @ bcoo``)."""
  coords = np.stack(np.unravel_index(leaf.indices.astype(np.int64), leaf.shape), axis=-1)
  return sparse.BCOO(
    (jnp.asarray(leaf.values), jnp.asarray(coords, jnp.int32)),
    shape=leaf.shape,
    indices_sorted=True,
    unique_indices=True,
  )
