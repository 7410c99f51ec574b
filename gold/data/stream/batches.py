"""Batches streamed from a random-access source, the selection applied before any read.

A *source* is any grain ``RandomAccessDataSource`` of ``(id, label, pixels uint8)``
samples that also exposes its ``ids`` int64 ``[N]``, ``labels`` int32 ``[N]``, ``shape``
and ``num_classes`` without reading pixels: :class:`gold.data.stream.records.RecordSource`
(array_record on disk), :class:`gold.data.stream.video.VideoFolderSource` (clip files)
or :class:`ArraySource` (arrays in memory, same batches).

Selection is an index filter: :func:`kept_positions` turns the kept sample ids into record
positions, and a plan only ever holds kept positions, so nothing else is read (the cost
of a step falls with the kept ratio, and the resident set is one batch, whatever N).

* :class:`BalancedPlan` + :func:`balanced_batches`: the distillation stream, a grain
  ``MapDataset`` whose element ``t`` is step ``t``'s class-balanced batch: for every class
  ``per_class`` distinct kept samples (a permutation of the class repeated cyclically
  when it has fewer; ``mask`` marks the distinct ones, as ``gold.data.ClassIndex``).
  Element ``t`` depends only on ``(seed, t)``: a run resumes at any step.
* :func:`epoch_batches`: shuffled passes over the kept samples in fixed-size batches
  (the last one padded, ``mask`` 0), for the streamed loss indicator.
* :func:`ordered_batches`: one pass in record order, same fixed-size padded batches (a
  held-out split streamed through the evaluation).
* :func:`normalize`: uint8 pixels to the model's normalised float32 input, on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from gold.data.errors import DatasetError


class Batch(NamedTuple):
    """A streamed batch (host arrays; pixels stay uint8 until they are on the device).

    Attributes:
      x: uint8 ``[B, *shape]``.
      y: int32 ``[B]`` labels.
      ids: int64 ``[B]`` stable sample ids.
      mask: float32 ``[B]``: 1 for a distinct (or real, not padding) sample.
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    mask: np.ndarray


class ArraySource:
    """In-memory samples behind the same interface as the on-disk sources.

    Args:
      x: uint8 ``[N, *shape]``; labels int ``[N]``; ids int64 ``[N]`` (default ``arange``).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, num_classes: int,
                 ids: Optional[np.ndarray] = None):
        self.x = np.asarray(x)
        self.labels = np.asarray(labels, np.int32)
        self.ids = np.arange(len(self.x), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        self.shape = tuple(self.x.shape[1:])
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray]:
        i = int(i)
        return int(self.ids[i]), int(self.labels[i]), self.x[i]


class CountingSource:
    """A source wrapper that records every position read (``reads``), to check and
    measure what a pipeline touches."""

    def __init__(self, source: Any):
        self.source = source
        self.reads: list[int] = []
        self.ids, self.labels = source.ids, source.labels
        self.shape, self.num_classes = source.shape, source.num_classes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray]:
        self.reads.append(int(i))
        return self.source[i]

    def read_many(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The wrapped source's batched read (or one read per position), counted."""
        self.reads.extend(int(p) for p in positions)
        return read_rows(self.source, positions)


def kept_positions(source: Any, kept_ids: Optional[np.ndarray]) -> np.ndarray:
    """Sorted int64 record positions of the kept sample ids (all positions for None).

    Raises:
      DatasetError: an id that the source does not hold.
    """
    if kept_ids is None:
        return np.arange(len(source), dtype=np.int64)
    ids = np.asarray(source.ids, np.int64)
    want = np.asarray(kept_ids, np.int64).reshape(-1)
    order = np.argsort(ids, kind="stable")
    at = np.minimum(np.searchsorted(ids[order], want), len(ids) - 1)
    pos = order[at]
    bad = ids[pos] != want
    if np.any(bad):
        raise DatasetError(f"kept ids {want[bad][:5].tolist()} are not in the source")
    return np.sort(pos).astype(np.int64)


def read_rows(source: Any, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids int64 [B], labels int32 [B], pixels uint8 [B, *shape])`` at ``positions`` (in
    order): the source's batched ``read_many`` when it has one, else one read each."""
    if hasattr(source, "read_many"):
        return source.read_many(positions)
    rows = [source[int(p)] for p in positions]
    return (np.asarray([r[0] for r in rows], np.int64), np.asarray([r[1] for r in rows], np.int32),
            np.stack([r[2] for r in rows]))


def read_batch(source: Any, positions: np.ndarray, mask: np.ndarray) -> Batch:
    """Read the samples at ``positions`` (in order) into one :class:`Batch`."""
    ids, labels, x = read_rows(source, positions)
    return Batch(x, np.asarray(labels, np.int32), np.asarray(ids, np.int64), np.asarray(mask, np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class BalancedPlan:
    """Which kept samples every step reads: ``per_class`` of each class in ``classes``.

    Attributes:
      groups: int64 record positions of each class's kept samples (one array per class
        of ``classes``, sorted).
      classes: the classes streamed (all, or a class group of class-split DM).
      per_class: samples per class per step (static batch).
      seed: the stream's seed; step ``t`` draws with ``np.random.default_rng((seed, t))``.
    """

    groups: tuple[np.ndarray, ...]
    classes: tuple[int, ...]
    per_class: int
    seed: int

    @classmethod
    def build(cls, source: Any, kept_ids: Optional[np.ndarray], per_class: int, seed: int,
              classes: Optional[Sequence[int]] = None) -> "BalancedPlan":
        """The plan over ``source`` restricted to ``kept_ids`` (None = all).

        Raises:
          DatasetError: ``per_class < 1`` or a streamed class without kept samples.
        """
        if per_class < 1:
            raise DatasetError(f"per_class must be >= 1, got {per_class}")
        pos = kept_positions(source, kept_ids)
        labels = np.asarray(source.labels)[pos]
        classes = tuple(range(source.num_classes)) if classes is None else tuple(int(c) for c in classes)
        groups = tuple(pos[labels == c] for c in classes)
        empty = [c for c, g in zip(classes, groups) if len(g) == 0]
        if empty:
            raise DatasetError(f"classes {empty[:10]} have no kept samples; raise the kept ratio")
        return cls(groups, classes, int(per_class), int(seed))

    @property
    def num_kept(self) -> int:
        """Kept samples of the streamed classes."""
        return int(sum(len(g) for g in self.groups))

    @property
    def batch_size(self) -> int:
        """Samples per step (``len(classes) * per_class``)."""
        return len(self.classes) * self.per_class

    def positions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``step``'s record positions int64 ``[len(classes) * per_class]`` (class-major)
        and their float32 distinct-sample mask."""
        rng = np.random.default_rng((self.seed, int(step)))
        n = self.per_class
        pos, mask = [], []
        for g in self.groups:
            draw = rng.permutation(len(g))[:n] if len(g) > n else rng.permutation(len(g))
            pos.append(g[draw[np.arange(n) % len(draw)]])
            mask.append(np.arange(n) < len(g))
        return np.concatenate(pos), np.concatenate(mask).astype(np.float32)


def balanced_batches(source: Any, plan: BalancedPlan, num_steps: int):
    """grain ``MapDataset`` of ``num_steps`` class-balanced :class:`Batch` es.

    Iterate it directly (reads on demand), or with threaded prefetch through
    ``.to_iter_dataset(grain.ReadOptions(num_threads=..., prefetch_buffer_size=...))``;
    slice it (``ds[start:]``) to resume.
    """
    import grain

    return grain.MapDataset.range(int(num_steps)).map(lambda t: read_batch(source, *plan.positions(t)))


def fixed_batches(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``order`` (int64 ``[n]`` positions) cut into ``ceil(n / b)`` batches of ``b``: int64
    ``[num_batches, b]`` positions (the last batch padded by repeating its first entry)
    and float32 ``[num_batches, b]`` masks (0 on padding).

    Raises:
      DatasetError: no positions or ``batch_size < 1``.
    """
    n = len(order)
    if n == 0 or batch_size < 1:
        raise DatasetError(f"batches need samples and batch_size >= 1 (n={n}, batch_size={batch_size})")
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    order = np.concatenate([order, np.repeat(order[-(n % batch_size or batch_size)], pad)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return order.reshape(nb, batch_size), mask.reshape(nb, batch_size)


def epoch_order(positions: np.ndarray, seed: int, epoch: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One shuffled pass over ``positions`` (order from ``(seed, epoch)``) as
    :func:`fixed_batches`."""
    perm = np.asarray(positions)[np.random.default_rng((seed, int(epoch))).permutation(len(positions))]
    return fixed_batches(perm, batch_size)


def epoch_batches(source: Any, positions: np.ndarray, seed: int, epoch: int, batch_size: int):
    """grain ``MapDataset`` of epoch ``epoch``'s :class:`Batch` es (:func:`epoch_order`)."""
    import grain

    order, mask = epoch_order(positions, seed, epoch, batch_size)
    return grain.MapDataset.range(len(order)).map(lambda b: read_batch(source, order[b], mask[b]))


def ordered_batches(source: Any, batch_size: int, limit: int = 0):
    """grain ``MapDataset`` of one pass over ``source`` in record order (the first
    ``limit`` records when ``limit > 0``), in :func:`fixed_batches` of ``batch_size`` (of
    all of them when fewer)."""
    import grain

    n = len(source) if limit <= 0 else min(int(limit), len(source))
    order, mask = fixed_batches(np.arange(n, dtype=np.int64), min(int(batch_size), n))
    return grain.MapDataset.range(len(order)).map(lambda b: read_batch(source, order[b], mask[b]))


def normalize(x: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """uint8 pixels ``[..., C]`` -> float32 ``(x / 255 - mean) / std`` (traceable; streamed
    batches travel as uint8 and are normalised on the device).

    Args:
      x: uint8 ``[..., C]`` (a jax or NumPy array).
      mean, std: per-channel statistics in [0, 1] units, ``C`` each.
    """
    return (jnp.asarray(x).astype(jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


__all__ = ["ArraySource", "BalancedPlan", "Batch", "CountingSource", "balanced_batches", "epoch_batches",
           "epoch_order", "fixed_batches", "kept_positions", "normalize", "ordered_batches", "read_batch",
           "read_rows"]
