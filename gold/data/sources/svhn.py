"""Official SVHN cropped-digit MATLAB files ``train_32x32.mat`` and ``test_32x32.mat``.

``X`` is ``(32, 32, 3, N)`` uint8, ``y`` is ``(N, 1)`` with 10 meaning the digit 0
(mapped to label 0). Searched in ``<dir>/svhn`` then ``<dir>``. ``extra_32x32.mat`` is
not used (the paper's 73,257 training images are the train split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

FILES = ("train_32x32.mat", "test_32x32.mat")


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this format looks for."""
    where = f"{data_dir / info.name}, {data_dir}" if data_dir else "<dir>"
    return f"{' and '.join(FILES)} in one of: {where}"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """Both .mat files in one folder."""
    if data_dir is None:
        return None
    for base in (data_dir / info.name, data_dir):
        paths = tuple(base / f for f in FILES)
        if any(p.is_file() for p in paths):
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise DatasetError(f"{base}: incomplete SVHN set, missing {', '.join(missing)}")
            return Location("raw", paths, "svhn_mat")
    return None


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, 32, 32, 3] uint8, y [N] int64 in 0..9)`` from one .mat file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several unrelated types for a corrupt file
        raise DatasetError(f"{path}: not a readable .mat file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path}: expected variables X (32, 32, 3, N) and y (N, 1)")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DatasetError(f"{path}: X has shape {x.shape} for {len(y)} labels; expected (32, 32, 3, N)")
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise DatasetError(f"{path}: labels span [{y.min()}, {y.max()}]; expected 1..10 (10 = digit 0)")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), y.astype(np.int64) % 10


def read(info: DatasetInfo, loc: Location) -> RawData:
    """Read train and test."""
    (xtr, ytr), (xte, yte) = (read_mat(p) for p in loc.paths)
    return RawData.from_arrays(xtr, ytr, xte, yte, loc.describe())
