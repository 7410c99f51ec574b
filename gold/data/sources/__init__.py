"""Where datasets come from. `load_raw` tries the sources in this order:

a. ``npz``      ``<dir>/<name>.npz`` (`npz`)
b. ``raw``      official raw files: MNIST IDX, CIFAR pickles, SVHN .mat, Imagenet64 npz (`raw`)
c. ``folder``   image folder ``train/<class>/*``, ``test/<class>/*`` as a dir or zip (`folder`)
d. ``tfds``     ``tfds.data_source`` of an already prepared dataset (`tfds_source`)
e. ``embedded`` data shipped with a package: scikit-learn digits (`embedded`)

The first source that finds the dataset is read; a found-but-broken file is an error,
never a reason to fall through to the next source. Slow sources (raw, folder) are
cached (`gold.data.cache`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from gold.data import cache as cache_lib
from gold.data.errors import DatasetError
from gold.data.registry import get_info
from gold.data.sources import embedded, folder, npz, raw, tfds_source
from gold.data.sources.base import Location, RawData, restrict, validate

__all__ = ["SOURCES", "RawData", "Location", "default_data_dir", "load_raw", "find_source"]

SOURCES = {m.SOURCE: m for m in (npz, raw, folder, tfds_source, embedded)}


def default_data_dir() -> Path | None:
    """``$GOLD_DATA_DIR`` as a path, or None when unset/empty."""
    env = os.environ.get("GOLD_DATA_DIR", "")
    return Path(env).expanduser() if env else None


def _resolve_dir(data_dir: str | os.PathLike | None) -> Path | None:
    path = Path(data_dir).expanduser() if data_dir not in (None, "") else default_data_dir()
    if path is not None and not path.is_dir():
        raise DatasetError(f"data_dir {str(path)!r} does not exist or is not a directory "
                           f"(argument data_dir or $GOLD_DATA_DIR)")
    return path


def find_source(name: str, data_dir: str | os.PathLike | None = None,
                source: str = "auto") -> Location:
    """The `Location` `load_raw` would read, without reading it.

    Raises:
      DatasetError: unknown name/source, missing data_dir, or nothing found; the message
        names the directory searched and the files each source expects.
    """
    info = get_info(name)
    if source != "auto" and source not in SOURCES:
        raise DatasetError(f"unknown source {source!r}; valid: auto, {', '.join(SOURCES)}")
    path = _resolve_dir(data_dir)
    candidates = list(SOURCES.values()) if source == "auto" else [SOURCES[source]]
    for module in candidates:
        loc = module.locate(info, path)
        if loc is not None:
            return loc
    looked = "\n".join(f"  {m.SOURCE}: {m.expected(info, path)}" for m in candidates)
    where = f"data_dir {str(path)!r}" if path else "no data_dir (argument or $GOLD_DATA_DIR unset)"
    raise DatasetError(f"dataset {info.name!r} not found; searched {where} for:\n{looked}")


def load_raw(name: str, data_dir: str | os.PathLike | None = None, *, source: str = "auto",
             strict_counts: bool = True, train_per_class: int | None = None,
             test_per_class: int | None = None, cache: bool = True,
             cache_dir: str | os.PathLike | None = None) -> RawData:
    """Decoded pixels in [0, 255] and labels, official order, from the first source found.

    Args:
      name: registered dataset name (see `gold.data.list_datasets`).
      data_dir: folder with the files; default ``$GOLD_DATA_DIR``.
      source: ``auto`` (the documented order) or one of ``npz raw folder tfds embedded``.
      strict_counts: require the registry's split sizes and all classes (off for tiny
        or mock data; shapes, label range and class count are always checked).
      train_per_class, test_per_class: keep only the first n samples of each class;
        `RawData.train_ids` still index the full split.
      cache: read/write the decoded-array cache for slow sources.
      cache_dir: cache folder; default ``$GOLD_CACHE_DIR`` or ``~/.cache/gold``.

    Returns:
      `RawData` with x ``[N, *image_shape]`` (uint8 or float32 in [0, 255]) and int64 labels.

    Raises:
      DatasetError: see `find_source`, plus corrupt files and failed checks.
    """
    info = get_info(name)
    caps = dict(train_per_class=train_per_class, test_per_class=test_per_class)
    for key, cap in caps.items():
        if cap is not None and int(cap) < 1:
            raise DatasetError(f"{key} must be None or >= 1, got {cap}")
    loc = find_source(info.name, data_dir, source)
    module = SOURCES[loc.source]
    entry = None
    if cache and module.CACHEABLE:
        options = caps if loc.source == "folder" else {}
        entry = cache_lib.cache_path(Path(cache_dir) if cache_dir else cache_lib.default_cache_dir(),
                                     info.name, loc.paths, options)
        data = cache_lib.load_cached(entry)
        if data is not None:
            return restrict(validate(info, data, strict_counts), info.num_classes, **caps)
    data = module.read(info, loc, **caps)  # the folder source decodes only the capped files
    validate(info, data, strict_counts)
    if entry is not None:
        try:
            cache_lib.save_cached(entry, data)
        except OSError as e:
            warnings.warn(f"could not write the data cache {entry} ({e}); continuing without it")
    return restrict(data, info.num_classes, **caps)
