"""Source (a): ``<dir>/<name>.npz`` holding ``x_train y_train x_test y_test``.

The layout of ``$GOLD_DATA_DIR/mnist.npz``: ``x (N, H, W, C)`` uint8 (a missing channel
axis is accepted for 1-channel data, e.g. Keras' ``mnist.npz``), integer labels,
official order. An optional ``class_names`` string array overrides the registry's names.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

SOURCE = "npz"
CACHEABLE = False  # already arrays: the cache would only copy them
KEYS = ("x_train", "y_train", "x_test", "y_test")


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this source looks for."""
    return f"{data_dir / (info.name + '.npz') if data_dir else info.name + '.npz'} with {', '.join(KEYS)}"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """``<dir>/<name>.npz`` if it exists."""
    if data_dir is None:
        return None
    path = data_dir / f"{info.name}.npz"
    return Location(SOURCE, (path,)) if path.is_file() else None


def _images(x: np.ndarray, info: DatasetInfo) -> np.ndarray:
    if info.channels == 1 and x.ndim == len(info.image_shape):
        return x[..., None]
    return x


def read(info: DatasetInfo, loc: Location, **_) -> RawData:
    """Read the four arrays; any unreadable/truncated file raises `DatasetError`."""
    path = loc.paths[0]
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise DatasetError(f"{path}: missing arrays {missing}; expected {', '.join(KEYS)}")
            arrays = {k: f[k] for k in KEYS}
            names = tuple(str(s) for s in f["class_names"]) if "class_names" in f.files else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: not a readable .npz ({type(e).__name__}: {e}); expected "
                           f"arrays {', '.join(KEYS)}") from e
    for k in ("y_train", "y_test"):
        if not np.issubdtype(arrays[k].dtype, np.integer):
            raise DatasetError(f"{path}: {k} has dtype {arrays[k].dtype}; expected integer labels")
    return RawData.from_arrays(_images(arrays["x_train"], info), arrays["y_train"],
                               _images(arrays["x_test"], info), arrays["y_test"],
                               loc.describe(), names)
