"""Masks: boolean pytrees that mirror a parameter tree.

A mask tree has exactly the structure of the params it belongs to. A prunable leaf
gets a boolean array of the leaf's shape (``True`` = the weight is kept); every
other leaf gets a scalar ``True`` marker, so that ``jax.tree.map(f, params, masks)``
works without ``None`` leaves and non-prunable leaves broadcast as "keep all".
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Callable, Mapping
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from droppruning_jax.selection import sharded_spec

PyTree = Any
PrunablePredicate = Callable[[str, Any], bool]


def path_to_str(path: tuple[Any, ...]) -> str:
  """Returns a readable ``"a/b/kernel"`` string for a ``jax.tree_util`` key path.

  A Flax NNX variable (an ``nnx.Param`` in an ``nnx.Optimizer``'s state) flattens to its
  ``.value`` attribute; the path names the variable, ``"hidden/kernel"``, as ``nnx.state``
  and the linen params do, so one name works in ``prunable``, per-layer targets and
  :func:`layer_sparsity` whichever API built the tree.
  """
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(str(key.name))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key))
  return "/".join(parts)


def leaf_paths(tree: PyTree) -> list[str]:
  """Returns the ``"a/b/kernel"`` path of every leaf, in ``jax.tree.leaves`` order."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [path_to_str(path) for path, _ in with_path]


# Parameter names that are never pruned by default, whatever their rank: biases (also
# MultiHeadAttention's 2-D (heads, head_dim) ones) and normalization scales.
NEVER_PRUNED_NAMES = ("bias", "scale")


def default_prunable(path: str, leaf: Any) -> bool:
  """Default predicate: prune kernels, weight matrices and embeddings; never biases or
  normalization scales, whatever their rank.

  A leaf is pruned when it has ``ndim >= 2`` and its name (the last part of its path)
  is not ``bias`` or ``scale``: the kernels of ``Dense`` / ``nnx.Linear``, ``Conv``,
  ``Einsum`` and ``MultiHeadAttention``'s query/key/value/out projections, and
  ``Embed``'s ``embedding`` (the same names in linen and NNX). Biases, including
  ``MultiHeadAttention``'s 2-D ``(heads, head_dim)`` ones, and LayerNorm / BatchNorm /
  RMSNorm scales stay dense: they hold few parameters and pruning them hurts accuracy
  disproportionately.

  Embeddings are pruned, as the weight matrices they are (the largest ones of many
  language models); to keep them dense pass e.g.
  ``prunable=lambda path, leaf: dp.default_prunable(path, leaf) and not
  path.endswith("embedding")``.

  Args:
    path: the leaf's ``"a/b/kernel"`` path.
    leaf: the parameter array.

  Returns:
    Whether the leaf is pruned.
  """
  return np.ndim(leaf) >= 2 and path.rsplit("/", 1)[-1] not in NEVER_PRUNED_NAMES


# The metadata keys under which Flax records a parameter's sharding: nnx Variables'
# ``out_sharding`` (with its ``mesh``), older ``sharding`` / ``sharding_names``.
_SHARDING_METADATA = ("out_sharding", "sharding", "sharding_names", "mesh")


def _is_box(x: Any) -> bool:
  """A parameter wrapped with metadata: an nnx Variable or a linen ``AxisMetadata``
  (``nn.Partitioned``, ``nn.LogicallyPartitioned``)."""
  nnx = sys.modules.get("flax.nnx")
  meta = sys.modules.get("flax.core.meta")
  return (nnx is not None and isinstance(x, nnx.Variable)) or (
    meta is not None and isinstance(x, meta.AxisMetadata)
  )


def unannotate_scalars(tree: PyTree) -> PyTree:
  """``tree`` with the sharding annotations of its rank-0 boxed leaves removed.

  Per-parameter state of a non-pruned parameter (its mask marker, its stash entry) is a
  scalar, but built by mapping over the params it inherits the parameter's box and
  sharding annotation (e.g. ``P("model")``), which ``nnx.Optimizer`` would apply to the
  scalar. A scalar is replicated instead. Unboxed trees come back unchanged.
  """

  def strip(x):
    if not _is_box(x):
      return x
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(x, nnx.Variable):
      value = x.get_value()
      if np.ndim(value) > 0:
        return x
      metadata = {k: v for k, v in x.get_metadata().items() if k not in _SHARDING_METADATA}
      return type(x)(value, **metadata)
    value = x.unbox()
    if np.ndim(value) > 0 or not hasattr(x, "names"):
      return x
    return x.replace(value=value, names=())

  return jax.tree.map(strip, tree, is_leaf=_is_box)


def _marker() -> jax.Array:
  return jnp.ones((), dtype=jnp.bool_)


def _ones_like(leaf: Any) -> jax.Array:
  """An all-``True`` mask of ``leaf``'s shape, with ``leaf``'s sharding when it is sharded."""
  sharding = getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None
  if isinstance(sharding, jax.sharding.NamedSharding) and not sharding.is_fully_replicated:
    return jnp.ones_like(leaf, dtype=jnp.bool_)
  if sharded_spec(leaf) is not None:  # traced under an explicit mesh
    return jnp.ones_like(leaf, dtype=jnp.bool_)
  return jnp.ones(np.shape(leaf), dtype=jnp.bool_)


def is_prunable_mask(mask: Any) -> bool:
  """Whether a mask leaf is a real mask (an array) rather than the scalar marker."""
  return np.ndim(mask) > 0


def init_masks(
  params: PyTree, prunable: PrunablePredicate | None = None, *, like_params: bool = False
) -> PyTree:
  """Creates all-``True`` masks mirroring ``params``.

  Args:
    params: a pytree of arrays (e.g. Flax ``variables['params']``).
    prunable: ``prunable(path, leaf) -> bool`` selecting the pruned leaves, where
      ``path`` is the ``"a/b/kernel"`` path string. Defaults to
      :func:`default_prunable` (kernels and embeddings, never biases or norm scales).
    like_params: keep every boxed parameter's metadata on its mask (Flax NNX variables,
      ``nn.Partitioned``), so that the masks map together with ``params``; by default a
      non-pruned parameter's scalar marker loses its sharding annotation
      (:func:`unannotate_scalars`), as state kept in an optimizer must.

  Returns:
    A tree of the same structure: a boolean array of the leaf's shape for every
    prunable leaf and a scalar ``True`` marker for every other leaf.

  Raises:
    ValueError: if a prunable leaf is not floating point or is a scalar.
  """
  prunable = default_prunable if prunable is None else prunable
  with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  masks = []
  for path, leaf in with_path:
    name = path_to_str(path)
    if prunable(name, leaf) and np.size(leaf) > 0:  # an empty leaf has nothing to prune
      dtype = getattr(leaf, "dtype", None)
      if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
          f"prunable leaf {name!r} has dtype {dtype}; only floating point "
          "leaves can be pruned (adjust the `prunable` predicate)."
        )
      if np.ndim(leaf) == 0:
        raise ValueError(
          f"prunable leaf {name!r} is a scalar; only arrays with ndim >= 1 "
          "can be pruned (adjust the `prunable` predicate)."
        )
      masks.append(_ones_like(leaf))
    else:
      masks.append(_marker())
  masks = jax.tree_util.tree_unflatten(treedef, masks)
  # A non-pruned parameter's scalar marker must not carry the parameter's sharding;
  # ``like_params`` keeps the params' boxes, for maps over params and masks together.
  return masks if like_params else unannotate_scalars(masks)


def check_masks_match(params: PyTree, masks: PyTree) -> None:
  """Raises ``ValueError`` unless ``masks`` is a valid mask tree for ``params``.

  Runs on shapes only, so it is free inside ``jit`` (it runs at trace time).
  """
  _check_tree_matches_masks(params, masks, "masks do not match params", "params")


# apply_masks cannot know what its first argument is. A pruning transformation's update
# checks the masks against the params and then masks the gradients with apply_masks, so a
# mismatch found there means the gradients do not match the params: the message says so.
_APPLY_MASKS_HEADLINE = "apply_masks: the tree to mask does not match its masks"
_APPLY_MASKS_NOTE = (
  " Raised from a pruning transformation's tx.update(updates, state, params), this means "
  "the gradients (the `updates` argument) do not match the params: they must have the "
  "params' tree structure and leaf shapes (the masks mirror the params)."
)
_SHOWN_LEAVES = 8  # leaves listed per tree in a mismatch message


def _check_tree_matches_masks(
  tree: PyTree, masks: PyTree, headline: str, tree_name: str, note: str = ""
) -> None:
  """``check_masks_match`` for any tree; the messages name ``tree`` as ``tree_name``."""
  tree_def = jax.tree.structure(tree)
  masks_def = jax.tree.structure(masks)
  if tree_def != masks_def:
    raise ValueError(
      f"{headline}: the tree structures differ.{note}\n"
      + _structure_difference(tree, masks, tree_def, masks_def, tree_name)
    )
  for name, leaf, mask in zip(leaf_paths(tree), jax.tree.leaves(tree), jax.tree.leaves(masks)):
    if is_prunable_mask(mask) and np.shape(mask) != np.shape(leaf):
      raise ValueError(
        f"{headline}: {name!r} has shape {np.shape(leaf)} in the {tree_name} but its mask "
        f"has shape {np.shape(mask)}.{note}\n"
        + _leaf_lines(tree, masks, tree_name, keep=lambda n: n == name)
      )
    if getattr(mask, "dtype", jnp.bool_) != jnp.bool_:
      raise ValueError(f"mask for {name!r} has dtype {mask.dtype}, expected bool.")


def _shape_text(leaf: Any, *, is_mask: bool) -> str:
  if is_mask and not is_prunable_mask(leaf):
    return "(not pruned, any shape)"
  return str(tuple(np.shape(leaf)))


def _listing(tree: PyTree, *, is_mask: bool, keep=lambda name: True) -> str:
  """``"a/kernel (4, 4), a/bias (4,)"``: the first leaves of ``tree`` with their shapes."""
  items = [
    f"{name} {_shape_text(leaf, is_mask=is_mask)}"
    for name, leaf in zip(leaf_paths(tree), jax.tree.leaves(tree))
    if keep(name)
  ]
  return _first(items) or "(no leaves)"


def _leaf_lines(tree: PyTree, masks: PyTree, tree_name: str, keep=lambda name: True) -> str:
  width = max(len(tree_name), len("masks")) + 1
  return (
    f"  {tree_name + ':':<{width}} {_listing(tree, is_mask=False, keep=keep)}\n"
    f"  {'masks:':<{width}} {_listing(masks, is_mask=True, keep=keep)}"
  )


def _structure_difference(tree: PyTree, masks: PyTree, tree_def, masks_def, tree_name) -> str:
  """The leaves only one of the trees has, then both trees' leaves and shapes."""
  tree_names, mask_names = leaf_paths(tree), leaf_paths(masks)
  tree_set, mask_set = set(tree_names), set(mask_names)
  only_tree = [repr(n) for n in tree_names if n not in mask_set]
  only_masks = [repr(n) for n in mask_names if n not in tree_set]
  lines = []
  if only_tree:
    lines.append(f"  only in the {tree_name}: {_first(only_tree)}")
  if only_masks:
    lines.append(f"  only in the masks: {_first(only_masks)}")
  if not (only_tree or only_masks):  # the same leaves in other containers (tuple vs list, ...)
    lines.append(f"  {tree_name} structure: {tree_def}\n  masks structure: {masks_def}")
  return "\n".join(lines + [_leaf_lines(tree, masks, tree_name)])


def _first(items: list[str]) -> str:
  more = len(items) - _SHOWN_LEAVES
  return ", ".join(items[:_SHOWN_LEAVES]) + (f", ... ({more} more)" if more > 0 else "")


@dataclasses.dataclass(frozen=True, eq=False)  # eq over a jax.Array would be ambiguous
class PackedMask:
  """A prunable leaf's mask stored as bits: 8 weights per byte instead of 1.

  Attributes:
    bits: ``uint8[ceil(size / 8)]``, the row-major flattened mask packed by
      ``jnp.packbits`` (a pytree child: it is sharded, replicated and checkpointed
      like any other state array).
    shape: the mask's shape (static pytree metadata).
  """

  bits: jax.Array
  shape: tuple[int, ...]


jax.tree_util.register_dataclass(PackedMask, data_fields=["bits"], meta_fields=["shape"])
# flax.serialization (to_bytes / from_bytes, msgpack checkpoints) restores the bits into
# a target state, whose PackedMask leaves carry the static shape.
flax.serialization.register_serialization_state(
  PackedMask,
  lambda mask: {"bits": mask.bits},
  lambda mask, state: dataclasses.replace(mask, bits=state["bits"]),
)


def _is_packed(x: Any) -> bool:
  return isinstance(x, PackedMask)


def pack_masks(masks: PyTree) -> PyTree:
  """Replaces every prunable mask by a :class:`PackedMask` (1 bit per weight).

  The scalar markers of non-prunable leaves stay as they are. Already packed
  leaves are kept, so packing twice is harmless.

  Args:
    masks: a boolean mask tree.

  Returns:
    The same tree with prunable leaves packed; :func:`unpack_masks` inverts it.
  """

  def pack(mask):
    if _is_packed(mask) or not is_prunable_mask(mask):
      return mask
    if sharded_spec(mask) is not None:
      return PackedMask(_pack_sharded(mask), tuple(np.shape(mask)))
    return PackedMask(jnp.packbits(jnp.ravel(mask)), tuple(np.shape(mask)))

  return jax.tree.map(pack, masks, is_leaf=_is_packed)


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # jnp.packbits' big-endian bit order


def _named(x: jax.Array, *spec) -> jax.sharding.NamedSharding:
  """``PartitionSpec(*spec)`` on the mesh of ``x``'s type (no mesh context needed)."""
  return jax.sharding.NamedSharding(jax.typeof(x).sharding.mesh, jax.sharding.PartitionSpec(*spec))


def _pack_sharded(mask: jax.Array) -> jax.Array:
  """``jnp.packbits(jnp.ravel(mask))`` for a mask with an explicit sharding.

  The bits are sharded like the mask's first axis: for a mask sharded on its first
  axis over ``d`` devices with ``size / d`` a multiple of 8 every device packs its own
  rows. Other shardings are resharded by the reshapes (XLA moves the data); a size
  that is not a multiple of 8, or whose bytes do not split evenly, is packed replicated.
  """
  size = mask.size
  first = sharded_spec(mask)[0]
  if first is not None:
    mesh = jax.typeof(mask).sharding.mesh
    shards = int(
      np.prod([mesh.shape[a] for a in (first if isinstance(first, tuple) else (first,))])
    )
    if (size // 8) % shards:
      first = None  # the bits cannot split evenly: kept replicated
  if size % 8:
    flat = jax.lax.reshape(mask, (size,), out_sharding=_named(mask))
    return jax.sharding.reshard(jnp.packbits(flat), _named(mask))
  rows = jax.lax.reshape(mask, (size // 8, 8), out_sharding=_named(mask, first, None))
  weights = jnp.asarray(_BIT_WEIGHTS, jnp.uint8)
  return jnp.sum(jnp.where(rows, weights, jnp.uint8(0)), axis=1, dtype=jnp.uint8)


def _unpack_sharded(bits: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Inverse of :func:`_pack_sharded`: the mask, sharded on its first axis like the bits."""
  first = sharded_spec(bits)[0]
  size = int(np.prod(shape))
  spec = _named(bits, first, *([None] * (len(shape) - 1)))
  if size % 8:
    flat = jnp.unpackbits(jax.sharding.reshard(bits, _named(bits)), count=size)
    return jax.sharding.reshard(flat.reshape(shape).astype(jnp.bool_), spec)
  weights = jnp.asarray(_BIT_WEIGHTS, jnp.uint8)
  rows = (bits[:, None] & weights) != 0
  return jax.lax.reshape(rows, shape, out_sharding=spec)


def unpack_masks(masks: PyTree, like: PyTree | None = None) -> PyTree:
  """Boolean masks from a tree that may hold :class:`PackedMask` leaves.

  A tree without packed leaves is returned unchanged, so callers need not know how
  a state stores its masks. Inside ``jit`` the unpacking is elementwise and fuses
  into the computation that reads the mask.

  Args:
    masks: a mask tree, packed or not (not replicated).
    like: optional params tree; under an explicit mesh each unpacked mask is
      resharded to its parameter's sharding (a no-op otherwise).

  Returns:
    The boolean mask tree mirroring the params.
  """

  def unpack(mask):
    if not _is_packed(mask):
      return mask
    if np.ndim(mask.bits) != 1:
      raise ValueError(
        f"packed mask bits have shape {np.shape(mask.bits)}, expected one axis: unpack "
        "one replica (dp.get_masks(opt_state) does) or unpack inside pmap/vmap."
      )
    size = int(np.prod(mask.shape))
    if sharded_spec(mask.bits) is not None:
      return _unpack_sharded(mask.bits, mask.shape)
    return jnp.unpackbits(mask.bits, count=size).reshape(mask.shape).astype(jnp.bool_)

  if like is None:
    return jax.tree.map(unpack, masks, is_leaf=_is_packed)

  def unpack_like(mask, param):
    spec = sharded_spec(param)
    unpacked = unpack(mask)
    if _is_packed(mask) and spec is not None and sharded_spec(unpacked) != spec:
      unpacked = jax.sharding.reshard(unpacked, jax.typeof(param).sharding)
    return unpacked

  return jax.tree.map(unpack_like, masks, like, is_leaf=_is_packed)


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
  """Zeroes the pruned entries of ``params``.

  Args:
    params: a pytree of arrays.
    masks: a mask tree from :func:`init_masks` or :func:`droppruning_jax.get_masks`
      (packed masks are unpacked).

  Returns:
    ``params`` with every entry whose mask is ``False`` set to exactly ``0``.

  Raises:
    ValueError: if the trees or the leaf shapes do not match (the message calls
      ``params`` "the tree to mask": a pruning transformation's ``update`` masks the
      gradients with this function, so the message also says what a mismatch means
      there).
  """
  masks = unpack_masks(masks)
  _check_tree_matches_masks(
    params, masks, _APPLY_MASKS_HEADLINE, "tree to mask", note=_APPLY_MASKS_NOTE
  )
  return jax.tree.map(
    lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)) if is_prunable_mask(m) else p,
    params,
    masks,
  )


def masked_updates(
  updates: PyTree,
  params: PyTree,
  new_masks: PyTree,
  old_masks: PyTree | None = None,
  regrow: PyTree | None = None,
) -> PyTree:
  """Updates after which ``optax.apply_updates(params, updates)`` is exactly masked.

  Kept weights take ``u``; pruned weights get ``-p`` (so ``p + (-p)`` is exactly
  ``0.0``); weights revived now (in ``new_masks`` but not ``old_masks``) were exactly
  ``0`` and get ``regrow - p``, i.e. they restart at ``regrow`` (``0`` without it).

  Args:
    updates: the inner optimizer's updates.
    params: the current params.
    new_masks: masks after this step.
    old_masks: masks before this step (``None``: nothing is revived).
    regrow: values revived weights restart from (``None``: zero).

  Returns:
    The masked updates, in the updates' dtypes.
  """

  def leaf(u, p, new, *rest):
    if not is_prunable_mask(new):
      return u
    old = rest[0] if old_masks is not None else new
    pruned_value = jnp.where(new, rest[-1] - p, -p) if regrow is not None else -p
    return jnp.where(new & old, u, pruned_value).astype(u.dtype)

  rest = [t for t in (old_masks, regrow) if t is not None]
  return jax.tree.map(leaf, updates, params, new_masks, *rest)


def _prunable_masks(masks: PyTree) -> list[tuple[str, Any]]:
  masks = unpack_masks(masks)  # a state's packed masks count like bool ones
  return [
    (name, mask)
    for name, mask in zip(leaf_paths(masks), jax.tree.leaves(masks))
    if is_prunable_mask(mask)
  ]


def layer_sparsity(masks: PyTree) -> dict[str, float]:
  """Fraction of pruned weights of every prunable leaf.

  Args:
    masks: a mask tree, bool or packed (not replicated; see
      :func:`droppruning_jax.get_masks`).

  Returns:
    ``{"a/b/kernel": fraction_pruned}`` for the prunable leaves only.
  """
  return {name: float(1.0 - np.mean(np.asarray(mask))) for name, mask in _prunable_masks(masks)}


def sparsity(masks: PyTree) -> float:
  """Fraction of pruned weights over all prunable leaves together.

  Args:
    masks: a mask tree, bool or packed (not replicated).

  Returns:
    ``pruned / total`` over the prunable leaves (0.0 when there are none).
  """
  prunable = _prunable_masks(masks)
  total = sum(int(np.size(mask)) for _, mask in prunable)
  if total == 0:
    return 0.0
  kept = sum(int(np.count_nonzero(np.asarray(mask))) for _, mask in prunable)
  return 1.0 - kept / total


def count_params(params: PyTree, masks: PyTree | None = None) -> dict[str, int]:
  """Counts all parameters and the nonzero (kept) ones.

  Args:
    params: a pytree of arrays.
    masks: optional mask tree; without it, nonzero entries of ``params`` count.

  Returns:
    ``{"total": ..., "nonzero": ..., "prunable": ..., "pruned": ...}``.
  """
  total = sum(int(np.size(p)) for p in jax.tree.leaves(params))
  if masks is None:
    nonzero = sum(int(np.count_nonzero(np.asarray(p))) for p in jax.tree.leaves(params))
    return {"total": total, "nonzero": nonzero}
  masks = unpack_masks(masks)
  check_masks_match(params, masks)
  prunable = _prunable_masks(masks)
  n_prunable = sum(int(np.size(m)) for _, m in prunable)
  pruned = n_prunable - sum(int(np.count_nonzero(np.asarray(m))) for _, m in prunable)
  return {
    "total": total,
    "nonzero": total - pruned,
    "prunable": n_prunable,
    "pruned": pruned,
  }


def resolve_targets(
  names: list[str], targets: Mapping[str, float], default: float | None = None
) -> dict[str, float]:
  """Maps every prunable path to a target using exact names or ``fnmatch`` patterns.

  Raises:
    ValueError: if a pattern matches no prunable leaf, or (without ``default``)
      a prunable leaf matches no pattern.
  """
  out: dict[str, float] = {}
  used = set()
  for name in names:
    if name in targets:
      out[name] = float(targets[name])
      used.add(name)
      continue
    for pattern, value in targets.items():
      if fnmatch.fnmatchcase(name, pattern):
        out[name] = float(value)
        used.add(pattern)
        break
    else:
      if default is None:
        raise ValueError(f"no per-layer target given for prunable leaf {name!r}.")
      out[name] = float(default)
  unused = [k for k in targets if k not in used]
  if unused:
    raise ValueError(
      f"per-layer targets {unused} match no prunable leaf; prunable leaves are {names}."
    )
  return out
