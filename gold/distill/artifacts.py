"""Self-describing synthetic sets: ``synthetic.npz`` + ``synthetic.png``.

``synthetic.npz`` holds everything needed to evaluate the set anywhere, without the
config that produced it:

* ``x`` float32 ``[M, H, W, C]`` images in model space (channel-normalised with
  ``mean`` / ``std``, then ZCA-whitened when ``zca_whiten`` is present), ``y`` labels
  (int32 ``[M]`` or float32 ``[M, K]``), ``lr`` (learned evaluation lr, NaN = none);
* ``dataset``, ``num_classes``, ``class_names``, ``ipc``, ``algorithm``;
* ``mean``, ``std`` (per channel, [0, 1] pixel units), ``normalized``;
* ``zca_mean`` / ``zca_whiten`` / ``zca_unwhiten`` / ``zca_reg`` when ZCA was used;
* ``protocol``: JSON of ``EvalProtocol.to_dict()`` (every field: optimizer, loss,
  schedule, CutMix ...; a version-1 file's protocol lacks those and loads with the
  reference defaults); ``meta``: JSON of extra facts (num_real, iterations, seconds,
  settings);
* ``factor.<name>``: the stored factors of a factorised set (HaBa: ``factor.bases``
  and ``factor.hallucinators.<leaf>``, decoded by
  ``gold.distill.hallucinator.decode_factors``); ``x`` is always their decoded set, so
  any evaluator needs ``x`` alone. Sets without factors (pixels, older files) load
  with ``factors == {}``.

:func:`load_synthetic` reads it back as a :class:`SyntheticSet`, whose
:meth:`SyntheticSet.evaluate` loads the named dataset's test split, brings it into
the stored model space (the stored ZCA, the stored normalisation) and runs
``gold.evaluate.evaluate_synthetic`` with the stored protocol and lr.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from gold import data as gdata
from gold.evaluate import EvalProtocol, EvalResult, evaluate_synthetic

FORMAT_VERSION = 2
# Versions load_synthetic reads: 1 stored the protocol before the optimizer / loss /
# schedule / CutMix fields existed (they load with the reference defaults).
READABLE_VERSIONS = (1, 2)
FACTOR_PREFIX = "factor."


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
    factors: dict = dataclasses.field(default_factory=dict)

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
                   meta: Optional[dict] = None, factors: Optional[dict] = None) -> None:
    """Write ``synthetic.npz`` atomically (see the module docstring for the fields;
    ``factors``: ``{name: array}`` stored as float32 ``factor.<name>``)."""
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
    fields.update({f"{FACTOR_PREFIX}{k}": np.asarray(v, np.float32) for k, v in (factors or {}).items()})
    if dataset.zca is not None:
        fields.update(zca_mean=np.asarray(dataset.zca.mean), zca_whiten=np.asarray(dataset.zca.whiten),
                      zca_unwhiten=np.asarray(dataset.zca.unwhiten), zca_reg=np.float64(dataset.zca.reg))
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **fields)
    os.replace(tmp, path)


def load_synthetic(path: str) -> SyntheticSet:
    """Read a ``synthetic.npz`` written by :func:`save_synthetic`.

    Raises:
      ValueError: not a gold synthetic set (missing fields), an unknown format version,
        or a stored protocol with unknown fields.
    """
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x", "y", "dataset", "protocol", "mean", "std") if k not in f]
        if missing:
            raise ValueError(f"{path} is not a gold synthetic set (missing {missing})")
        version = int(f["format_version"]) if "format_version" in f else 0
        if version not in READABLE_VERSIONS:
            raise ValueError(f"{path} has synthetic format version {version}; readable: {READABLE_VERSIONS}")
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
            meta=json.loads(str(f["meta"])),
            factors={k[len(FACTOR_PREFIX):]: np.asarray(f[k]) for k in f.files
                     if k.startswith(FACTOR_PREFIX)})


class ImageGrid(NamedTuple):
    """A class-labelled image grid: ``image`` uint8 ``[H, W, 3]`` and, per class, the
    canvas pixel ``(x_centre, y_bottom)`` of its label band and the label's width in
    canvas pixels."""

    image: np.ndarray
    label_anchors: tuple[tuple[float, float], ...]
    label_width: int


def image_grid(pixels: np.ndarray, labels: np.ndarray, num_classes: int, *,
               classes_per_row: int = 10, images_per_column: int = 10, pad: int = 1,
               label_height: int = 0) -> ImageGrid:
    """Classes as columns: each class is a tile of its images, tiles wrap after
    ``classes_per_row`` classes.

    Within a tile, images run top to bottom in columns of ``images_per_column``; a class
    with more images gets further columns (IPC 1: one image per tile; IPC 10: a column
    of 10; IPC 50: 5 columns of 10). Above every tile is a white band of
    ``label_height`` pixels for the class name (drawn by :func:`save_png`).

    Args:
      pixels: ``[M, H, W, C]`` images in [0, 1] (clipped here), C = 1 (grey) or 3.
      labels: int ``[M]`` or soft ``[M, K]`` labels (argmax).
      num_classes: K; a class without images gets an empty tile.

    Returns:
      :class:`ImageGrid` with a white background and ``pad`` pixels between images.
    """
    labels = np.asarray(labels)
    hard = labels.argmax(-1) if labels.ndim == 2 else labels
    x = np.clip(np.asarray(pixels, np.float32), 0.0, 1.0)
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]
    h, w = x.shape[1:3]
    members = [np.flatnonzero(hard == c) for c in range(num_classes)]
    most = max(1, max(len(m) for m in members))
    tile_rows = min(most, images_per_column)
    tile_cols = -(-most // images_per_column)
    tile_h = label_height + tile_rows * (h + pad)
    tile_w = tile_cols * (w + pad) + 2 * pad  # 2 * pad: a gap between classes
    per_row = max(1, min(classes_per_row, num_classes))
    grid_rows = -(-num_classes // per_row)
    canvas = np.ones((grid_rows * tile_h + pad, per_row * tile_w, 3), np.float32)
    anchors = []
    for c, idx in enumerate(members):
        top, left = (c // per_row) * tile_h, (c % per_row) * tile_w + pad
        anchors.append((left + (tile_w - 2 * pad) / 2.0, top + label_height))
        for j, i in enumerate(idx):
            y0 = top + label_height + pad + (j % images_per_column) * (h + pad)
            x0 = left + pad + (j // images_per_column) * (w + pad)
            canvas[y0:y0 + h, x0:x0 + w] = x[i]
    return ImageGrid((canvas * 255.0 + 0.5).astype(np.uint8), tuple(anchors), tile_w - 2 * pad)


def _fit_label(name: str, width_px: float, char_px: float) -> str:
    """``name`` shortened with an ellipsis to at most ``width_px`` at ``char_px`` per
    character (at least 3 characters)."""
    room = max(3, int(width_px // char_px))
    return name if len(name) <= room else name[: room - 1] + "\u2026"


def frames_side_by_side(clips: np.ndarray) -> np.ndarray:
    """Clips ``[M, T, H, W, C]`` as images ``[M, H, T * W, C]``: frame ``t`` in columns
    ``[t * W, (t + 1) * W)``."""
    m, t, h, w, c = clips.shape
    return clips.transpose(0, 2, 1, 3, 4).reshape(m, h, t * w, c)


def save_png(path: str, syn: SyntheticSet, scale: int = 0, classes_per_row: int = 10,
             images_per_column: int = 10) -> None:
    """``synthetic.png``: the de-normalised set, classes as labelled columns (matplotlib,
    Agg backend).

    Every class is a column of its images under its class name; after
    ``classes_per_row`` classes the columns wrap into a new row (CIFAR-100: 10 rows of
    10 classes); a class with more than ``images_per_column`` images gets more columns.
    ``scale`` = screen pixels per image pixel (0: automatic, images at least 64 pixels
    wide so small images stay visible). Grey and RGB sets, any IPC; a clip ``[T, H, W, C]``
    is shown as its T frames side by side.
    """
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend

    pixels = syn.to_pixels()
    if pixels.ndim == 5:
        pixels = frames_side_by_side(pixels)
    w = pixels.shape[2]
    scale = scale if scale > 0 else max(1, -(-64 // max(w, 1)))
    font_px = 11.0  # 8 pt at 100 dpi
    label_height = int(-(-(font_px + 4) // scale))
    grid = image_grid(pixels, syn.y, syn.num_classes, classes_per_row=classes_per_row,
                      images_per_column=images_per_column, label_height=label_height)
    title_px = 22
    gh, gw = grid.image.shape[:2]
    dpi = 100.0
    fig = Figure(figsize=(gw * scale / dpi, (gh * scale + title_px) / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, gh * scale / (gh * scale + title_px)))
    ax.imshow(grid.image, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    names = list(syn.class_names) or [str(c) for c in range(syn.num_classes)]
    for name, (cx, bottom) in zip(names, grid.label_anchors):
        ax.text(cx, bottom - 1.0 / scale, _fit_label(name, grid.label_width * scale, 6.5),
                ha="center", va="bottom", fontsize=8)
    fig.text(0.5, 1.0 - 3.0 / (gh * scale + title_px),
             f"{syn.algorithm} on {syn.dataset}: {syn.ipc} image{'s' * (syn.ipc != 1)} per class",
             ha="center", va="top", fontsize=10)
    fig.savefig(path, dpi=dpi)


__all__ = ["ImageGrid", "SyntheticSet", "frames_side_by_side", "image_grid", "load_synthetic", "save_png",
           "save_synthetic"]
