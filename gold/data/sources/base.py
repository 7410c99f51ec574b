"""What every source returns (`RawData`), where it found it (`Location`), and the checks.

A source reads pixels in [0, 255] (uint8, or float32 for rescaled data such as the
8x8 digits) and integer labels, in the source's official train/test order.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo

__all__ = ["RawData", "Location", "validate", "restrict", "natural_key", "first_per_class",
           "name_dirs"]


@dataclasses.dataclass(frozen=True, eq=False)
class Location:
    """Where a source found a dataset.

    Attributes:
      source: source kind, one of ``npz raw folder tfds embedded``.
      paths: files/folders the data is read from (the cache fingerprints them).
      detail: source-specific tag (e.g. ``"idx"``, ``"cifar_tar"``, ``"zip"``).
    """

    source: str
    paths: tuple[Path, ...]
    detail: str = ""

    def describe(self) -> str:
        """Human-readable origin, e.g. ``npz:/data/mnist.npz``."""
        where = ", ".join(str(p) for p in self.paths) if self.paths else self.detail
        return f"{self.source}:{where}"


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
    """Decoded arrays of one dataset, before normalisation.

    Attributes:
      x_train, x_test: ``[N, *image_shape]`` uint8, or float32 with values in [0, 255].
      y_train, y_test: int64 ``[N]`` labels in ``0 .. K-1``.
      train_ids, test_ids: int64 ``[N]`` index of each sample in the full split's
        official order (``arange`` unless the data was restricted per class).
      full_counts: ``(n_train, n_test)`` sizes of the full splits in the source.
      class_names: names read from the source in label order, or ``None``.
      origin: where the data came from (`Location.describe`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    full_counts: tuple[int, int]
    class_names: tuple[str, ...] | None
    origin: str

    @classmethod
    def from_arrays(cls, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, origin: str,
                    class_names: Sequence[str] | None = None) -> "RawData":
        """Full splits in official order (ids = ``arange``)."""
        return cls(x_train, np.asarray(y_train).astype(np.int64).reshape(-1), x_test,
                   np.asarray(y_test).astype(np.int64).reshape(-1),
                   np.arange(len(x_train), dtype=np.int64), np.arange(len(x_test), dtype=np.int64),
                   (len(x_train), len(x_test)),
                   None if class_names is None else tuple(str(c) for c in class_names), origin)


_NUM = re.compile(r"(\d+)")


def natural_key(text: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (digit runs compare as numbers)."""
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(_NUM.split(text))]


def name_dirs(data_dir: Path, info: DatasetInfo, aliases: Sequence[str] = ()) -> list[Path]:
    """Folders searched for a dataset's files, most specific first.

    ``<dir>/<name>``, ``<dir>/<name>/raw``, ``<dir>/<alias>``, ``<dir>/<alias>/raw`` then
    ``<dir>`` itself.
    """
    dirs = []
    for sub in (info.name, *aliases):
        dirs += [data_dir / sub, data_dir / sub / "raw"]
    return dirs + [data_dir]


def _check_split(info: DatasetInfo, x: np.ndarray, y: np.ndarray, split: str, origin: str) -> None:
    expected = tuple(info.image_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise DatasetError(f"{origin}: x_{split} has shape {tuple(x.shape)}, but {info.name} "
                           f"expects (N, {', '.join(map(str, expected))})")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{origin}: x_{split} has dtype {x.dtype}; expected uint8 or float in [0, 255]")
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 255 or not np.isfinite(x).all()):
            raise DatasetError(f"{origin}: x_{split} float values must be finite and in [0, 255]")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{origin}: y_{split} has shape {tuple(y.shape)}; expected ({len(x)},) "
                           f"labels, one per image")
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        raise DatasetError(f"{origin}: y_{split} labels span [{y.min()}, {y.max()}], but {info.name} "
                           f"has {info.num_classes} classes (labels 0..{info.num_classes - 1})")


def validate(info: DatasetInfo, raw: RawData, strict_counts: bool = True) -> RawData:
    """Check shapes, dtypes, label range, class names and (if `strict_counts`) split sizes.

    Args:
      info: registry entry the data must match.
      raw: data as read by a source.
      strict_counts: also require the official split sizes (when the registry knows them)
        and every class present in the training split. Turn off for tiny test files and
        `tfds.testing.mock_data`; shapes, label range and class count are always checked.

    Returns:
      `raw`, unchanged.

    Raises:
      DatasetError: naming `raw.origin` and what was expected.
    """
    _check_split(info, raw.x_train, raw.y_train, "train", raw.origin)
    _check_split(info, raw.x_test, raw.y_test, "test", raw.origin)
    if raw.class_names is not None and len(raw.class_names) != info.num_classes:
        raise DatasetError(f"{raw.origin}: the source names {len(raw.class_names)} classes, "
                           f"but {info.name} has {info.num_classes}")
    if strict_counts:
        for split, got, want in (("train", raw.full_counts[0], info.num_train),
                                 ("test", raw.full_counts[1], info.num_test)):
            if want is not None and got != want:
                raise DatasetError(f"{raw.origin}: {split} split has {got} samples, but {info.name} "
                                   f"has {want} (pass strict_counts=False for partial or mock data)")
        missing = np.setdiff1d(np.arange(info.num_classes), raw.y_train)
        if len(raw.y_train) == raw.full_counts[0] and len(missing):
            raise DatasetError(f"{raw.origin}: classes {missing.tolist()[:10]} have no training "
                               f"samples; {info.name} has {info.num_classes} classes")
    return raw


def first_per_class(labels: np.ndarray, num_classes: int, k: int | None) -> np.ndarray:
    """Sorted indices of the first `k` samples of every class (all when `k` is None)."""
    if k is None:
        return np.arange(len(labels), dtype=np.int64)
    keep = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        keep[np.flatnonzero(labels == c)[:k]] = True
    return np.flatnonzero(keep).astype(np.int64)


def restrict(raw: RawData, num_classes: int, train_per_class: int | None,
             test_per_class: int | None) -> RawData:
    """Keep the first samples of each class (official order); ids keep pointing to the full split."""
    tr = first_per_class(raw.y_train, num_classes, train_per_class)
    te = first_per_class(raw.y_test, num_classes, test_per_class)
    if len(tr) == len(raw.y_train) and len(te) == len(raw.y_test):
        return raw
    return dataclasses.replace(raw, x_train=raw.x_train[tr], y_train=raw.y_train[tr],
                               x_test=raw.x_test[te], y_test=raw.y_test[te],
                               train_ids=raw.train_ids[tr], test_ids=raw.test_ids[te])
