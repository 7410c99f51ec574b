"""Source (c): an image folder, as a directory or a zip.

Layout ``train/<class>/<files>`` and ``test/<class>/<files>`` (``val`` is accepted for
``test``; files may sit in sub-folders of a class, e.g. Tiny ImageNet's
``train/<wnid>/images/``). Looked up as ``<dir>/<name>.zip`` then ``<dir>/<name>/``; a
zip may wrap everything in one top-level folder.

Class order: the registry's `class_names` when they equal the set of class folders,
else the folder names in natural order (``2`` before ``10``). Within a class, files in
natural order of their path. The "official" order of the samples is therefore class
by class, which is what `ids` index. Images are decoded with Pillow (``L`` for 1
channel, ``RGB`` for 3) and must already have the registry's size.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData, natural_key

SOURCE = "folder"
CACHEABLE = True
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TEST_SPLITS = ("test", "val")

Tree = dict[str, dict[str, list[str]]]  # split -> class -> relative file paths


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this source looks for."""
    if info.is_video:
        return f"image folders are not supported for the video dataset {info.name}"
    base = data_dir if data_dir else Path("<dir>")
    return f"{base / (info.name + '.zip')} or {base / info.name}/ with train/<class>/* and test/<class>/*"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """``<dir>/<name>.zip`` or a ``<dir>/<name>/`` that has a ``train`` folder."""
    if data_dir is None or info.is_video:
        return None
    if (data_dir / f"{info.name}.zip").is_file():
        return Location(SOURCE, (data_dir / f"{info.name}.zip",), "zip")
    if (data_dir / info.name / "train").is_dir():
        return Location(SOURCE, (data_dir / info.name,), "dir")
    return None


def _is_image(rel: str) -> bool:
    parts = rel.split("/")
    return (rel.lower().endswith(EXTENSIONS) and not any(p.startswith(".") for p in parts)
            and "__MACOSX" not in parts)


def _tree(files: list[str]) -> Tree:
    tree: Tree = defaultdict(lambda: defaultdict(list))
    for rel in files:
        parts = rel.split("/")
        if len(parts) >= 3 and _is_image(rel):
            tree[parts[0]][parts[1]].append(rel)
    return tree


def _zip_files(zf: zipfile.ZipFile) -> tuple[str, list[str]]:
    """(prefix, relative file names): strips one wrapping folder if there is no root train/."""
    names = [n for n in zf.namelist() if not n.endswith("/")]
    if any(n.startswith("train/") for n in names):
        return "", names
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(tops) == 1:
        prefix = tops.pop() + "/"
        return prefix, [n[len(prefix):] for n in names if n.startswith(prefix)]
    return "", names


def _dir_files(root: Path) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        out += [f"{rel_dir}/{f}" if rel_dir != "." else f for f in filenames]
    return out


def _class_order(info: DatasetInfo, classes: set[str], where: str) -> list[str]:
    if len(classes) != info.num_classes:
        raise DatasetError(f"{where}: found {len(classes)} class folders in train/, but {info.name} "
                           f"has {info.num_classes} classes")
    if set(info.class_names) == classes:
        return list(info.class_names)
    return sorted(classes, key=natural_key)


def _decode(data: bytes, info: DatasetInfo, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = "L" if info.channels == 1 else "RGB"
            arr = np.asarray(im if im.mode == mode else im.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{what}: cannot decode image ({type(e).__name__}: {e})") from e
    arr = arr.reshape(*arr.shape[:2], -1)
    if arr.shape != tuple(info.image_shape):
        raise DatasetError(f"{what}: image has shape {arr.shape}; {info.name} expects {info.image_shape}")
    return arr


def _read_split(info: DatasetInfo, by_class: dict[str, list[str]], order: list[str],
                read_bytes: Callable[[str], bytes], where: str, per_class: int | None):
    unknown = set(by_class) - set(order)
    if unknown:
        raise DatasetError(f"{where}: class folders {sorted(unknown)[:5]} of the test split are "
                           f"not among the training classes")
    xs, ys, ids, offset = [], [], [], 0
    for label, cls in enumerate(order):
        files = sorted(by_class.get(cls, []), key=natural_key)
        for j, rel in enumerate(files[:per_class]):
            xs.append(_decode(read_bytes(rel), info, f"{where}:{rel}"))
            ys.append(label)
            ids.append(offset + j)
        offset += len(files)
    x = np.stack(xs) if xs else np.zeros((0, *info.image_shape), np.uint8)
    return x, np.asarray(ys, np.int64), np.asarray(ids, np.int64), offset


def read(info: DatasetInfo, loc: Location, *, train_per_class: int | None = None,
         test_per_class: int | None = None) -> RawData:
    """Decode the folder; with ``*_per_class`` only the first files of each class are read.

    Args:
      info: the dataset.
      loc: from `locate`.
      train_per_class, test_per_class: decode at most this many files per class (the
        first in natural order); ids still index the full class-by-class order.
    """
    root = loc.paths[0]
    zf = None
    try:
        if loc.detail == "zip":
            try:
                zf = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{root}: not a readable zip ({type(e).__name__}: {e})") from e
            prefix, files = _zip_files(zf)
            read_bytes = lambda rel: zf.read(prefix + rel)  # noqa: E731
        else:
            files = _dir_files(root)
            read_bytes = lambda rel: (root / rel).read_bytes()  # noqa: E731
        tree = _tree(files)
        test_split = next((s for s in TEST_SPLITS if s in tree), None)
        if "train" not in tree or test_split is None:
            raise DatasetError(f"{root}: expected image files under train/<class>/ and test/<class>/ "
                               f"(found top-level folders {sorted(tree)})")
        order = _class_order(info, set(tree["train"]), f"{root}")
        try:
            xtr, ytr, idtr, ntr = _read_split(info, tree["train"], order, read_bytes,
                                              str(root), train_per_class)
            xte, yte, idte, nte = _read_split(info, tree[test_split], order, read_bytes,
                                              str(root), test_per_class)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise DatasetError(f"{root}: cannot read a member ({type(e).__name__}: {e})") from e
    finally:
        if zf is not None:
            zf.close()
    return RawData(xtr, ytr, xte, yte, idtr, idte, (ntr, nte), tuple(order), loc.describe())
