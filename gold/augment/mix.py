"""CutMix (Yun et al., ICCV 2019) as used by IDC for training on synthetic data, pure JAX."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def cutmix(
    key: jax.Array,
    x: jax.Array,
    y_onehot: jax.Array,
    beta: float = 1.0,
    prob: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """Batch CutMix: with probability ``prob`` paste one box from a shuffled batch.

    As in the CutMix reference (and IDC): ``lam ~ Beta(beta, beta)``; a box of side
    ``int(H * sqrt(1 - lam)) x int(W * sqrt(1 - lam))`` centred at a uniform pixel
    ``(cy, cx)``, corners clipped to the image (``[cy - ch//2, cy + ch//2)``); every
    image ``i`` gets the box content of image ``perm[i]``; labels are mixed by the
    pasted area fraction: ``y * (1 - a) + y[perm] * a``, ``a = box area / (H * W)``
    (equivalent to the reference's ``ratio``-weighted sum of two cross-entropies).

    Args:
        key: PRNG key.
        x: [N, H, W, C] images.
        y_onehot: [N, K] (soft) one-hot labels.
        beta: Beta parameter (a Python float: static under jit); ``beta <= 0``
            disables CutMix.
        prob: probability that the batch is mixed at all.

    Returns:
        ``(x_mix [N, H, W, C], y_mix [N, K])``; ``(x, y_onehot)`` when not applied.
    """
    if beta <= 0:
        return x, y_onehot
    return _cutmix_jit(key, x, y_onehot, float(beta), prob)


@functools.partial(jax.jit, static_argnums=(3,))
def _cutmix_jit(
    key: jax.Array, x: jax.Array, y_onehot: jax.Array, beta: float, prob: float
) -> tuple[jax.Array, jax.Array]:
    """Jitted body of :func:`cutmix` (static: beta)."""
    n, h, w, _ = x.shape
    k_u, k_lam = jax.random.split(key)
    u = jax.random.uniform(k_u, (3 + n,))  # one threefry kernel for apply, centre, perm
    apply = u[0] < prob
    if beta == 1.0:  # Beta(1, 1) = U[0, 1): skips the (slow to compile) gamma sampler
        lam = jax.random.uniform(k_lam, ())
    else:
        lam = jax.random.beta(k_lam, beta, beta)
    perm = jnp.argsort(u[3:])
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.floor(h * cut).astype(jnp.int32)
    cw = jnp.floor(w * cut).astype(jnp.int32)
    cy = jnp.minimum(jnp.floor(u[1] * h).astype(jnp.int32), h - 1)
    cx = jnp.minimum(jnp.floor(u[2] * w).astype(jnp.int32), w - 1)
    y1, y2 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x1, x2 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    rows, cols = jnp.arange(h), jnp.arange(w)
    box = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    box = box & apply
    x_mix = jnp.where(box[None, :, :, None], x[perm], x)
    area = jnp.where(apply, (y2 - y1) * (x2 - x1) / (h * w), 0.0).astype(y_onehot.dtype)
    y_mix = y_onehot * (1.0 - area) + y_onehot[perm] * area
    return x_mix, y_mix
