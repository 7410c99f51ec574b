"""Official downsampled ImageNet 64x64 (Chrabaszcz et al. 2017) npz batches.

``Imagenet64_train_npz/train_data_batch_{1..10}.npz`` and
``Imagenet64_val_npz/val_data.npz`` (folders optional), each with ``data`` ``(N, 12288)``
uint8 stored channel-planar (R plane, G plane, B plane) and ``labels`` 1..1000.
Searched in ``<dir>/imagenet64`` then ``<dir>``. Labels are shifted to 0..999; their
order is the one of the downsampled release (its ``map_clsloc.txt``).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
TEST = ("val_data.npz",)


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this format looks for."""
    where = f"{data_dir / info.name}, {data_dir}" if data_dir else "<dir>"
    return (f"Imagenet64_train_npz/train_data_batch_1..10.npz and Imagenet64_val_npz/val_data.npz "
            f"(folders optional) in one of: {where}")


def _find(base: Path, sub: str, name: str) -> Path:
    return base / sub / name if (base / sub / name).is_file() else base / name


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """All eleven batch files under one base folder."""
    if data_dir is None:
        return None
    for base in (data_dir / info.name, data_dir):
        paths = tuple(_find(base, "Imagenet64_train_npz", n) for n in TRAIN) + \
            tuple(_find(base, "Imagenet64_val_npz", n) for n in TEST)
        if any(p.is_file() for p in paths):
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise DatasetError(f"{base}: incomplete Imagenet64 set, missing {', '.join(missing)}")
            return Location("raw", paths, "imagenet64_npz")
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            data, labels = f["data"], np.asarray(f["labels"]).reshape(-1).astype(np.int64)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: not a readable Imagenet64 batch ({type(e).__name__}: {e}); "
                           f"expected arrays data (N, 12288) and labels (N,)") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 64 * 64 * 3 or len(labels) != len(data):
        raise DatasetError(f"{path}: data {data.shape} {data.dtype} with {len(labels)} labels; "
                           f"expected (N, 12288) uint8 and N labels")
    return data.reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1), labels - 1


def read(info: DatasetInfo, loc: Location) -> RawData:
    """Concatenate the ten training batches, then the validation batch."""
    parts = [_read_batch(p) for p in loc.paths]
    tr, te = parts[: len(TRAIN)], parts[len(TRAIN):]
    return RawData.from_arrays(np.concatenate([p[0] for p in tr]), np.concatenate([p[1] for p in tr]),
                               np.concatenate([p[0] for p in te]), np.concatenate([p[1] for p in te]),
                               loc.describe())
