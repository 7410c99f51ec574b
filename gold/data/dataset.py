"""`Dataset` (normalised arrays + metadata) and `load_dataset`."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from gold.data import cache as cache_lib
from gold.data.errors import DatasetError
from gold.data.registry import get_info
from gold.data.sources import load_raw
from gold.data.transforms import ZCA, apply_zca, denormalize, fit_zca, invert_zca

__all__ = ["Dataset", "load_dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset as arrays, ready for training.

    Attributes:
      name: registry name.
      x_train, x_test: float32 ``[N, H, W, C]`` (videos ``[N, T, H, W, C]``): pixels in
        [0, 1], channel-normalised if `normalized`, then ZCA-whitened if `zca`.
      y_train, y_test: int32 ``[N]``.
      num_classes: K.
      class_names: K names in label order.
      mean, std: per-channel statistics in [0, 1] pixel units (the registry's; used
        for normalisation when `normalized`).
      ids: int64 ``[N_train]``: each training sample's index in the source's official
        train order; stays attached through `subset`.
      zca: the `ZCA` fitted on the training split and applied to both splits, or None.
      normalized: whether channel normalisation was applied.
      source: where the data was read from, e.g. ``npz:/data/mnist.npz``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ids: np.ndarray
    zca: ZCA | None = None
    normalized: bool = True
    source: str = ""

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Per-sample shape ``(H, W, C)`` or ``(T, H, W, C)``."""
        return tuple(self.x_train.shape[1:])

    def subset(self, indices) -> "Dataset":
        """Training samples at `indices` (into this dataset); ids, test split and transforms kept."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.y_train)):
            raise DatasetError(f"subset indices span [{idx.min()}, {idx.max()}], outside "
                               f"0..{len(self.y_train) - 1}")
        return dataclasses.replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx],
                                   ids=self.ids[idx])

    def to_pixels(self, x):
        """Map model-space images back to pixels in [0, 1] (undo ZCA, then normalisation); not clipped."""
        if self.zca is not None:
            x = invert_zca(self.zca, x)
        return denormalize(x, self.mean, self.std) if self.normalized else x


def _prepare(x: np.ndarray, info, normalized: bool) -> np.ndarray:
    """[0, 255] -> float32 [0, 1] (then normalised), as one in-place affine map."""
    mean = np.asarray(info.mean if normalized else [0.0] * info.channels, np.float32)
    std = np.asarray(info.std if normalized else [1.0] * info.channels, np.float32)
    out = x.astype(np.float32)  # always a fresh array: safe to modify in place
    out *= np.float32(1.0 / 255.0) / std
    out -= mean / std
    return out


def _fit_zca_cached(name: str, x_raw: np.ndarray, x_train: np.ndarray, reg: float,
                    normalized: bool, cache: bool, cache_dir) -> ZCA:
    """`fit_zca(x_train, reg)`, memoised on disk by the raw training pixels and options."""
    if not cache:
        return fit_zca(x_train, reg=reg)
    entry = cache_lib.zca_path(Path(cache_dir) if cache_dir else cache_lib.default_cache_dir(),
                               name, x_raw, {"reg": reg, "normalized": normalized})
    transform = cache_lib.load_zca(entry)
    if transform is None:
        transform = fit_zca(x_train, reg=reg)
        try:
            cache_lib.save_zca(entry, transform)
        except OSError as e:
            warnings.warn(f"could not write the ZCA cache {entry} ({e}); continuing without it")
    return transform


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, zca: bool = False,
                 zca_reg: float = 0.1, normalize: bool | None = None, source: str = "auto",
                 strict_counts: bool = True, train_per_class: int | None = None,
                 test_per_class: int | None = None, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a registered dataset as float32 arrays.

    Args:
      name: registered name (`gold.data.list_datasets`).
      data_dir: data folder; default ``$GOLD_DATA_DIR`` (see `gold.data.sources` for the
        files each source looks for).
      zca: ZCA-whiten (fit on the training split, applied to both splits).
      zca_reg: regulariser added to the covariance eigenvalues (0.1 as in MTT).
      normalize: channel mean/std normalisation. Default (None): on without ZCA, off
        with ZCA, as in MTT (ZCA on [0, 1] pixels); True with ZCA normalises first.
      source: ``auto`` or one source (``npz raw folder tfds embedded``).
      strict_counts: require the official split sizes and all classes (turn off for
        tiny or mock data).
      train_per_class, test_per_class: keep only the first n samples of each class (in
        official order): tiny, deterministic subsets whose ids stay correct.
      cache: use the on-disk cache (decoded arrays of slow sources, fitted ZCA).
      cache_dir: cache folder; default ``$GOLD_CACHE_DIR`` or ``~/.cache/gold``.

    Returns:
      `Dataset`.

    Raises:
      DatasetError: unknown name, missing data, corrupt files, failed checks.
    """
    info = get_info(name)
    if zca and info.is_video:
        raise DatasetError(f"ZCA is not supported for the video dataset {info.name} "
                           f"(D = {int(np.prod(info.image_shape))} features)")
    raw = load_raw(info.name, data_dir, source=source, strict_counts=strict_counts,
                   train_per_class=train_per_class, test_per_class=test_per_class,
                   cache=cache, cache_dir=cache_dir)
    normalized = (not zca) if normalize is None else bool(normalize)
    x_train, x_test = _prepare(raw.x_train, info, normalized), _prepare(raw.x_test, info, normalized)
    transform = None
    if zca:
        transform = _fit_zca_cached(info.name, raw.x_train, x_train, zca_reg, normalized,
                                    cache, cache_dir)
        x_train, x_test = apply_zca(transform, x_train), apply_zca(transform, x_test)
    return Dataset(name=info.name, x_train=x_train, y_train=raw.y_train.astype(np.int32),
                   x_test=x_test, y_test=raw.y_test.astype(np.int32), num_classes=info.num_classes,
                   class_names=raw.class_names or info.class_names, mean=info.mean, std=info.std,
                   ids=raw.train_ids.astype(np.int64), zca=transform, normalized=normalized,
                   source=raw.origin)
