"""One device mesh for every sharded computation of gold (``jax.sharding``; no ``pmap``).

The mesh always has the three named axes of :data:`AXES` (an axis may have size 1):

* ``data``: the real batch and per-sample work;
* ``model``: independent networks (the evaluation's K models, the loss indicator's
  trials);
* ``class``: per-class algorithms (DC, DSA, DM match each class independently:
  ``gold.distill.common.per_class_value_and_grad`` splits its class loop along the
  ``class`` axis, :func:`split_map`, when the step runs as a :func:`replicated_program`).

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

import os
from typing import Any, Callable, Mapping, Optional, Sequence

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


# Axes whose work is split today (the evaluation's K networks and the loss indicator's
# trials; the per-class loop of DC / DSA / DM); an explicit size > 1 on ``data`` would
# only replicate, so it is refused until that split exists.
SPLIT_AXES: tuple[str, ...] = ("model", "class")


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
                         f"run replicated; mesh.model splits the evaluation and the loss "
                         f"indicator, mesh.class the per-class loop); leave it 0")
    return make_mesh(requested, **kwargs)


def axis_size(mesh: Mesh, name: str) -> int:
    """Size of axis ``name`` of ``mesh``."""
    return int(mesh.shape[name])


def is_trivial(mesh: Optional[Mesh]) -> bool:
    """True for ``None`` or a one-device mesh (callers then take the plain path)."""
    return mesh is None or mesh.size == 1


def replicated_program(fn: Callable[..., Any], mesh: Mesh, num_args: int) -> Callable[..., Any]:
    """``fn`` (``num_args`` positional array arguments) as one program per device of
    ``mesh`` (``jax.shard_map``, every axis manual): each device computes the whole
    ``fn`` on replicated inputs, except the work that :func:`split_map` splits along a
    mesh axis; outputs are replicated. Wrap it in ``jax.jit`` (with the mesh's
    shardings) to run it."""
    rep = PartitionSpec()
    # gold's custom-VJP convolutions do not type varying manual axes; the split parts
    # all-gather their results, so every output is the same on every device
    return jax.shard_map(fn, mesh=mesh, in_specs=(rep,) * int(num_args), out_specs=rep,
                         check_vma=False)


def manual_axis_size(name: str) -> int:
    """Size of mesh axis ``name`` while tracing inside a ``shard_map`` that made it
    manual (:func:`replicated_program`); 1 elsewhere (a plain ``jit``, one device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or name not in mesh.axis_names or name not in mesh.manual_axes:
        return 1
    return int(mesh.shape[name])


def split_map(fn: Callable[..., Any], axis: str, *args: Any) -> Any:
    """``fn(*args)`` computed in slices along manual mesh axis ``axis``.

    ``fn`` maps over the leading axis L of every argument (per class, per network), so
    the rows of its outputs depend only on the same rows of its inputs. Inside a
    ``shard_map`` whose axis ``axis`` has size n (:func:`replicated_program`), device
    ``i`` applies ``fn`` to rows ``[i L/n, (i+1) L/n)`` and the slices are all-gathered,
    so every device ends with the whole result; elsewhere this is ``fn(*args)``. Row
    indices that ``fn`` needs (class ids, key indices) should be among ``args``: the
    slice then carries the global indices and the random streams do not change.

    Raises:
      ValueError: L is not a multiple of n (no padding along ``axis``).
    """
    n = manual_axis_size(axis)
    if n == 1:
        return fn(*args)
    length = int(jax.tree.leaves(args)[0].shape[0])
    if length % n:
        raise ValueError(f"cannot split {length} entries along mesh axis {axis!r} of size {n}: "
                         f"choose mesh.{axis} dividing {length} (or 0 = auto)")
    size = length // n
    first = jax.lax.axis_index(axis) * size
    local = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, first, size), args)
    out = fn(*local)
    return jax.tree.map(lambda a: jax.lax.all_gather(a, axis, tiled=True), out)


def split_leading(fn: Callable[..., Any], mesh: Mesh, axis: str, split: tuple,
                  shared: tuple = ()) -> Any:
    """``fn(*split, *shared)`` with the leading axis of ``split`` (and of every output)
    split along ``mesh``'s axis ``axis`` (``jax.shard_map``) and ``shared`` replicated:
    each device applies ``fn`` to its slice. ``fn`` maps over the leading axis (e.g.
    the networks of a chunk of trials) and must take every array it uses as an argument
    (arrays placed on the mesh and closed over clash with the manual region's types).
    Call it under ``jax.jit``. A mesh axis of size 1 calls ``fn`` directly.

    Raises:
      ValueError: the leading length is not a multiple of the axis size.
    """
    n = axis_size(mesh, axis)
    if n == 1:
        return fn(*split, *shared)
    length = int(jax.tree.leaves(split)[0].shape[0])
    if length % n:
        raise ValueError(f"cannot split {length} entries along mesh axis {axis!r} of size {n}: "
                         f"pad to a multiple of {n} (padded_size)")
    spec, rep = PartitionSpec(axis), PartitionSpec()
    # the body is a map over the leading axis, so each device's output is its own shard
    return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * len(split) + (rep,) * len(shared),
                         out_specs=spec, check_vma=False)(*split, *shared)


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def along(mesh: Mesh, axis: str) -> NamedSharding:
    """The sharding that splits an array's leading axis along mesh axis ``axis``."""
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}; axes: {list(mesh.axis_names)}")
    return NamedSharding(mesh, PartitionSpec(axis))


def put(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` placed with ``sharding``: ``jax.device_put`` when this process holds
    every device of it; on a mesh spanning several processes (hosts) every process
    passes the same global value and keeps the pieces of its own devices
    (``jax.make_array_from_callback``; PRNG keys through their key data)."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every leaf replicated on every device of ``mesh`` (:func:`put`)."""
    return put(tree, replicated(mesh))


def shard_leading(tree: Any, mesh: Mesh, axis: str) -> Any:
    """``tree`` with the leading axis of every array leaf split along mesh axis ``axis``.

    Raises:
      ValueError: a leaf without a leading axis, or one whose length the axis size does
        not divide (pad first, e.g. :func:`padded_size`).
    """
    n = axis_size(mesh, axis)

    def place(leaf):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            raise ValueError(f"cannot split a leaf of shape {shape} along mesh axis {axis!r} of size "
                             f"{n}: its leading length must be a multiple of {n}")
        return put(leaf, along(mesh, axis))

    return jax.tree.map(place, tree)


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


# ------------------------------------------------------------------------ memory
def device_memory(devices: Optional[Sequence[Any]] = None) -> dict:
    """Memory of this process's devices (default ``jax.local_devices()``), in MiB.

    Where the backend reports it (``device.memory_stats()``: GPU, TPU) ``in_use_mb`` is
    its ``bytes_in_use`` and ``peak_mb`` its ``peak_bytes_in_use``; elsewhere (CPU)
    ``in_use_mb`` is the bytes of the live JAX arrays on each device (the shard each
    device holds; ``jax.live_arrays``) and ``peak_mb`` is None.

    Returns:
      ``{"source": "memory_stats" | "live_arrays", "devices": [str], "in_use_mb":
      [float], "peak_mb": [float] | None}``, one entry per device.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    stats = [d.memory_stats() for d in devices]
    names = [f"{d.platform}:{d.id}" for d in devices]
    mib = float(2 ** 20)
    if all(stats):
        return {"source": "memory_stats", "devices": names,
                "in_use_mb": [st.get("bytes_in_use", 0) / mib for st in stats],
                "peak_mb": [st.get("peak_bytes_in_use", 0) / mib for st in stats]}
    live = {d: 0 for d in devices}
    for a in jax.live_arrays():
        shard_bytes = int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
        for d in a.sharding.addressable_devices:
            if d in live:
                live[d] += shard_bytes
    return {"source": "live_arrays", "devices": names, "in_use_mb": [live[d] / mib for d in devices],
            "peak_mb": None}


def describe_memory(memory: dict) -> str:
    """``'cpu:0 1.2 MiB, cpu:1 1.2 MiB (live arrays)'`` from :func:`device_memory`."""
    peaks = memory["peak_mb"] or [None] * len(memory["devices"])
    parts = [f"{n} {m:.1f} MiB" + ("" if p is None else f" (peak {p:.1f})")
             for n, m, p in zip(memory["devices"], memory["in_use_mb"], peaks)]
    return ", ".join(parts) + f" ({memory['source'].replace('_', ' ')})"


# -------------------------------------------------------------------- several hosts
# The environment of one process of a multi-host run (one command per host): the
# coordinator's host:port (JAX's own variable) and this run's process count and index.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def distributed_settings(environ: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """``jax.distributed.initialize`` arguments from the environment (default
    ``os.environ``), or None when :data:`ENV_COORDINATOR` is unset (a one-host run).

    Raises:
      ValueError: a coordinator without a valid process count and index.
    """
    env = os.environ if environ is None else environ
    address = env.get(ENV_COORDINATOR, "")
    if not address:
        return None
    try:
        count, index = int(env[ENV_NUM_PROCESSES]), int(env[ENV_PROCESS_ID])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{ENV_COORDINATOR}={address} needs integer {ENV_NUM_PROCESSES} and "
                         f"{ENV_PROCESS_ID} (this host's index) in the environment") from e
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{ENV_PROCESS_ID}={index} must be in [0, {ENV_NUM_PROCESSES}={count})")
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def initialize_distributed(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Join a multi-host run when the environment names one (:func:`distributed_settings`):
    ``jax.distributed.initialize`` (CPU devices talk through gloo collectives), after
    which ``jax.devices()`` and every mesh span all hosts. Call before anything else
    touches a device. Returns True when it initialised, False for a one-host run (or
    when already initialised)."""
    settings = distributed_settings(environ)
    if settings is None or jax.distributed.is_initialized():
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only
    jax.distributed.initialize(**settings)
    return True


def is_main_process() -> bool:
    """True on the process that writes a run's files (process 0; always on one host)."""
    return jax.process_index() == 0


__all__ = ["AXES", "DEFAULT_MESH", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID",
           "REAL_PLACEMENTS", "SPLIT_AXES", "along", "axis_size", "describe", "describe_memory",
           "device_memory", "distributed_settings", "initialize_distributed", "is_main_process",
           "is_trivial", "make_mesh", "manual_axis_size", "mesh_from_config", "mesh_shape",
           "padded_size", "place_real", "put", "replicate", "replicated", "replicated_program",
           "shard_leading", "shardings_of", "split_leading", "split_map"]
