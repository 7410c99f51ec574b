"""Pixel transforms: channel normalisation and ZCA whitening.

All functions work on numpy or JAX arrays (the result follows the input's library), so
they can also run inside ``jit`` on synthetic images.

ZCA follows ``kornia.enhance.ZCAWhitening(eps=reg, compute_inv=True)``, which MTT uses
with ``eps=0.1`` on CIFAR pixels in [0, 1] (no channel normalisation): flatten each
sample to D features, centre by the training mean, ``cov = Xc^T Xc / (N - 1)`` (kornia's
default unbiased estimate), ``cov = U diag(S) U^T``, whiten with
``W = U diag(1/sqrt(S + reg)) U^T`` and invert with ``U diag(sqrt(S + reg)) U^T``.
Fit on the training split only and apply the same transform to the test split.
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import numpy as np
import scipy.linalg

__all__ = ["normalize", "denormalize", "ZCA", "fit_zca", "apply_zca", "invert_zca"]


def _to_unit(x):
    """uint8 [0, 255] -> float32 [0, 1]; floats are taken to be in [0, 1] already."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def normalize(x, mean: Sequence[float], std: Sequence[float]):
    """``(x - mean) / std`` per channel (last axis).

    Args:
      x: ``[..., C]`` uint8 pixels in [0, 255] or floats in [0, 1].
      mean, std: length-C channel statistics in [0, 1] units.

    Returns:
      float32 ``[..., C]``.
    """
    return (_to_unit(x) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def denormalize(x, mean: Sequence[float], std: Sequence[float]):
    """Inverse of `normalize`: float32 ``[..., C]`` pixels in [0, 1] units (not clipped)."""
    return x * np.asarray(std, np.float32) + np.asarray(mean, np.float32)


@flax.struct.dataclass
class ZCA:
    """A fitted ZCA whitening transform (a pytree: usable as a ``jit`` argument).

    Attributes:
      mean: float32 ``[D]`` training mean of the flattened samples.
      whiten: float32 ``[D, D]`` symmetric whitening matrix ``U diag(1/sqrt(S+reg)) U^T``.
      unwhiten: float32 ``[D, D]`` its inverse ``U diag(sqrt(S+reg)) U^T``.
      reg: the regulariser added to the eigenvalues (kornia's ``eps``).
    """

    mean: np.ndarray
    whiten: np.ndarray
    unwhiten: np.ndarray
    reg: float = flax.struct.field(pytree_node=False, default=0.1)


def fit_zca(x_train, reg: float = 0.1, chunk: int = 8192) -> ZCA:
    """Fit ZCA on training samples.

    Args:
      x_train: ``[N, ...]`` float samples (e.g. ``[N, H, W, C]`` pixels in [0, 1]); N >= 2.
      reg: added to every covariance eigenvalue (0.1 as in MTT/kornia ``eps``).
      chunk: rows per covariance block (bounds memory at ``chunk * D`` floats).

    Returns:
      `ZCA` with D = prod of the per-sample shape.
    """
    x = np.asarray(x_train, np.float32).reshape(len(x_train), -1)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"fit_zca needs at least 2 samples, got {n}")
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    cov = np.zeros((d, d), np.float64)
    for start in range(0, n, chunk):
        xc = x[start:start + chunk] - mean
        cov += xc.T @ xc
    cov /= n - 1
    s, u = scipy.linalg.eigh(cov)
    s = np.clip(s, 0.0, None) + reg
    whiten = (u / np.sqrt(s)) @ u.T
    unwhiten = (u * np.sqrt(s)) @ u.T
    return ZCA(mean, whiten.astype(np.float32), unwhiten.astype(np.float32), float(reg))


def apply_zca(zca: ZCA, x):
    """Whiten ``[N, ...]`` samples with a fitted transform: ``(x - mean) @ W``, same shape."""
    flat = x.reshape(x.shape[0], -1)
    return ((flat - zca.mean) @ zca.whiten).reshape(x.shape)


def invert_zca(zca: ZCA, x):
    """Undo `apply_zca` (for visualisation): ``x @ W^-1 + mean``, same shape."""
    flat = x.reshape(x.shape[0], -1)
    return (flat @ zca.unwhiten + zca.mean).reshape(x.shape)
