"""Distillation on a streamed dataset: every step sees only its own class-balanced batch.

The in-memory loop passes the whole selected set (:class:`gold.distill.common.RealData`)
into each jitted step. Here the real data stays on disk: step ``t`` reads its batch
(``gold.data.stream.BalancedPlan``: ``per_class`` kept samples of every streamed class),
moves the uint8 pixels to the device, and wraps them as a ``RealData`` of exactly that
batch (:func:`batch_real_data`: class ``c`` owns rows ``[c*b, (c+1)*b)``, its count is
the number of distinct samples), so an algorithm's own ``step`` runs unchanged: drawing
``b`` of ``b`` rows is a permutation, and DM's mean embedding does not depend on the
order. Host and device memory hold one batch (plus the prefetched ones), whatever the
dataset size; the cost of a step depends on the batch, not on N.

:func:`distill_stream` runs one class group (all classes, or a group of class-split DM):
build the algorithm on the first batch, init (real init draws from that batch), then the
steps with keys ``fold_in(steps_key, t)``; the state is checkpointed every
``checkpoint_every`` steps and a rerun resumes (the batch of step ``t`` depends only on
``(seed, t)``). :func:`distill_groups` runs class groups one after the other, each in
its own sub-folder (a finished group is loaded, not rerun), and merges their synthetic
sets with global labels.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gold import data as gdata
from gold import rng as grng
from gold.checkpoint import Checkpointer
from gold.data import stream as gstream
from gold.distill import common
from gold.distill import registry

SYNTHETIC = "synthetic.npz"


def batch_real_data(x: jax.Array, mask: jax.Array, num_classes: int, per_class: int,
                    mean: Sequence[float], std: Sequence[float]) -> common.RealData:
    """One streamed class-major batch as :class:`RealData` (traceable).

    Args:
      x: uint8 ``[K * b, *shape]`` pixels, class c in rows ``[c*b, (c+1)*b)``.
      mask: float32 ``[K * b]``, 1 for distinct samples (they come first in a class).
      num_classes: K (group-local labels 0..K-1); per_class: b.
      mean, std: channel statistics in [0, 1] units (the pixels are normalised here,
        on the device).
    """
    xf = gstream.normalize(x, mean, std)
    table = jnp.arange(num_classes * per_class, dtype=jnp.int32).reshape(num_classes, per_class)
    counts = jnp.sum(mask.reshape(num_classes, per_class), axis=1).astype(jnp.int32)
    y = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), per_class)
    return common.RealData(xf, y, gdata.ClassIndex(table, counts), num_classes, per_class)


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """A finished (group) run: the synthetic set with GLOBAL labels, the per-step losses
    of this invocation, and timing.

    Attributes:
      x: float32 ``[G * ipc, *shape]``; y: int32 ``[G * ipc]`` global class ids.
      losses: float32 ``[steps run now]``.
      seconds: wall time of this invocation; read_seconds: of it, waiting for batches.
      resumed_from: the step the run started at (0 = fresh).
    """

    x: np.ndarray
    y: np.ndarray
    losses: np.ndarray
    seconds: float
    read_seconds: float
    resumed_from: int


_STEPS: "collections.OrderedDict[tuple, Callable]" = collections.OrderedDict()
_MAX_STEPS = 8


def _jitted_step(config: Any, algo: common.Algorithm, groups: int, per_class: int,
                 shape: tuple[int, ...]) -> Callable:
    """``jit((state, x uint8, mask) -> (state, loss))``: one step on a streamed batch, the
    iteration counted. Cached by (config, group size, batch, shape), so that a resumed run,
    equal-sized class groups and repeated runs in one process compile it once (an
    algorithm built from the same config on data of the same shapes is the same function).
    """
    key = (json.dumps(config.to_dict(), sort_keys=True, default=str), groups, per_class, shape)
    if key in _STEPS:
        _STEPS.move_to_end(key)
        return _STEPS[key]
    info = gdata.get_info(config.data.name)
    steps_key = grng.stream(grng.root(int(config.seed)), "steps")

    def step(state, x, mask):
        real = batch_real_data(x, mask, groups, per_class, info.mean, info.std)
        state, metrics = algo.step(state, grng.step_key(steps_key, state.iteration), real)
        return state.replace(iteration=state.iteration + 1), metrics["loss"]

    _STEPS[key] = jax.jit(step)
    if len(_STEPS) > _MAX_STEPS:
        _STEPS.popitem(last=False)
    return _STEPS[key]


def distill_stream(config: Any, source: Any, kept_ids: Optional[np.ndarray], *, iterations: int,
                   classes: Optional[Sequence[int]] = None, workdir: Optional[str] = None,
                   checkpoint_every: int = 0, read_threads: int = 2, prefetch: int = 2,
                   on_step: Optional[Callable[[int, float], None]] = None) -> StreamResult:
    """Distil ``classes`` of a streamed source with ``config.algorithm``.

    Args:
      config: a distillation config (``configs/<algo>.py``): algorithm, settings, model,
        ``seed``, ``batch_real`` (samples per class per step, halved by the paper's rule
        while >= twice the largest kept class: ``gold.data.class_batch_size``) and
        ``data.name`` (for the normalisation statistics of the registry).
      source: a ``gold.data.stream`` source; kept_ids: the selection (None = all).
      iterations: total steps (a resumed run runs the remaining ones).
      classes: global class ids of this group (None = all classes).
      workdir: where the checkpoint and ``synthetic.npz`` go (None = nothing saved).
      checkpoint_every: steps between checkpoints (0 = only at the end).
      read_threads, prefetch: grain read threads and batches read ahead.
      on_step: called with (step, loss) after every step (the loss syncs the host).

    Raises:
      ValueError: DSA on clips (``gold.distill.registry.build``), a batch that cannot hold
        the real init, bad settings.
    """
    import grain

    info = gdata.get_info(config.data.name)
    shape = tuple(source.shape)
    plan = gstream.BalancedPlan.build(source, kept_ids, int(config.batch_real), int(config.seed), classes)
    plan = dataclasses.replace(plan, per_class=gdata.class_batch_size(plan.per_class, [len(g) for g in plan.groups]))
    groups = len(plan.classes)
    batches = gstream.balanced_batches(source, plan, iterations + 1)  # element 0 = the init batch

    first = batches[0]  # the real init draws from it
    real0 = batch_real_data(jnp.asarray(first.x), jnp.asarray(first.mask), groups, plan.per_class,
                            info.mean, info.std)
    algo = registry.build(config, real0)
    key = grng.root(int(config.seed))
    state = algo.init(grng.stream(key, "init"), real0)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints")) if workdir else None
    start = (ckpt.latest_step() or 0) if ckpt else 0
    if start:
        state = jax.tree.map(jnp.asarray, ckpt.restore(start, state))

    step = _jitted_step(config, algo, groups, plan.per_class, shape)
    t0, waited, losses = time.perf_counter(), 0.0, []
    stream = iter(batches[start + 1:].to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                                         prefetch_buffer_size=prefetch)))
    for t in range(start, iterations):
        tw = time.perf_counter()
        batch = next(stream)
        waited += time.perf_counter() - tw
        state, loss = step(state, batch.x, batch.mask)
        losses.append(loss)
        if on_step is not None:
            on_step(t + 1, float(loss))
        if ckpt and (t + 1 == iterations or (checkpoint_every and (t + 1) % checkpoint_every == 0)):
            if not np.isfinite(float(loss)):  # never checkpoint a diverged state
                raise FloatingPointError(f"non-finite {config.algorithm} loss at step {t + 1}; lower lr_img "
                                         f"({config.get('lr_img')})")
            ckpt.save(t + 1, state)
    syn = algo.synthetic(state)
    if np.ndim(syn.y) != 1:
        raise ValueError(f"{config.algorithm} learns soft labels; streamed runs merge hard labels only")
    x = np.asarray(syn.x)
    y = np.asarray(plan.classes, np.int32)[np.asarray(syn.y)]
    result = StreamResult(x, y, np.asarray(jnp.stack(losses)) if losses else np.zeros(0, np.float32),
                          time.perf_counter() - t0, waited, start)
    if workdir:
        np.savez(os.path.join(workdir, SYNTHETIC), x=x, y=y)
        ckpt.close()
    return result


def class_groups(num_classes: int, num_groups: int) -> list[tuple[int, ...]]:
    """``num_groups`` contiguous near-equal class groups (sizes differ by at most 1)."""
    if not 1 <= num_groups <= num_classes:
        raise ValueError(f"num_groups must be in [1, {num_classes}], got {num_groups}")
    bounds = [g * num_classes // num_groups for g in range(num_groups + 1)]
    return [tuple(range(bounds[g], bounds[g + 1])) for g in range(num_groups)]


def distill_groups(config: Any, source: Any, kept_ids: Optional[np.ndarray], *, iterations: int,
                   num_groups: int, workdir: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class-split distillation on a stream: each group of :func:`class_groups` is
    distilled on its own (``workdir/group_<g>``, resumable; a group whose
    ``synthetic.npz`` exists is loaded), then the sets are merged class-major.

    Returns:
      (x float32 ``[K * ipc, *shape]``, y int32 ``[K * ipc]``), also written to
      ``workdir/synthetic.npz``.
    """
    xs, ys = [], []
    for g, classes in enumerate(class_groups(source.num_classes, num_groups)):
        gdir = os.path.join(workdir, f"group_{g:04d}")
        done = os.path.join(gdir, SYNTHETIC)
        if not os.path.isfile(done):
            os.makedirs(gdir, exist_ok=True)
            distill_stream(config, source, kept_ids, iterations=iterations, classes=classes,
                           workdir=gdir, **kwargs)
        with np.load(done) as f:
            xs.append(f["x"]), ys.append(f["y"])
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.savez(os.path.join(workdir, SYNTHETIC), x=x, y=y)
    return x, y


__all__ = ["StreamResult", "batch_real_data", "class_groups", "distill_groups",
           "distill_stream"]
