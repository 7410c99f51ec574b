"""Multi-formation: every stored image holds an f x f grid of smaller images.

Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization"
(IDC, ICML 2022); reference snu-mllab/Efficient-Dataset-Condensation
(``Synthesizer.decode_zoom`` and ``init(init_type='mix')`` in ``condense.py``). IDM's
2 x 2 "quadrants" are ``factor=2``.

Decode (reference ``decode_zoom``), for stored images ``[K*ipc, H, W, C]``:

1. when ``H % f != 0`` pad the bottom and right to ``f * ceil(H / f)`` with
   ``pad_value`` (the reference pads 32 -> 33 with 0.5 for ``f = 3``: gray in [0, 1]
   pixel units);
2. cut an ``f x f`` grid of ``s x s`` crops, ``s = ceil(H / f)``, crop ``k = i*f + j``
   at rows ``[i*s, (i+1)*s)`` and columns ``[j*s, (j+1)*s)``;
3. upsample each crop to ``H x W`` bilinearly with half-pixel centres (PyTorch
   ``nn.Upsample(mode='bilinear')``, ``align_corners=False``; ``jax.image.resize``
   'bilinear' is the same map when upsampling);
4. order: class-major; within a class crop-major (all ``ipc`` stored images' crop 0,
   then crop 1, ...), as the reference concatenates; so ``per_class = ipc * f^2`` and
   the hard labels repeat each class ``ipc * f^2`` times.

Pixel units: with ``mean`` / ``std`` the stored values are [0, 1] pixels (IDC learns
them there and clips them to [0, 1]) and :meth:`MultiFormation.decode` returns
channel-normalised images ``(x - mean) / std``, the units of ``RealData`` and of the
test set, so the saved ``synthetic.npz`` trains evaluation networks in the same space.
Resizing is linear with weights summing to 1, so normalising after the resize equals
the reference's normalising inside the augmentation. Without ``mean`` / ``std`` the
stored values are in the real data's own units (normalised), as IDM uses them.

Init ``real`` (reference ``init_type='mix'``): ``ipc * f^2`` distinct real images of
each class; image ``k*ipc + n`` of the class is shrunk (PyTorch's default
``F.interpolate`` mode, 'nearest': source index ``floor(dst * in / out)``) into grid
cell ``k = i*f + j`` of stored image ``n``; the first ``H % f`` rows / columns of cells
are one pixel larger so the cells tile ``H`` exactly. Init ``noise``: the reference's
``clip(N(0, 1) / 4 + 0.5, 0, 1)`` in pixel units, ``N(0, 1)`` in normalised units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gold.distill import common

PyTree = Any


def cell_sizes(size: int, factor: int) -> tuple[int, ...]:
    """Sizes of the ``factor`` grid cells that tile ``size`` pixels at init (reference
    ``init_type='mix'``): ``size // factor``, the first ``size % factor`` one larger."""
    s, rem = divmod(size, factor)
    return tuple(s + 1 if i < rem else s for i in range(factor))


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """int ``[n_out]`` source indices of PyTorch's 'nearest' resize:
    ``min(floor(dst * n_in / n_out), n_in - 1)``."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


@dataclasses.dataclass(frozen=True)
class MultiFormation:
    """``params = {'x': [K*ipc, H, W, C]}``; decoded images ``[K*ipc*f^2, H, W, C]``.

    Implements ``common.ImageParameterization``.

    Attributes:
      num_classes: K.
      ipc: stored images per class.
      image_shape: ``(H, W, C)`` of the decoded (and the stored) images; ``H == W``.
      factor: f >= 1, crops per side (1 = plain pixels).
      mean, std: length-C channel statistics in [0, 1] units: stored values are then
        [0, 1] pixels and decode normalises; None = stored in the real data's units.
      pad_value: padding value (stored units) when ``H % f != 0``; the reference's 0.5.
    """

    num_classes: int
    ipc: int
    image_shape: tuple[int, ...]
    factor: int = 2
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    pad_value: float = 0.5

    def __post_init__(self):
        h, w, c = (tuple(self.image_shape) + (None,) * 3)[:3]
        if len(tuple(self.image_shape)) != 3 or h != w:
            raise ValueError(f"multi-formation needs square (H, W, C) images, got {self.image_shape}")
        if self.factor < 1 or self.factor > h:
            raise ValueError(f"factor must be in [1, {h}] for {h}x{w} images, got {self.factor}")
        if self.ipc < 1 or self.num_classes < 1:
            raise ValueError(f"ipc and num_classes must be >= 1, got {self.ipc}, {self.num_classes}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std (pixel units) or neither")
        if self.mean is not None and not len(self.mean) == len(self.std) == c:
            raise ValueError(f"mean / std need {c} channel values, got {self.mean}, {self.std}")

    @property
    def per_class(self) -> int:
        """Decoded images per class: ``ipc * f^2``."""
        return self.ipc * self.factor ** 2

    @property
    def pixel_units(self) -> bool:
        """True when the stored values are [0, 1] pixels (``mean`` / ``std`` given)."""
        return self.mean is not None

    @property
    def crop_size(self) -> int:
        """``s = ceil(H / f)``: side of a crop of the padded stored image."""
        return math.ceil(self.image_shape[0] / self.factor)

    # ------------------------------------------------------------- units
    def normalize(self, x: jax.Array) -> jax.Array:
        """Stored units -> the real data's units (identity without mean / std)."""
        if not self.pixel_units:
            return x
        return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)

    def to_stored(self, x: jax.Array) -> jax.Array:
        """The real data's units -> stored units (inverse of :meth:`normalize`)."""
        if not self.pixel_units:
            return x
        return x * jnp.asarray(self.std, x.dtype) + jnp.asarray(self.mean, x.dtype)

    def project(self, params: PyTree) -> PyTree:
        """Clip stored pixels to [0, 1] (pixel units; IDC clamps every outer iteration);
        the identity in normalised units."""
        if not self.pixel_units:
            return params
        return {"x": jnp.clip(params["x"], 0.0, 1.0)}

    # -------------------------------------------------------------- init
    def tile(self, images: jax.Array) -> jax.Array:
        """Tile ``f^2`` groups of images into grids: ``[f^2, n, H, W, C] -> [n, H, W, C]``.

        Group ``k = i*f + j`` is shrunk ('nearest', PyTorch indices) into cell (i, j)
        of :func:`cell_sizes`.
        """
        f = self.factor
        h = self.image_shape[0]
        sizes = cell_sizes(h, f)
        rows = []
        for i in range(f):
            cells = []
            for j in range(f):
                ri, ci = nearest_index(h, sizes[i]), nearest_index(h, sizes[j])
                cells.append(images[i * f + j][:, ri][:, :, ci])
            rows.append(jnp.concatenate(cells, axis=2))
        return jnp.concatenate(rows, axis=1)

    def init(self, key: jax.Array, real: common.RealData, mode: str) -> PyTree:
        """``{'x': [K*ipc, H, W, C]}`` in stored units ('real': tiled real images,
        ``ipc * f^2`` distinct per class; 'noise': see the module docstring)."""
        k, n, f2 = self.num_classes, self.ipc, self.factor ** 2
        shape = tuple(self.image_shape)
        if mode == "real":
            x = self.to_stored(common.init_real_images(key, real, n * f2))  # [K*f2*n, ...]
            groups = x.reshape(k, f2, n, *shape).transpose(1, 0, 2, 3, 4, 5).reshape(f2, k * n, *shape)
            return {"x": self.tile(groups)}
        if mode == "noise":
            z = jax.random.normal(key, (k * n, *shape))
            return {"x": jnp.clip(z / 4 + 0.5, 0.0, 1.0) if self.pixel_units else z}
        raise ValueError(f"unknown init {mode!r}; valid: {common.INIT_MODES}")

    # ------------------------------------------------------------ decode
    def crops(self, x: jax.Array) -> jax.Array:
        """``[n, H, W, C] -> [f^2, n, s, s, C]`` (padded with ``pad_value``)."""
        f, s = self.factor, self.crop_size
        pad = f * s - x.shape[1]
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), (0, pad), (0, 0)), constant_values=self.pad_value)
        n, c = x.shape[0], x.shape[-1]
        grid = x.reshape(n, f, s, f, s, c).transpose(1, 3, 0, 2, 4, 5)  # [i, j, n, s, s, c]
        return grid.reshape(f * f, n, s, s, c)

    def decode_stored(self, x: jax.Array) -> jax.Array:
        """Stored images of ONE class (or any ``[n, H, W, C]``) -> ``[f^2 * n, H, W, C]``
        decoded, crop-major, in the real data's units."""
        if self.factor == 1:
            return self.normalize(x)
        h, w, c = self.image_shape
        cr = self.crops(x)
        up = jax.image.resize(cr, (*cr.shape[:2], h, w, c), method="bilinear", antialias=False)
        return self.normalize(up.reshape(-1, h, w, c))

    def decode(self, params: PyTree) -> jax.Array:
        """Decoded images ``[K * ipc * f^2, H, W, C]``, class-major, normalised units."""
        k, n = self.num_classes, self.ipc
        x = params["x"].reshape(k, n, *self.image_shape)
        return jax.vmap(self.decode_stored)(x).reshape(k * self.per_class, *self.image_shape)


__all__ = ["MultiFormation", "cell_sizes", "nearest_index"]
