"""One device mesh for every sharded computation of gold (``jax.sharding``; no ``pmap``).

The mesh always has the three named axes of :data:`AXES` (an axis may have size 1):

* ``data``: the real batch and per-sample work;
* ``model``: independent networks (the evaluation's K models; later the utility
  indicator's trials, MTT experts, Monte-Carlo trials);
* ``class``: per-class algorithms (DC, DSA, DM match each class independently).

A use of the mesh says which axis it prefers (the evaluation: ``model``) and what
bounds that axis (at most K models). The layout comes from ``config.mesh`` (``{"data":
0, "model": 0, "class": 0}``; 0 = auto): a fixed size is used as given, the preferred
axis, when auto, takes the largest size that divides the devices left and fits its
bounds, and the devices still left go to the first other auto axis (``data`` first),
along which that use replicates. One device gives the trivial mesh ``(1, 1, 1)``. An
impossible layout (sizes whose product does not divide the device count, more model
shards than models, a class axis that does not divide the classes) is a ``ValueError``
that names it.

Placement helpers put a pytree on the mesh with a ``NamedSharding``: replicated
(:func:`replicate`), or with the leading axis of every leaf split along a mesh axis
(:func:`shard_leading`). Computations then run under ``jax.jit`` (the arguments'
shardings, or ``in_shardings`` / ``out_shardings``) or ``jax.shard_map``.

Sharding never changes the random streams: per-element keys come from global indices
(``gold.rng``), never from a device index, so a sharded run draws what the
single-device run draws.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES: tuple[str, ...] = ("data", "model", "class")
DEFAULT_MESH: dict[str, int] = {"data": 0, "model": 0, "class": 0}  # 0 = auto


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _requested(requested: Optional[Mapping[str, Any]]) -> dict[str, int]:
    if hasattr(requested, "to_dict"):  # a ConfigDict
        requested = requested.to_dict()
    req = dict(DEFAULT_MESH)
    for name, value in dict(requested or {}).items():
        if name not in AXES:
            raise ValueError(f"unknown mesh axis {name!r}; valid: {list(AXES)}")
        size = int(value)
        if size < 0:
            raise ValueError(f"mesh.{name} must be >= 0 (0 = auto), got {size}")
        req[name] = size
    return req


def _check_bounds(name: str, size: int, max_size: Mapping[str, int], divides: Mapping[str, int]) -> None:
    if name in max_size and size > int(max_size[name]):
        what = {"model": "models", "class": "classes", "data": "samples"}[name]
        raise ValueError(f"mesh.{name}={size}: more {name} shards than {what} ({int(max_size[name])}); "
                         f"lower mesh.{name} or set it to 0 (auto)")
    if name in divides and int(divides[name]) % size:
        raise ValueError(f"mesh.{name}={size} does not divide {int(divides[name])} (no padding along "
                         f"{name!r}); use a divisor of {int(divides[name])} or 0 (auto)")


def mesh_shape(num_devices: int, requested: Optional[Mapping[str, Any]] = None, *,
               prefer: str = "data", max_size: Optional[Mapping[str, int]] = None,
               divides: Optional[Mapping[str, int]] = None) -> dict[str, int]:
    """The mesh layout ``{axis: size}`` (product = ``num_devices``) for one use.

    Args:
      num_devices: devices of the mesh.
      requested: ``config.mesh``-like ``{axis: size}``; 0 or missing = auto.
      prefer: the axis this use splits its work along; when auto, it takes as many of
        the remaining devices as its bounds allow.
      max_size: ``{axis: n}``: at most n shards (e.g. K models); a fixed size beyond it
        is an error.
      divides: ``{axis: n}``: the size must divide n (no padding along that axis).

    Returns:
      ``{axis: size}`` for every axis of :data:`AXES`.

    Raises:
      ValueError: unknown axis, negative size, sizes whose product does not divide the
        device count (or uses fewer devices with no auto axis left to take the rest),
        a size beyond ``max_size`` or not dividing ``divides``.
    """
    if prefer not in AXES:
        raise ValueError(f"unknown mesh axis {prefer!r}; valid: {list(AXES)}")
    num_devices = int(num_devices)
    if num_devices < 1:
        raise ValueError(f"a mesh needs at least one device, got {num_devices}")
    max_size, divides = dict(max_size or {}), dict(divides or {})
    req = _requested(requested)
    for name, size in req.items():
        if size > 0:
            _check_bounds(name, size, max_size, divides)
    fixed = int(np.prod([s for s in req.values() if s > 0] or [1]))
    if num_devices % fixed:
        raise ValueError(f"mesh {req} needs a multiple of {fixed} devices, which does not divide the "
                         f"{num_devices} devices; choose sizes whose product divides {num_devices} "
                         f"(0 = auto)")
    shape = {name: max(size, 1) for name, size in req.items()}
    free = num_devices // fixed
    auto = [name for name in AXES if req[name] == 0]
    if prefer in auto and free > 1:
        fits = [d for d in _divisors(free)
                if d <= max_size.get(prefer, free) and int(divides.get(prefer, d)) % d == 0]
        shape[prefer] = max(fits or [1])
        free //= shape[prefer]
    if free > 1:
        rest = [name for name in auto if name != prefer and name not in max_size and name not in divides]
        if not rest:
            raise ValueError(f"mesh {req} leaves {free} of the {num_devices} devices without an axis; "
                             f"set one axis to 0 (auto) or sizes whose product is {num_devices}")
        shape[rest[0]] *= free
    return shape


def make_mesh(requested: Optional[Mapping[str, Any]] = None, *,
              devices: Optional[Sequence[Any]] = None, prefer: str = "data",
              max_size: Optional[Mapping[str, int]] = None,
              divides: Optional[Mapping[str, int]] = None) -> Mesh:
    """A :class:`jax.sharding.Mesh` with axes :data:`AXES` over ``devices`` (default:
    all devices, ``jax.devices()``, of every process); layout from :func:`mesh_shape`."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(len(devices), requested, prefer=prefer, max_size=max_size, divides=divides)
    grid = np.asarray(devices, dtype=object).reshape([shape[a] for a in AXES])
    return Mesh(grid, AXES)


# Axes whose work is split today (the evaluation's K networks); an explicit size > 1 on
# another axis would only replicate, so it is refused until that split exists.
SPLIT_AXES: tuple[str, ...] = ("model",)


def mesh_from_config(config: Any, **kwargs) -> Mesh:
    """:func:`make_mesh` from ``config.mesh`` (absent = all auto); ``kwargs`` as in
    :func:`make_mesh` (``prefer``, ``max_size``, ``divides``, ``devices``).

    Raises:
      ValueError: an explicit size > 1 for an axis that nothing splits along yet.
    """
    requested = config.get("mesh") if hasattr(config, "get") else None
    unused = [f"mesh.{a}={int(v)}" for a, v in dict(requested or {}).items()
              if a not in SPLIT_AXES and int(v) > 1]
    if unused:
        raise ValueError(f"{', '.join(unused)}: nothing is split along that axis yet (the steps "
                         f"run replicated; only mesh.model splits the evaluation); leave it 0")
    return make_mesh(requested, **kwargs)


def axis_size(mesh: Mesh, name: str) -> int:
    """Size of axis ``name`` of ``mesh``."""
    return int(mesh.shape[name])


def is_trivial(mesh: Optional[Mesh]) -> bool:
    """True for ``None`` or a one-device mesh (callers then take the plain path)."""
    return mesh is None or mesh.size == 1


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def along(mesh: Mesh, axis: str) -> NamedSharding:
    """The sharding that splits an array's leading axis along mesh axis ``axis``."""
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}; axes: {list(mesh.axis_names)}")
    return NamedSharding(mesh, PartitionSpec(axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every leaf replicated on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_leading(tree: Any, mesh: Mesh, axis: str) -> Any:
    """``tree`` with the leading axis of every array leaf split along mesh axis ``axis``.

    Raises:
      ValueError: a leaf without a leading axis, or one whose length the axis size does
        not divide (pad first, e.g. :func:`padded_size`).
    """
    n = axis_size(mesh, axis)

    def put(leaf):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            raise ValueError(f"cannot split a leaf of shape {shape} along mesh axis {axis!r} of size "
                             f"{n}: its leading length must be a multiple of {n}")
        return jax.device_put(leaf, along(mesh, axis))

    return jax.tree.map(put, tree)


def shardings_of(tree: Any) -> Any:
    """The sharding of every leaf of a placed ``tree`` (for ``jit``'s ``in_shardings``)."""
    return jax.tree.map(lambda leaf: leaf.sharding, tree)


REAL_PLACEMENTS: tuple[str, ...] = ("replicate", "data")


def place_real(real: Any, mesh: Mesh, placement: str = "replicate") -> Any:
    """The real data (``gold.distill.common.RealData``) on ``mesh``.

    ``replicate``: every device holds all of it. ``data``: the images and labels are
    split along the ``data`` axis (their count must be a multiple of its size) and the
    class-index table is replicated; the steps' gathers then read across devices.

    Raises:
      ValueError: unknown placement, or samples not divisible along ``data``.
    """
    if placement not in REAL_PLACEMENTS:
        raise ValueError(f"unknown real placement {placement!r}; valid: {list(REAL_PLACEMENTS)}")
    if placement == "replicate":
        return replicate(real, mesh)
    return real.replace(x=shard_leading(real.x, mesh, "data"), y=shard_leading(real.y, mesh, "data"),
                        index=replicate(real.index, mesh))


def padded_size(n: int, shards: int) -> int:
    """``n`` rounded up to a multiple of ``shards``."""
    return -(-int(n) // int(shards)) * int(shards)


def describe(mesh: Mesh) -> str:
    """``'data=2 model=2 class=1 on 4 cpu devices'``."""
    sizes = " ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names)
    platform = mesh.devices.flat[0].platform
    return f"{sizes} on {mesh.size} {platform} device{'s' if mesh.size > 1 else ''}"


__all__ = ["AXES", "DEFAULT_MESH", "REAL_PLACEMENTS", "along", "axis_size", "describe", "is_trivial",
           "make_mesh", "mesh_from_config", "mesh_shape", "padded_size", "place_real", "replicate",
           "replicated", "shard_leading", "shardings_of"]
