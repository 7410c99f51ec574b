"""Linear bases: synthetic images = addressing matrix A x bases B, upsampled.

Deng & Russakovsky, "Remember the Past: Distilling Datasets into Addressable Memories
for Neural Networks" (LinBa, NeurIPS 2022); reference
princetonvisualai/RememberThePast-DatasetDistillation
(``compressors/imgs_embedding_basis_minibatch.py``, ``utils/Img_per_Cls_budget.py``).

Stored: ``bases [n_b, h, w, C]`` (``h = H / ds``, ``w = W / ds``), shared by every class,
and ``coeffs [K * r, n_b]``, ``r`` rows per class (class-major). Decoded image ``i`` is
``coeffs[i] @ bases`` (a ``[h, w, C]`` image) upsampled by ``ds`` bilinearly with
half-pixel centres (PyTorch ``F.interpolate(..., mode='bilinear',
align_corners=False)``; ``jax.image.resize`` 'bilinear' is the same map when
upsampling). So ``per_class = r`` decoded images per class.

Storage budget (reference ``cal_ncoef`` with ``fixed_budget``): the numbers stored must
not exceed the pixels of ``ipc`` images per class,
``ipc * H * W * C * K >= n_b * h * w * C + K * r * n_b``, with the largest such ``r``
(:func:`rows_for_budget`). The stored numbers per class then fall short of the pixel
budget by less than one coefficient row (``n_b`` numbers).

Init (reference ``xavier_uniform`` on both embeddings, torch's fan convention for a
``[num, dim]`` embedding weight): ``U(-a, a)``, ``a = sqrt(6 / (num + dim))``, with
``(num, dim) = (n_b, h*w*C)`` for the bases and ``(K*r, n_b)`` for the coefficients.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from gold.distill import common

PyTree = Any


def rows_for_budget(ipc: int, image_shape: tuple[int, ...], num_classes: int, num_bases: int,
                    downsample: int = 2) -> int:
    """Coefficient rows per class that fit the pixel budget of ``ipc`` images per class.

    ``floor((ipc * H*W*C * K - n_b * (H/ds)*(W/ds)*C) / (K * n_b))`` (reference
    ``cal_ncoef``; e.g. MNIST IPC 1, 16 bases, ds 2: ``floor((7840 - 3136) / 160) = 29``).

    Raises:
      ValueError: the bases alone exceed the budget (fewer than one row per class), or
        ``H`` / ``W`` not divisible by ``downsample``.
    """
    h, w, c = base_shape(image_shape, downsample)
    budget = ipc * math.prod(image_shape) * num_classes
    rows = (budget - num_bases * h * w * c) // (num_classes * num_bases)
    if rows < 1:
        raise ValueError(f"{num_bases} bases of {h}x{w}x{c} leave no coefficient row within the "
                         f"budget of ipc={ipc} ({budget} numbers); use fewer bases or a larger ipc")
    return int(rows)


def base_shape(image_shape: tuple[int, ...], downsample: int) -> tuple[int, int, int]:
    """``(H / ds, W / ds, C)`` of one basis.

    Raises:
      ValueError: ``H`` or ``W`` not divisible by ``downsample``, or ``downsample < 1``.
    """
    hgt, wid, ch = image_shape
    if downsample < 1 or hgt % downsample or wid % downsample:
        raise ValueError(f"image size {hgt}x{wid} is not divisible by downsample={downsample}")
    return hgt // downsample, wid // downsample, ch


def storage_per_class(num_classes: int, rows: int, num_bases: int,
                      base: tuple[int, int, int]) -> float:
    """Numbers stored per class: ``(n_b * h*w*C + K * r * n_b) / K``."""
    return (num_bases * math.prod(base) + num_classes * rows * num_bases) / num_classes


def _uniform_xavier(key: jax.Array, num: int, dim: int) -> jax.Array:
    bound = math.sqrt(6.0 / (num + dim))
    return jax.random.uniform(key, (num, dim), jnp.float32, -bound, bound)


@dataclasses.dataclass(frozen=True)
class LinearBases:
    """``params = {'bases': [n_b, h, w, C], 'coeffs': [K*r, n_b]}``; decoded images
    ``[K*r, H, W, C]`` (implements ``common.ImageParameterization``).

    Attributes:
      num_classes: K.
      rows: r, coefficient rows (= decoded images) per class.
      num_bases: n_b.
      image_shape: ``(H, W, C)`` of the decoded images.
      downsample: ds, the bases are ``H/ds x W/ds`` and decoding upsamples by ds.
    """

    num_classes: int
    rows: int
    num_bases: int
    image_shape: tuple[int, ...]
    downsample: int = 2

    @property
    def per_class(self) -> int:
        """Decoded images per class (= rows)."""
        return self.rows

    @property
    def base_shape(self) -> tuple[int, int, int]:
        """``(h, w, C)`` of one basis."""
        return base_shape(self.image_shape, self.downsample)

    def storage_per_class(self) -> float:
        """Numbers stored per class (:func:`storage_per_class`)."""
        return storage_per_class(self.num_classes, self.rows, self.num_bases, self.base_shape)

    def init(self, key: jax.Array, real: common.RealData, mode: str) -> PyTree:
        """Xavier-uniform bases and coefficients (the reference's init; ``mode='noise'``).

        Raises:
          ValueError: any other ``mode`` (the reference has no real init of the bases).
        """
        if mode != "noise":
            raise ValueError(f"LinearBases supports init='noise' (xavier uniform, the reference's), "
                             f"got {mode!r}")
        k_b, k_c = jax.random.split(key)
        base = self.base_shape
        bases = _uniform_xavier(k_b, self.num_bases, math.prod(base)).reshape(self.num_bases, *base)
        coeffs = _uniform_xavier(k_c, self.num_classes * self.rows, self.num_bases)
        return {"bases": bases, "coeffs": coeffs}

    def decode(self, params: PyTree) -> jax.Array:
        """``upsample(coeffs @ bases)``: ``[K*r, H, W, C]``, differentiable."""
        small = jnp.einsum("nb,bhwc->nhwc", params["coeffs"], params["bases"])
        return jax.image.resize(small, (small.shape[0], *self.image_shape), method="bilinear")


__all__ = ["LinearBases", "base_shape", "rows_for_budget", "storage_per_class"]
