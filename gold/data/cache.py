"""On-disk cache of decoded `RawData` (slow sources: JPEG folders, pickles, .mat, IDX)
and of fitted ZCA transforms (an eigendecomposition of a 3072x3072 covariance for CIFAR).

One uncompressed ``.npz`` per (dataset, source files, options) under the cache dir
(default ``$GOLD_CACHE_DIR``, else ``~/.cache/gold``). The key fingerprints every
source file by absolute path, size and modification time, so editing or replacing a
file invalidates the entry; a ZCA entry is keyed by a SHA-256 of the training pixels
and the options. Entries are written to a temporary file and renamed, so a
crash never leaves a half-written entry; an unreadable entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gold.data.sources.base import RawData
from gold.data.transforms import ZCA

__all__ = ["default_cache_dir", "fingerprint", "cache_path", "load_cached", "save_cached",
           "zca_path", "load_zca", "save_zca"]

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$GOLD_CACHE_DIR`` or ``~/.cache/gold``."""
    env = os.environ.get("GOLD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gold"


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def fingerprint(paths: Iterable[Path]) -> list:
    """Path, size and mtime of each file; a folder contributes every file below it."""
    out = []
    for path in paths:
        if path.is_dir():
            for dirpath, _, files in sorted(os.walk(path)):
                out += [_stat(Path(dirpath) / f) for f in sorted(files)]
        else:
            out.append(_stat(path))
    return out


def cache_path(cache_dir: Path, name: str, paths: Iterable[Path], options: dict[str, Any]) -> Path:
    """Entry file for `name` read from `paths` with `options` (e.g. per-class caps)."""
    key = json.dumps([FORMAT_VERSION, name, fingerprint(paths), options], sort_keys=True)
    return Path(cache_dir) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def load_cached(path: Path) -> RawData | None:
    """The cached data, or None when absent or unreadable (a warning says which)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            names = tuple(str(s) for s in f["class_names"]) if f["has_names"] else None
            return RawData(f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                           f["train_ids"], f["test_ids"], tuple(int(n) for n in f["full_counts"]),
                           names, str(f["origin"]))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        warnings.warn(f"ignoring unreadable cache entry {path} ({type(e).__name__}: {e})")
        return None


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_cached(path: Path, raw: RawData) -> None:
    """Write `raw` atomically (temporary file in the same folder, then rename)."""
    _atomic_savez(path, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test,
                  y_test=raw.y_test, train_ids=raw.train_ids, test_ids=raw.test_ids,
                  full_counts=np.asarray(raw.full_counts, np.int64),
                  has_names=np.asarray(raw.class_names is not None),
                  class_names=np.asarray(raw.class_names or (), dtype=str),
                  origin=np.asarray(raw.origin))

def zca_path(cache_dir: Path, name: str, x_raw: np.ndarray, options: dict[str, Any]) -> Path:
    """Entry file of a ZCA fitted on `x_raw` (the training pixels) with `options`."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, name, list(x_raw.shape), str(x_raw.dtype), options],
                             sort_keys=True).encode())
    digest.update(memoryview(np.ascontiguousarray(x_raw)).cast("B"))
    return Path(cache_dir) / f"{name}-zca-{digest.hexdigest()[:20]}.npz"


def load_zca(path: Path) -> ZCA | None:
    """A cached `ZCA`, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return ZCA(f["mean"], f["whiten"], f["unwhiten"], float(f["reg"]))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        warnings.warn(f"ignoring unreadable cache entry {path} ({type(e).__name__}: {e})")
        return None


def save_zca(path: Path, zca: ZCA) -> None:
    """Write a `ZCA` atomically."""
    _atomic_savez(path, mean=zca.mean, whiten=zca.whiten, unwhiten=zca.unwhiten,
                  reg=np.asarray(zca.reg))
