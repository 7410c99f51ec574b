"""CutMix (Yun et al., ICCV 2019) as used by IDC for training on synthetic data, pure JAX.

Two pieces so the box can be fixed in tests: :func:`sample_cutmix_box` draws the
batch's box, source permutation and coin flip; :func:`paste_box` applies them.
:func:`cutmix` is both. Everything is traceable (jit / vmap over networks): the box is
a mask, not a dynamic slice.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class CutMixBox(NamedTuple):
    """One batch's CutMix draw: rows ``[y1, y2)`` x columns ``[x1, x2)`` (int32 scalars)
    of image ``perm[i]`` (int32 ``[N]``) are pasted into image ``i`` when ``apply``
    (bool scalar)."""

    apply: jax.Array
    y1: jax.Array
    y2: jax.Array
    x1: jax.Array
    x2: jax.Array
    perm: jax.Array


def sample_cutmix_box(key: jax.Array, n: int, h: int, w: int, beta: float = 1.0,
                      prob: float = 0.5) -> CutMixBox:
    """Draw the CutMix box of a batch of ``n`` images of ``h x w`` pixels.

    As the CutMix reference (and IDC's ``rand_bbox``): ``lam ~ Beta(beta, beta)``; a box
    of side ``int(h * sqrt(1 - lam)) x int(w * sqrt(1 - lam))`` centred at a uniform pixel
    ``(cy, cx)``, corners clipped to the image (``[cy - ch//2, cy + ch//2)``); a uniform
    random permutation of the batch gives each image its source; the batch is mixed
    with probability ``prob``.

    Args:
      beta: Beta parameter, a Python float > 0 (static under jit).
      prob: probability that the batch is mixed at all.
    """
    k_u, k_lam = jax.random.split(key)
    u = jax.random.uniform(k_u, (3 + n,))  # one threefry kernel for apply, centre, perm
    if beta == 1.0:  # Beta(1, 1) = U[0, 1): skips the (slow to compile) gamma sampler
        lam = jax.random.uniform(k_lam, ())
    else:
        lam = jax.random.beta(k_lam, beta, beta)
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.floor(h * cut).astype(jnp.int32)
    cw = jnp.floor(w * cut).astype(jnp.int32)
    cy = jnp.minimum(jnp.floor(u[1] * h).astype(jnp.int32), h - 1)
    cx = jnp.minimum(jnp.floor(u[2] * w).astype(jnp.int32), w - 1)
    return CutMixBox(apply=u[0] < prob,
                     y1=jnp.clip(cy - ch // 2, 0, h), y2=jnp.clip(cy + ch // 2, 0, h),
                     x1=jnp.clip(cx - cw // 2, 0, w), x2=jnp.clip(cx + cw // 2, 0, w),
                     perm=jnp.argsort(u[3:]).astype(jnp.int32))


def paste_box(x: jax.Array, y: jax.Array, box: CutMixBox) -> tuple[jax.Array, jax.Array]:
    """Apply a :class:`CutMixBox`: image ``i`` gets the box of image ``box.perm[i]``; labels
    are mixed by the pasted area fraction ``a = box area / (H * W)``:
    ``y * (1 - a) + y[perm] * a`` (the reference's ``ratio``-weighted sum of two
    cross-entropies, written as one soft label; linear, so centred MSE targets mix the
    same way).

    Args:
      x: ``[N, H, W, C]`` images; y: float ``[N, K]`` labels (one-hot, soft or centred).

    Returns:
      ``(x_mix [N, H, W, C], y_mix [N, K])``; ``(x, y)`` when ``box.apply`` is False.
    """
    h, w = x.shape[1:3]
    rows, cols = jnp.arange(h), jnp.arange(w)
    inside = (((rows >= box.y1) & (rows < box.y2))[:, None]
              & ((cols >= box.x1) & (cols < box.x2))[None, :]) & box.apply
    x_mix = jnp.where(inside[None, :, :, None], x[box.perm], x)
    area = (box.y2 - box.y1) * (box.x2 - box.x1) / (h * w)
    area = jnp.where(box.apply, area, 0.0).astype(y.dtype)
    return x_mix, y * (1.0 - area) + y[box.perm] * area


def cutmix(
    key: jax.Array,
    x: jax.Array,
    y_onehot: jax.Array,
    beta: float = 1.0,
    prob: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """Batch CutMix: with probability ``prob`` paste one box from a shuffled batch
    (:func:`sample_cutmix_box`, then :func:`paste_box`).

    Args:
        key: PRNG key.
        x: [N, H, W, C] images.
        y_onehot: [N, K] float labels (one-hot, soft or centred).
        beta: Beta parameter (a Python float: static under jit); ``beta <= 0``
            disables CutMix.
        prob: probability that the batch is mixed at all.

    Returns:
        ``(x_mix [N, H, W, C], y_mix [N, K])``; ``(x, y_onehot)`` when not applied.
    """
    if beta <= 0:
        return x, y_onehot
    n, h, w = x.shape[:3]
    return paste_box(x, y_onehot, sample_cutmix_box(key, n, h, w, float(beta), prob))
