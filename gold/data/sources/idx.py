"""Official MNIST / Fashion-MNIST IDX files (gzipped or not).

``train-images-idx3-ubyte[.gz] train-labels-idx1-ubyte[.gz] t10k-images-idx3-ubyte[.gz]
t10k-labels-idx1-ubyte[.gz]``, all four in one folder, searched in ``<dir>/<name>``,
``<dir>/<name>/raw``, the torchvision folders (``<dir>/MNIST/raw``,
``<dir>/FashionMNIST/raw``) and ``<dir>``. Both datasets use the same file names, so
files directly in ``<dir>`` are read as whichever dataset was asked for.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData, name_dirs

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ALIASES = {"mnist": ("MNIST",), "fashion_mnist": ("FashionMNIST",)}
_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned byte data, 3-D images / 1-D labels


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this format looks for."""
    dirs = ", ".join(str(d) for d in name_dirs(data_dir, info, ALIASES[info.name])) if data_dir else "<dir>"
    return f"IDX files {', '.join(f + '[.gz]' for f in FILES)} in one of: {dirs}"


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """First folder holding any of the IDX files; all four must then be there."""
    if data_dir is None:
        return None
    for folder in name_dirs(data_dir, info, ALIASES[info.name]):
        found = [_find(folder, stem) for stem in FILES]
        if any(found):
            missing = [stem for stem, f in zip(FILES, found) if f is None]
            if missing:
                raise DatasetError(f"{folder}: incomplete IDX set, missing {', '.join(missing)}[.gz]")
            return Location("raw", tuple(found), "idx")
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with `ndim` dimensions (3 images, 1 labels)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({type(e).__name__}: {e}); expected a "
                           f"{'gzipped ' if path.suffix == '.gz' else ''}IDX file") from e
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != _MAGIC[ndim]:
        raise DatasetError(f"{path}: bad IDX header; expected magic {_MAGIC[ndim]:#010x} "
                           f"(uint8, {ndim}-D)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise DatasetError(f"{path}: IDX header says shape {shape} ({int(np.prod(shape))} bytes) "
                           f"but the file holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read(info: DatasetInfo, loc: Location) -> RawData:
    """Read the four files; images get a channel axis."""
    xtr, ytr, xte, yte = (read_idx(p, 3 if i % 2 == 0 else 1) for i, p in enumerate(loc.paths))
    for (x, y, px) in ((xtr, ytr, loc.paths[0]), (xte, yte, loc.paths[2])):
        if len(x) != len(y):
            raise DatasetError(f"{px}: {len(x)} images but its labels file has {len(y)} labels")
    return RawData.from_arrays(xtr[..., None], ytr, xte[..., None], yte, loc.describe())
