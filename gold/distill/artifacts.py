"""Self-describing synthetic sets: ``synthetic.npz`` + ``synthetic.png``.

``synthetic.npz`` holds everything needed to evaluate the set anywhere, without the
config that produced it:

* ``x`` float32 ``[M, H, W, C]`` images in model space (channel-normalised with
  ``mean`` / ``std``, then ZCA-whitened when ``zca_whiten`` is present), ``y`` labels
  (int32 ``[M]`` or float32 ``[M, K]``), ``lr`` (learned evaluation lr, NaN = none);
* ``dataset``, ``num_classes``, ``class_names``, ``ipc``, ``algorithm``;
* ``mean``, ``std`` (per channel, [0, 1] pixel units), ``normalized``;
* ``zca_mean`` / ``zca_whiten`` / ``zca_unwhiten`` / ``zca_reg`` when ZCA was used;
* ``protocol``: JSON of ``EvalProtocol.to_dict()``; ``meta``: JSON of extra facts
  (num_real, iterations, seconds, settings).

:func:`load_synthetic` reads it back as a :class:`SyntheticSet`, whose
:meth:`SyntheticSet.evaluate` loads the named dataset's test split, brings it into
the stored model space (the stored ZCA, the stored normalisation) and runs
``gold.evaluate.evaluate_synthetic`` with the stored protocol and lr.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import numpy as np

from gold import data as gdata
from gold.evaluate import EvalProtocol, EvalResult, evaluate_synthetic

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A synthetic set read from ``synthetic.npz`` (see the module docstring)."""

    x: np.ndarray
    y: np.ndarray
    lr: Optional[float]
    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    ipc: int
    algorithm: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalized: bool
    zca: Optional[gdata.ZCA]
    protocol: EvalProtocol
    meta: dict

    def to_pixels(self, x: Optional[np.ndarray] = None) -> np.ndarray:
        """Images in [0, 1] pixel units (undo ZCA, then normalisation), not clipped."""
        x = self.x if x is None else x
        if self.zca is not None:
            x = gdata.invert_zca(self.zca, x)
        return gdata.denormalize(x, self.mean, self.std) if self.normalized else x

    def test_data(self, data_dir: Optional[str] = None, **load_kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """The dataset's test split in this set's model space: ``x [N, H, W, C]``, ``y [N]``."""
        ds = gdata.load_dataset(self.dataset, data_dir or None, normalize=False, **load_kwargs)
        x = ds.x_test  # pixels in [0, 1]
        if self.normalized:
            x = gdata.normalize(x, self.mean, self.std)
        if self.zca is not None:
            x = gdata.apply_zca(self.zca, x)
        return np.asarray(x, np.float32), np.asarray(ds.y_test, np.int32)

    def evaluate(self, key: Optional[jax.Array] = None, *, data_dir: Optional[str] = None,
                 protocol: Optional[EvalProtocol] = None, max_test: int = 0,
                 **load_kwargs: Any) -> EvalResult:
        """Train the protocol's K networks on this set and test them on the dataset.

        Args:
          key: PRNG key (default ``jax.random.key(0)``).
          data_dir: where the dataset lives (default ``$GOLD_DATA_DIR``).
          protocol: override the stored protocol (e.g. another architecture).
          max_test: > 0 evaluates on the first ``max_test`` test images only.
        """
        x_test, y_test = self.test_data(data_dir, **load_kwargs)
        if max_test > 0:
            x_test, y_test = x_test[:max_test], y_test[:max_test]
        key = jax.random.key(0) if key is None else key
        return evaluate_synthetic(key, self.x, self.y, x_test, y_test, self.num_classes,
                                  protocol or self.protocol, lr=self.lr)


def save_synthetic(path: str, *, x: np.ndarray, y: np.ndarray, lr: Optional[float],
                   dataset: gdata.Dataset, ipc: int, algorithm: str, protocol: EvalProtocol,
                   meta: Optional[dict] = None) -> None:
    """Write ``synthetic.npz`` atomically (see the module docstring for the fields)."""
    fields: dict[str, Any] = dict(
        format_version=np.int64(FORMAT_VERSION),
        x=np.asarray(x, np.float32), y=np.asarray(y),
        lr=np.float64(np.nan if lr is None else float(lr)),
        dataset=np.asarray(dataset.name), num_classes=np.int64(dataset.num_classes),
        class_names=np.asarray(list(dataset.class_names), dtype=str), ipc=np.int64(ipc),
        algorithm=np.asarray(algorithm),
        mean=np.asarray(dataset.mean, np.float64), std=np.asarray(dataset.std, np.float64),
        normalized=np.asarray(bool(dataset.normalized)),
        protocol=np.asarray(json.dumps(protocol.to_dict(), sort_keys=True)),
        meta=np.asarray(json.dumps(meta or {}, sort_keys=True, default=str)),
    )
    if dataset.zca is not None:
        fields.update(zca_mean=np.asarray(dataset.zca.mean), zca_whiten=np.asarray(dataset.zca.whiten),
                      zca_unwhiten=np.asarray(dataset.zca.unwhiten), zca_reg=np.float64(dataset.zca.reg))
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **fields)
    os.replace(tmp, path)


def load_synthetic(path: str) -> SyntheticSet:
    """Read a ``synthetic.npz`` written by :func:`save_synthetic`.

    Raises:
      ValueError: not a gold synthetic set (missing fields) or an unknown format version.
    """
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x", "y", "dataset", "protocol", "mean", "std") if k not in f]
        if missing:
            raise ValueError(f"{path} is not a gold synthetic set (missing {missing})")
        version = int(f["format_version"]) if "format_version" in f else 0
        if version != FORMAT_VERSION:
            raise ValueError(f"{path} has synthetic format version {version}; expected {FORMAT_VERSION}")
        zca = None
        if "zca_whiten" in f:
            zca = gdata.ZCA(np.asarray(f["zca_mean"]), np.asarray(f["zca_whiten"]),
                            np.asarray(f["zca_unwhiten"]), float(f["zca_reg"]))
        lr = float(f["lr"])
        return SyntheticSet(
            x=np.asarray(f["x"]), y=np.asarray(f["y"]), lr=None if np.isnan(lr) else lr,
            dataset=str(f["dataset"]), num_classes=int(f["num_classes"]),
            class_names=tuple(str(s) for s in f["class_names"]), ipc=int(f["ipc"]),
            algorithm=str(f["algorithm"]),
            mean=tuple(float(v) for v in f["mean"]), std=tuple(float(v) for v in f["std"]),
            normalized=bool(f["normalized"]), zca=zca,
            protocol=EvalProtocol.from_dict(json.loads(str(f["protocol"]))),
            meta=json.loads(str(f["meta"])))


def image_grid(pixels: np.ndarray, labels: np.ndarray, num_classes: int, pad: int = 1,
               max_per_row: int = 50) -> np.ndarray:
    """uint8 ``[rows*(H+pad)+pad, cols*(W+pad)+pad, 3]`` grid, one row per class.

    ``pixels``: ``[M, H, W, C]`` in [0, 1] (clipped here); ``labels``: int ``[M]`` or
    soft ``[M, K]`` (argmax). Classes with more than ``max_per_row`` images show the
    first ``max_per_row``.
    """
    labels = np.asarray(labels)
    hard = labels.argmax(-1) if labels.ndim == 2 else labels
    x = np.clip(np.asarray(pixels, np.float32), 0.0, 1.0)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x[..., :3]
    h, w = x.shape[1:3]
    rows = [np.flatnonzero(hard == c)[:max_per_row] for c in range(num_classes)]
    cols = max(1, max((len(r) for r in rows), default=1))
    grid = np.ones((num_classes * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for c, idx in enumerate(rows):
        for j, i in enumerate(idx):
            top, left = pad + c * (h + pad), pad + j * (w + pad)
            grid[top:top + h, left:left + w] = x[i]
    return (grid * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, syn: SyntheticSet, scale: int = 0) -> None:
    """``synthetic.png``: de-normalised grid, one row per class (Pillow).

    ``scale`` = integer upscaling (0: automatic, so small images stay visible).
    """
    from PIL import Image

    grid = image_grid(syn.to_pixels(), syn.y, syn.num_classes)
    if scale <= 0:
        scale = max(1, 64 // max(syn.x.shape[1], 1))
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    img.save(path)


__all__ = ["SyntheticSet", "image_grid", "load_synthetic", "save_png", "save_synthetic"]
