"""Source (d): TensorFlow Datasets through ``tfds.data_source`` (no TensorFlow needed).

Used when ``tensorflow_datasets`` is importable and the dataset is already prepared in
tfds' data dir (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) in a random-access
format (prepare it once with ``tfds build <tfds_name> --file_format=array_record``). Nothing is downloaded from here. Sample order is tfds'
record order. ``tfds.testing.mock_data`` works, with mock sizes: load it with
``strict_counts=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

SOURCE = "tfds"
CACHEABLE = False  # tfds has its own storage; a mock would poison the cache
TFDS_NAMES: dict[str, tuple[str, str, str]] = {  # dataset -> (tfds name, train split, test split)
    "mnist": ("mnist", "train", "test"),
    "fashion_mnist": ("fashion_mnist", "train", "test"),
    "cifar10": ("cifar10", "train", "test"),
    "cifar100": ("cifar100", "train", "test"),
    "svhn": ("svhn_cropped", "train", "test"),
    "imagenet64": ("imagenet_resized/64x64", "train", "validation"),
}


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    return tfds


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this source looks for."""
    if info.name not in TFDS_NAMES:
        return f"no tfds dataset for {info.name}"
    name = TFDS_NAMES[info.name][0]
    if _tfds() is None:
        return f"tfds {name!r} (tensorflow_datasets is not installed)"
    where = _tfds_dir() or "tfds' default data dir"
    return f"tfds {name!r} prepared in {where} (run `tfds build {name} --file_format=array_record`)"


def _tfds_dir() -> str | None:
    """``$TFDS_DATA_DIR`` read now (tfds itself reads it once, at import), else tfds' default."""
    return os.environ.get("TFDS_DATA_DIR") or None


def _open(info: DatasetInfo, split: str):
    """The split's random-access data source, or None when the dataset is not prepared."""
    tfds = _tfds()
    name = TFDS_NAMES[info.name][0]
    try:
        return tfds.data_source(name, split=split, data_dir=_tfds_dir(), download=False)
    except (KeyError, FileNotFoundError, NotImplementedError,
            tfds.core.registered.DatasetNotFoundError) as e:
        if tfds.builder(name, data_dir=_tfds_dir()).is_prepared():
            raise DatasetError(f"tfds {name!r} is prepared but cannot be opened for random access "
                               f"({type(e).__name__}: {e}); rebuild it with `tfds build {name} "
                               f"--file_format=array_record`") from e
        return None  # not prepared: let the next source try


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """A `Location` when both splits can be opened."""
    if info.name not in TFDS_NAMES or _tfds() is None:
        return None
    name, train, test = TFDS_NAMES[info.name]
    if _open(info, train) is None or _open(info, test) is None:
        return None
    return Location(SOURCE, (), name)


def _split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    ds = _open(info, split)
    if ds is None:
        raise DatasetError(f"tfds {TFDS_NAMES[info.name][0]!r}: split {split!r} is not prepared")
    x = np.empty((len(ds), *info.image_shape), np.uint8)
    y = np.empty(len(ds), np.int64)
    for i in range(len(ds)):
        example = ds[i]
        image = np.asarray(example["image"])
        if image.shape != x.shape[1:]:
            raise DatasetError(f"tfds {TFDS_NAMES[info.name][0]!r}[{split}][{i}]: image shape "
                               f"{image.shape}; {info.name} expects {info.image_shape}")
        x[i], y[i] = image, int(example["label"])
    label = ds.dataset_info.features["label"]
    if label.num_classes != info.num_classes:
        raise DatasetError(f"tfds {TFDS_NAMES[info.name][0]!r}: {label.num_classes} classes, but "
                           f"{info.name} has {info.num_classes}")
    # tfds names (e.g. ImageNet wnids) only replace generic registry names
    return x, y, tuple(label.names) if info.generic_class_names else None


def read(info: DatasetInfo, loc: Location, **_) -> RawData:
    """Read both splits example by example."""
    _, train, test = TFDS_NAMES[info.name]
    xtr, ytr, names = _split(info, train)
    xte, yte, _ = _split(info, test)
    return RawData.from_arrays(xtr, ytr, xte, yte, f"tfds:{loc.detail}", names)
