"""Official CIFAR-10 / CIFAR-100 python pickles (tarball or extracted folder).

CIFAR-10: ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/{data_batch_1..5,
test_batch}``; CIFAR-100: ``cifar-100-python.tar.gz`` or ``cifar-100-python/{train,
test}`` (fine labels). Searched in ``<dir>/<name>`` then ``<dir>``; an extracted folder
wins over a tarball. Pickles are read with an unpickler that only admits numpy arrays,
so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

_LAYOUT = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels"),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module == "numpy.core.multiarray":  # pickles written by numpy 1 (the official files)
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this format looks for."""
    tar, folder, train, test, _ = _LAYOUT[info.name]
    where = f"{data_dir / info.name}, {data_dir}" if data_dir else "<dir>"
    return f"{tar} or {folder}/{{{', '.join(train + test)}}} in one of: {where}"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """Extracted batches folder, else the tarball."""
    if data_dir is None:
        return None
    tar, folder, train, test, _ = _LAYOUT[info.name]
    for base in (data_dir / info.name, data_dir):
        if (base / folder).is_dir():
            paths = tuple(base / folder / f for f in train + test)
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise DatasetError(f"{base / folder}: missing batch files {', '.join(missing)}")
            return Location("raw", paths, "cifar_dir")
        if (base / tar).is_file():
            return Location("raw", (base / tar,), "cifar_tar")
    return None


def _unpickle(data: bytes, what: str) -> dict:
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure to parse a pickle means a corrupt file
        raise DatasetError(f"{what}: not a CIFAR python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{what}: expected a dict batch, got {type(batch).__name__}")
    return batch


def _batch(batch: dict, label_key: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in batch or label_key not in batch:
        raise DatasetError(f"{what}: batch lacks b'data' / {label_key!r}")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{what}: data has shape {data.shape} {data.dtype}; expected (N, 3072) uint8")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if len(labels) != len(data):
        raise DatasetError(f"{what}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _members(loc: Location, info: DatasetInfo) -> list[tuple[str, bytes]]:
    _, folder, train, test, _ = _LAYOUT[info.name]
    if loc.detail == "cifar_dir":
        return [(str(p), p.read_bytes()) for p in loc.paths]
    path = loc.paths[0]
    try:
        with tarfile.open(path, "r:*") as tar:
            out = []
            for name in train + test:
                member = f"{folder}/{name}"
                try:
                    f = tar.extractfile(member)
                except KeyError as e:
                    raise DatasetError(f"{path}: member {member} not found") from e
                if f is None:
                    raise DatasetError(f"{path}: member {member} is not a file")
                out.append((f"{path}:{member}", f.read()))
            return out
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read the tarball ({type(e).__name__}: {e})") from e


def read(info: DatasetInfo, loc: Location) -> RawData:
    """Concatenate the training batches in order, then the test batch."""
    _, _, train, _, label_key = _LAYOUT[info.name]
    parts = [_batch(_unpickle(data, what), label_key, what) for what, data in _members(loc, info)]
    tr, te = parts[: len(train)], parts[len(train):]
    return RawData.from_arrays(np.concatenate([p[0] for p in tr]), np.concatenate([p[1] for p in tr]),
                               np.concatenate([p[0] for p in te]), np.concatenate([p[1] for p in te]),
                               loc.describe())
