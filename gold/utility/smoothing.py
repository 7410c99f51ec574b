"""Gaussian smoothing of per-sample training curves along the epoch axis.

Re-implements ``scipy.ndimage.gaussian_filter1d`` (order 0) as a small dense
``[E, E]`` smoothing matrix, so one matrix product smooths every sample's curve at
once (NumPy or JAX, any leading sample axes after the epoch axis):

* kernel: ``w[j] = exp(-j^2 / (2 sigma^2))`` for ``j in [-r, r]``,
  ``r = int(truncate * sigma + 0.5)``, normalised to sum 1 (scipy's ``_gaussian_kernel1d``);
* boundary ``mode`` as in ``scipy.ndimage``: ``'reflect'`` (the default, half-sample
  symmetric ``d c b a | a b c d | d c b a``), ``'mirror'`` (``d c b | a b c d | c b a``),
  ``'nearest'`` (``a a a | a b c d | d d d``) and ``'wrap'`` (periodic). The extension is
  applied repeatedly, so a kernel wider than the curve (``r >= E``) is handled exactly like
  scipy does.

``sigma = 0`` is the identity (no smoothing).
"""

from __future__ import annotations

import numpy as np

MODES: tuple[str, ...] = ("reflect", "mirror", "nearest", "wrap")


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised Gaussian weights, float64 ``[2r + 1]``, ``r = int(truncate*sigma + 0.5)``."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return np.ones(1)
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return w / w.sum()


def _extend_index(p: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map (possibly out-of-range) positions ``p`` to indices in ``[0, n)`` for ``mode``."""
    if mode == "reflect":
        m = np.mod(p, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(p)
        m = np.mod(p, 2 * n - 2)
        return np.where(m < n, m, 2 * n - 2 - m)
    if mode == "nearest":
        return np.clip(p, 0, n - 1)
    if mode == "wrap":
        return np.mod(p, n)
    raise ValueError(f"unknown mode {mode!r}; valid: {MODES}")


def smoothing_matrix(num_epochs: int, sigma: float, *, mode: str = "reflect",
                     truncate: float = 4.0) -> np.ndarray:
    """Matrix ``S`` float64 ``[E, E]`` with ``S @ curve == gaussian_filter1d(curve, sigma, axis=0)``.

    Args:
      num_epochs: E, the length of the curves.
      sigma: Gaussian standard deviation in epochs (0 = identity).
      mode: boundary handling, one of ``MODES`` (scipy's names and semantics).
      truncate: kernel radius in standard deviations (scipy default 4.0).
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    w = gaussian_kernel1d(sigma, truncate)
    r = (len(w) - 1) // 2
    s = np.zeros((num_epochs, num_epochs))
    offsets = np.arange(-r, r + 1)
    for i in range(num_epochs):
        np.add.at(s[i], _extend_index(i + offsets, num_epochs, mode), w)
    return s


def gaussian_smooth(curve, sigma: float, *, mode: str = "reflect", truncate: float = 4.0):
    """Smooth ``curve`` (``[E, ...]``, NumPy or JAX) along axis 0; same type and shape.

    Equals ``scipy.ndimage.gaussian_filter1d(curve, sigma, axis=0, mode=mode,
    truncate=truncate)`` up to float rounding.
    """
    s = smoothing_matrix(curve.shape[0], sigma, mode=mode, truncate=truncate)
    if isinstance(curve, np.ndarray):
        out = np.tensordot(s, curve.astype(np.float64), axes=(1, 0))
        return out.astype(curve.dtype) if np.issubdtype(curve.dtype, np.floating) else out
    import jax.numpy as jnp  # JAX array: keep it on device

    return jnp.tensordot(jnp.asarray(s, curve.dtype), curve, axes=(1, 0))


def smoothed_value(curve, sigma: float, epoch: int = -1, *, mode: str = "reflect",
                   truncate: float = 4.0):
    """The smoothed curve's value after ``epoch`` epochs: ``[...]`` (one value per sample).

    The curve is first truncated to its first ``epoch`` epochs (1-based; ``-1`` = all),
    then smoothed, and the last row is returned. Truncating first makes the value equal
    to what a run of only ``epoch`` epochs would give (paper Table 9: "the first 1, 5, 10
    epochs"); with the default ``epoch=-1`` it is the paper's "smoothed loss at the last
    epoch" (supp. 12.4), roughly a weighted mean of the last ~8 epochs for sigma 3.
    """
    n = curve.shape[0]
    e = n if epoch == -1 else int(epoch)
    if not 1 <= e <= n:
        raise ValueError(f"epoch must be -1 or in [1, {n}], got {epoch}")
    return gaussian_smooth(curve[:e], sigma, mode=mode, truncate=truncate)[e - 1]


__all__ = ["MODES", "gaussian_kernel1d", "gaussian_smooth", "smoothed_value", "smoothing_matrix"]
