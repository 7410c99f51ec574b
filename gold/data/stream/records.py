"""Fixed-shape uint8 samples in ``array_record`` files, read by random access (grain).

A *record set* is a folder with

* ``shard-00000.array_record`` ... : one record per sample, in the set's order;
* ``index.npz``: ``ids`` int64 ``[N]`` (stable sample id: the index in the source's
  official train order), ``labels`` int32 ``[N]``, ``shape`` (the sample shape, e.g.
  ``(64, 64, 3)`` or ``(8, 64, 64, 3)``), ``num_classes``, ``shards`` (records per
  shard) and ``name``.

The index is all a run needs before it reads pixels: class counts, utility alignment and
selection use ids and labels only, so a selection is decided without touching a record.

A record is ``id`` (int64 little-endian, 8 bytes) + ``label`` (int32, 4 bytes) + the raw
uint8 pixels (``prod(shape)`` bytes, C order): decoding is one ``np.frombuffer``.

Converters: :func:`convert_imagenet64_npz` (the downsampled-ImageNet release,
``train_data_batch_{1..10}.npz`` or ``Imagenet64_train_part{1,2}.npz``, and ``val_data.npz``
for ``split='val'``, one batch file in memory at a time) and :func:`convert_tfds` (any
tfds ``data_source`` split, e.g. a prepared ``imagenet_resized/64x64`` ``train`` and
``validation``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from gold.data.errors import DatasetError

INDEX = "index.npz"
SHARD = "shard-{:05d}.array_record"
HEADER = 12  # int64 id + int32 label


def encode(sample_id: int, label: int, pixels: np.ndarray) -> bytes:
    """One record: id, label, then the uint8 pixels (C order)."""
    if pixels.dtype != np.uint8:
        raise DatasetError(f"records store uint8 pixels, got {pixels.dtype}")
    return np.int64(sample_id).tobytes() + np.int32(label).tobytes() + np.ascontiguousarray(pixels).tobytes()


def decode(record: bytes, shape: tuple[int, ...]) -> tuple[int, int, np.ndarray]:
    """``(id, label, pixels uint8 [*shape])`` of one record (the pixels view the bytes)."""
    size = int(np.prod(shape))
    if len(record) != HEADER + size:
        raise DatasetError(f"record of {len(record)} bytes; expected {HEADER + size} for shape {shape}")
    sid = int(np.frombuffer(record, np.int64, 1, 0)[0])
    label = int(np.frombuffer(record, np.int32, 1, 8)[0])
    return sid, label, np.frombuffer(record, np.uint8, size, HEADER).reshape(shape)


@dataclasses.dataclass(frozen=True)
class RecordIndex:
    """The ``index.npz`` of a record set (everything but the pixels).

    Attributes:
      ids: int64 ``[N]`` stable sample ids, in record order.
      labels: int32 ``[N]``.
      shape: sample shape.
      num_classes: K.
      shards: records per shard file.
      name: dataset name (registry name when it has one).
    """

    ids: np.ndarray
    labels: np.ndarray
    shape: tuple[int, ...]
    num_classes: int
    shards: tuple[int, ...]
    name: str


def read_index(folder: str | os.PathLike) -> RecordIndex:
    """The index of the record set in ``folder``.

    Raises:
      DatasetError: no ``index.npz`` or a missing shard.
    """
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise DatasetError(f"{folder}: no {INDEX}; write the record set with "
                           f"gold.data.stream.records.write_records or a converter")
    with np.load(path, allow_pickle=False) as f:
        index = RecordIndex(f["ids"].astype(np.int64), f["labels"].astype(np.int32),
                            tuple(int(s) for s in f["shape"]), int(f["num_classes"]),
                            tuple(int(s) for s in f["shards"]), str(f["name"]))
    missing = [p.name for p in shard_paths(folder, index) if not p.is_file()]
    if missing:
        raise DatasetError(f"{folder}: missing shard files {missing}")
    return index


def shard_paths(folder: str | os.PathLike, index: RecordIndex) -> list[Path]:
    """The shard files of a record set, in order."""
    return [Path(folder) / SHARD.format(i) for i in range(len(index.shards))]


def write_records(folder: str | os.PathLike, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  *, num_classes: int, name: str, records_per_shard: int = 100_000) -> RecordIndex:
    """Write a record set from an iterable of ``(ids [B], labels [B], pixels uint8 [B, *shape])``.

    Only one batch is in memory at a time. Sample order = iteration order.

    Raises:
      DatasetError: inconsistent shapes, a label outside ``0..num_classes-1``, duplicate ids.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids_all, labels_all, shards = [], [], []
    shape: tuple[int, ...] | None = None
    writer, in_shard = None, 0
    try:
        for ids, labels, pixels in batches:
            ids, labels = np.asarray(ids, np.int64), np.asarray(labels, np.int64)
            pixels = np.asarray(pixels)
            if shape is None:
                shape = tuple(pixels.shape[1:])
            if tuple(pixels.shape[1:]) != shape or len(ids) != len(pixels) or len(labels) != len(pixels):
                raise DatasetError(f"batch of {pixels.shape} with {len(ids)} ids / {len(labels)} labels; "
                                   f"expected [B, {shape}] and B of each")
            if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
                raise DatasetError(f"labels span [{labels.min()}, {labels.max()}], outside 0..{num_classes - 1}")
            for sid, lab, px in zip(ids, labels, pixels):
                if writer is None:
                    writer = ArrayRecordWriter(str(folder / SHARD.format(len(shards))), "group_size:1")
                    shards.append(0)
                writer.write(encode(int(sid), int(lab), px))
                shards[-1] += 1
                in_shard += 1
                if in_shard == records_per_shard:
                    writer.close()
                    writer, in_shard = None, 0
            ids_all.append(ids)
            labels_all.append(labels.astype(np.int32))
    finally:
        if writer is not None:
            writer.close()
    if shape is None:
        raise DatasetError("write_records got no samples")
    ids = np.concatenate(ids_all)
    if len(np.unique(ids)) != len(ids):
        raise DatasetError("write_records: duplicate sample ids")
    index = RecordIndex(ids, np.concatenate(labels_all), shape, int(num_classes), tuple(shards), name)
    np.savez(folder / INDEX, ids=index.ids, labels=index.labels, shape=np.asarray(shape),
             num_classes=index.num_classes, shards=np.asarray(shards), name=name)
    return index


class RecordSource:
    """Random access to a record set (a grain ``RandomAccessDataSource``).

    ``source[i]`` is ``(id, label, pixels uint8 [*shape])`` of record position ``i``,
    read from disk by ``grain.sources.ArrayRecordDataSource`` (nothing is preloaded);
    :meth:`read_many` reads a batch at once.
    """

    def __init__(self, folder: str | os.PathLike):
        import grain

        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self._records = grain.sources.ArrayRecordDataSource([str(p) for p in shard_paths(self.folder, self.index)])
        if len(self._records) != len(self.index.ids):
            raise DatasetError(f"{self.folder}: {len(self._records)} records but {len(self.index.ids)} in the index")

    @property
    def ids(self) -> np.ndarray:
        """int64 ``[N]`` stable sample ids in record order."""
        return self.index.ids

    @property
    def labels(self) -> np.ndarray:
        """int32 ``[N]``."""
        return self.index.labels

    @property
    def shape(self) -> tuple[int, ...]:
        """Sample shape."""
        return self.index.shape

    @property
    def num_classes(self) -> int:
        """K."""
        return self.index.num_classes

    def __len__(self) -> int:
        return len(self.index.ids)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray]:
        return decode(self._records[int(i)], self.index.shape)

    def read_many(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids int64 [B], labels int32 [B], pixels uint8 [B, *shape])`` of many records:
        one batched read and one vectorised decode."""
        raw = self._records.__getitems__([int(p) for p in positions])
        size = HEADER + int(np.prod(self.index.shape))
        if any(len(r) != size for r in raw):
            raise DatasetError(f"{self.folder}: a record is not {size} bytes (shape {self.index.shape})")
        rows = np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), size)
        ids = rows[:, :8].copy().view(np.int64).reshape(-1)
        labels = rows[:, 8:HEADER].copy().view(np.int32).reshape(-1)
        return ids, labels, rows[:, HEADER:].reshape(len(raw), *self.index.shape)

    def __repr__(self) -> str:
        return f"RecordSource({str(self.folder)!r}, n={len(self)}, shape={self.index.shape})"


# -------------------------------------------------------------------------- converters
IMAGENET64_BATCHES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
IMAGENET64_PARTS = ("Imagenet64_train_part1.npz", "Imagenet64_train_part2.npz")
# split -> (its release sub-folder, the file sets of either release naming)
IMAGENET64_SPLITS = {
    "train": ("Imagenet64_train_npz", (IMAGENET64_BATCHES, IMAGENET64_PARTS)),
    "val": ("Imagenet64_val_npz", (("val_data.npz",), ("Imagenet64_val.npz",))),
}


def imagenet64_batch_files(folder: str | os.PathLike, split: str = "train") -> list[Path]:
    """The downsampled-ImageNet batch files of ``split`` (``train``: the ten
    ``train_data_batch_*`` or the two ``Imagenet64_train_part*``; ``val``: ``val_data.npz``
    or ``Imagenet64_val.npz``) under ``folder`` (also in its ``Imagenet64_<split>_npz`` or
    ``imagenet64`` subfolder), in order.

    Raises:
      DatasetError: an unknown split, no files found, or an incomplete set.
    """
    if split not in IMAGENET64_SPLITS:
        raise DatasetError(f"downsampled ImageNet splits are {sorted(IMAGENET64_SPLITS)}, got {split!r}")
    folder = Path(folder)
    sub, naming = IMAGENET64_SPLITS[split]
    for base in (folder, folder / sub, folder / "imagenet64"):
        for names in naming:
            found = [base / n for n in names]
            present = [p for p in found if p.is_file()]
            if present and len(present) < len(found):
                raise DatasetError(f"{base}: incomplete set, missing {[p.name for p in found if not p.is_file()]}")
            if present:
                return found
    raise DatasetError(f"{folder}: no {' or '.join(', '.join(names) for names in naming)} "
                       f"(downsampled ImageNet 64x64 npz release, {split} split)")


def _imagenet64_batches(files: Sequence[Path]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from gold.data.sources import imagenet64 as npz_release

    start = 0
    for path in files:
        x, y = npz_release._read_batch(path)  # NHWC uint8, labels 0..999
        yield np.arange(start, start + len(x), dtype=np.int64), y, x
        start += len(x)


def convert_imagenet64_npz(src: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                           records_per_shard: int = 100_000) -> RecordIndex:
    """Downsampled-ImageNet npz batches of ``split`` (``train`` | ``val``) -> a record set
    (ids = the release's order within the split). The streamed pipeline evaluates on the
    ``val`` set written to ``<train records>/val``."""
    return write_records(out, _imagenet64_batches(imagenet64_batch_files(src, split)), num_classes=1000,
                         name="imagenet64", records_per_shard=records_per_shard)


def convert_tfds(tfds_name: str, out: str | os.PathLike, *, split: str = "train",
                 data_dir: str | None = None, batch: int = 1024, name: str = "imagenet64",
                 records_per_shard: int = 100_000) -> RecordIndex:
    """A prepared tfds dataset (random-access ``tfds.data_source``, e.g.
    ``imagenet_resized/64x64``) split -> a record set (ids = tfds record order). The
    streamed pipeline evaluates on ``split='validation'`` written to ``<train records>/val``."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    source = tfds.data_source(tfds_name, split=split, data_dir=data_dir)
    num_classes = builder.info.features["label"].num_classes

    def batches():
        for s in range(0, len(source), batch):
            rows = [source[i] for i in range(s, min(s + batch, len(source)))]
            yield (np.arange(s, s + len(rows), dtype=np.int64), np.asarray([r["label"] for r in rows]),
                   np.stack([np.asarray(r["image"], np.uint8) for r in rows]))

    return write_records(out, batches(), num_classes=num_classes, name=name,
                         records_per_shard=records_per_shard)


__all__ = ["INDEX", "RecordIndex", "RecordSource", "convert_imagenet64_npz", "convert_tfds", "decode",
           "encode", "imagenet64_batch_files", "read_index", "shard_paths", "write_records"]
