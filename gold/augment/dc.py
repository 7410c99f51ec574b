"""DC evaluation-time augmentation (reference ``augment`` / ``get_daparam``), pure JAX.

The DC reference (VICO-UoE/DatasetCondensation ``utils.py``) trains MNIST evaluation
networks with ``dc_aug_param = dict(crop=4, scale=0.2, rotate=45, noise=0.001,
strategy='crop_scale_rotate')`` (``get_daparam``); ``augment()`` picks, *per sample*,
one op of the strategy uniformly at random:

* ``crop``: pad by ``crop`` pixels with the per-channel mean of the batch, then take
  the ``H x W`` window at offset ``(r, c)``, ``r, c`` uniform in ``{0, ..., 2*crop-1}``
  (so the translation is in ``[-crop, crop - 1]``, as in the reference's
  ``np.random.permutation(crop * 2)[0]``).
* ``scale``: ``h = int(U[1-s, 1+s) * H)``, ``w = int(U[1-s, 1+s) * W)``; nearest
  resize (torch ``F.interpolate`` default: ``src = floor(dst * in / out)``) to
  ``h x w``, place it centred (offset ``int((m - h) / 2)``) on a zero canvas of side
  ``m = max(h, w, H, W)`` and take the centred ``H x W`` window
  (offset ``int((m - H) / 2)``).
* ``rotate``: integer angle ``a`` uniform in ``{-rotate, ..., rotate - 1}`` degrees
  (``np.random.randint(-rotate, rotate)``), ``scipy.ndimage.rotate(img, a,
  axes=(rows, cols), reshape=True, order=3, mode='constant', cval=mean)`` with
  ``mean`` the average of the batch's channel means, then the centred ``H x W``
  window (offset ``int((out - H) / 2)``). Reproduced here with the same cubic
  B-spline (mirror-boundary prefilter, mirror taps, ``cval`` outside
  ``[0, H-1] x [0, W-1]``), the same output geometry and the same window.
* ``noise``: ``x + noise * N(0, 1)``.

Deviations from the reference (documented):

* the reference draws ``w`` from ``shape[2]`` (= H) too; here ``w`` uses ``W`` (the
  same for the square images it is used on);
* random numbers come from ``jax.random`` (different streams, same distributions);
* the reference computes the channel means once, before the per-sample loop, on the
  un-augmented batch; the same here (``stop_gradient``-ed, as the reference uses
  Python floats);
* ``crop=0`` (the reference would raise) means no translation;
* rotation is checked against the installed scipy (1.17, max error ~1e-5); the
  reference pins scipy 1.1.0, whose ``mode='constant'`` boundary handling of spline
  taps may differ from today's in the outermost pixel ring only (MNIST background);
* computed in float32 (scipy interpolates in float64).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

DC_OPS: tuple[str, ...] = ("crop", "scale", "rotate", "noise")
"""Valid op names of a DC augmentation strategy."""


@functools.lru_cache(maxsize=None)
def spline_prefilter_matrix(n: int) -> np.ndarray:
    """Cubic B-spline interpolation prefilter for length ``n`` (mirror boundary).

    ``coef = M @ samples`` gives B-spline coefficients whose cubic spline passes
    through the samples, with the whole-sample symmetric ("mirror") extension
    ``c[-k] = c[k]``, ``c[n-1+k] = c[n-1-k]`` that ``scipy.ndimage.spline_filter1d``
    uses for ``mode='mirror'`` and ``'constant'``.

    Args:
        n: signal length.

    Returns:
        float64 [n, n] matrix.
    """
    if n == 1:
        return np.ones((1, 1))
    a = np.zeros((n, n))
    for k in range(n):
        a[k, k] = 4.0 / 6.0
        for j in (k - 1, k + 1):
            jj = _mirror_np(j, n)
            a[k, jj] += 1.0 / 6.0
    return np.linalg.inv(a)


def _mirror_np(i: int, n: int) -> int:
    """Whole-sample symmetric index reflection (``d c b | a b c d | c b a``)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return period - i if i >= n else i


def _mirror(i: jax.Array, n: int) -> jax.Array:
    """Vectorised :func:`_mirror_np` for int arrays."""
    if n == 1:
        return jnp.zeros_like(i)
    period = 2 * (n - 1)
    i = jnp.abs(i) % period
    return jnp.where(i >= n, period - i, i)


def _cubic_weights(t: jax.Array) -> list[jax.Array]:
    """Cubic B-spline weights of taps ``floor-1 .. floor+2`` at fraction ``t``."""
    t2, t3 = t * t, t * t * t
    return [
        (1.0 - t) ** 3 / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]


def spline_sample(coef: jax.Array, iy: jax.Array, ix: jax.Array, cval: jax.Array) -> jax.Array:
    """Cubic B-spline evaluation (``scipy.ndimage`` order 3, ``mode='constant'``).

    Args:
        coef: [H, W, C] spline coefficients (see :func:`spline_prefilter_matrix`).
        iy, ix: [h, w] row / column pixel coordinates.
        cval: scalar written where a coordinate is outside ``[0, H-1] x [0, W-1]``.

    Returns:
        [h, w, C] interpolated values.
    """
    h, w, _ = coef.shape
    y0f, x0f = jnp.floor(iy), jnp.floor(ix)
    wy = _cubic_weights(iy - y0f)
    wx = _cubic_weights(ix - x0f)
    y0, x0 = y0f.astype(jnp.int32), x0f.astype(jnp.int32)
    rows = [_mirror(y0 + d, h) for d in (-1, 0, 1, 2)]
    cols = [_mirror(x0 + d, w) for d in (-1, 0, 1, 2)]
    # 16 [h, w] gathers: ~5x faster forward on XLA:CPU than one [h, w, 4, 4] gather
    out = jnp.zeros(iy.shape + coef.shape[-1:], coef.dtype)
    for r, a in zip(rows, wy):
        acc = jnp.zeros_like(out)
        for c, b in zip(cols, wx):
            acc = acc + b[..., None] * coef[r, c]
        out = out + a[..., None] * acc
    eps = 1e-4
    inside = (iy >= -eps) & (iy <= h - 1 + eps) & (ix >= -eps) & (ix <= w - 1 + eps)
    return jnp.where(inside[..., None], out, cval.astype(coef.dtype))


@functools.lru_cache(maxsize=None)
def _rotate_table(h: int, w: int, max_deg: int) -> tuple[np.ndarray, ...]:
    """cos, sin, reshaped output rows / cols for angles ``-max_deg .. max_deg-1``.

    Geometry of ``scipy.ndimage.rotate(reshape=True)`` in float64.
    """
    deg = np.arange(-max_deg, max_deg, dtype=np.float64)
    rad = np.deg2rad(deg)
    c, s = np.cos(rad), np.sin(rad)
    # out_bounds = [[c, s], [-s, c]] @ corners (rows, cols); size = int(ptp + 0.5)
    rows = np.stack([np.zeros_like(c), s * w, c * h, c * h + s * w])
    cols = np.stack([np.zeros_like(c), c * w, -s * h, -s * h + c * w])
    oh = (np.ptp(rows, axis=0) + 0.5).astype(np.int64)
    ow = (np.ptp(cols, axis=0) + 0.5).astype(np.int64)
    return c, s, oh, ow


def pad_crop(img: jax.Array, r: jax.Array, c: jax.Array, crop: int, fill: jax.Array) -> jax.Array:
    """Reference DC crop: pad by ``crop`` with ``fill``, take the window at ``(r, c)``.

    Args:
        img: [H, W, C] image.
        r, c: int scalars in ``[0, 2 * crop]``; window offset in the padded image
            (``out[i, j] = img[i + r - crop, j + c - crop]``, ``fill`` outside).
        crop: padding in pixels.
        fill: [C] (or scalar) padding value.

    Returns:
        [H, W, C].
    """
    h, w, _ = img.shape
    rows = jnp.arange(h) + r - crop
    cols = jnp.arange(w) + c - crop
    valid = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    out = img[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
    return jnp.where(valid[..., None], out, jnp.asarray(fill, img.dtype))


def resize_crop(img: jax.Array, nh: jax.Array, nw: jax.Array) -> jax.Array:
    """Reference DC scale: nearest resize to ``nh x nw``, centred on a zero canvas of
    side ``max(nh, nw, H, W)``, centred ``H x W`` window.

    Args:
        img: [H, W, C] image.
        nh, nw: int scalars (>= 1), resized height / width.

    Returns:
        [H, W, C].
    """
    hh, ww, _ = img.shape
    nh = jnp.maximum(jnp.asarray(nh, jnp.int32), 1)
    nw = jnp.maximum(jnp.asarray(nw, jnp.int32), 1)
    m = jnp.maximum(jnp.maximum(nh, nw), max(hh, ww))

    def axis_index(n_out: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
        # output pixel o -> canvas o + (m - size)//2 -> resized k = canvas - (m - n_out)//2
        k = jnp.arange(size) + (m - size) // 2 - (m - n_out) // 2
        valid = (k >= 0) & (k < n_out)
        ratio = jnp.float32(size) / n_out.astype(jnp.float32)
        src = jnp.floor(k.astype(jnp.float32) * ratio).astype(jnp.int32)
        return jnp.clip(src, 0, size - 1), valid

    rs, rv = axis_index(nh, hh)
    cs, cv = axis_index(nw, ww)
    out = img[rs][:, cs]
    return jnp.where((rv[:, None] & cv[None, :])[..., None], out, jnp.zeros((), img.dtype))


def rotate_crop(img: jax.Array, deg: jax.Array, max_deg: int, cval: jax.Array) -> jax.Array:
    """Reference DC rotation of one image by an integer angle, centre-cropped.

    Equals ``scipy.ndimage.rotate(img, deg, axes=(0, 1), reshape=True, order=3,
    mode='constant', cval=cval)`` followed by the centred ``H x W`` window
    (offset ``int((out - H) / 2)``).

    Args:
        img: [H, W, C] image.
        deg: int scalar angle in degrees, ``-max_deg <= deg < max_deg``.
        max_deg: size of the precomputed angle table (static).
        cval: scalar fill value.

    Returns:
        [H, W, C] rotated image.
    """
    h, w, _ = img.shape
    c_t, s_t, oh_t, ow_t = _rotate_table(h, w, max_deg)
    idx = jnp.asarray(deg, jnp.int32) + max_deg
    c = jnp.asarray(c_t, jnp.float32)[idx]
    s = jnp.asarray(s_t, jnp.float32)[idx]
    oh = jnp.asarray(oh_t, jnp.int32)[idx]
    ow = jnp.asarray(ow_t, jnp.int32)[idx]
    # final pixel (i, j) = reshaped-output pixel (i + (oh-h)//2, j + (ow-w)//2)
    dr = jnp.arange(h, dtype=jnp.float32)[:, None] + ((oh - h) // 2).astype(jnp.float32) - (
        oh.astype(jnp.float32) - 1.0
    ) / 2.0
    dc = jnp.arange(w, dtype=jnp.float32)[None, :] + ((ow - w) // 2).astype(jnp.float32) - (
        ow.astype(jnp.float32) - 1.0
    ) / 2.0
    iy = c * dr + s * dc + (h - 1) / 2.0
    ix = -s * dr + c * dc + (w - 1) / 2.0
    mh = jnp.asarray(spline_prefilter_matrix(h), img.dtype)
    mw = jnp.asarray(spline_prefilter_matrix(w), img.dtype)
    coef = jnp.einsum("ij,jkc,lk->ilc", mh, img, mw)
    return spline_sample(coef, iy, ix, cval)


def dc_augment(
    key: jax.Array,
    x: jax.Array,
    strategy: str = "crop_scale_rotate",
    crop: int = 4,
    scale: float = 0.2,
    rotate: float = 45.0,
    noise: float = 0.001,
) -> jax.Array:
    """DC evaluation augmentation: per sample, one op drawn uniformly from ``strategy``.

    Pure and jit-compatible (``strategy``, ``crop``, ``scale``, ``rotate``, ``noise``
    must be static Python values), linear (hence differentiable) in ``x`` per
    sample except for the batch channel means, which are treated as constants.

    Args:
        key: PRNG key.
        x: [N, H, W, C] images (normalised).
        strategy: '_'-separated subset of :data:`DC_OPS`; ``'none'``/``''`` returns x.
        crop: padding / maximal translation in pixels.
        scale: relative resize range (``U[1-scale, 1+scale)``).
        rotate: maximal rotation in degrees (integer angles in
            ``[-rotate, rotate - 1]``; truncated to int as in the reference).
        noise: standard deviation of the additive Gaussian noise.

    Returns:
        [N, H, W, C] augmented images.
    """
    if strategy in ("", "none", "None"):
        return x
    ops = tuple(strategy.split("_"))
    bad = [o for o in ops if o not in DC_OPS]
    if bad:
        raise ValueError(f"unknown DC augmentation op(s) {bad} in {strategy!r}; valid: {DC_OPS}")
    if x.ndim != 4:
        raise ValueError(f"dc_augment expects NHWC images, got shape {x.shape}")
    return _dc_jit(key, x, ops, int(crop), float(scale), int(rotate), float(noise))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _dc_jit(
    key: jax.Array,
    x: jax.Array,
    ops: tuple[str, ...],
    crop: int,
    scale: float,
    max_deg: int,
    noise: float,
) -> jax.Array:
    """Jitted body of :func:`dc_augment` (static: ops and magnitudes)."""
    n, h, w, c = x.shape
    mean_c = lax.stop_gradient(jnp.mean(x, axis=(0, 1, 2)))  # [C]
    cval = jnp.mean(mean_c)
    # One uniform draw for all randomness (each jax.random call is a separately
    # compiled threefry kernel): per sample [choice, crop r, crop c, scale h, scale w,
    # angle] + H*W*C uniforms turned into Gaussian noise when 'noise' is an op.
    n_noise = h * w * c if "noise" in ops else 0
    u = jax.random.uniform(key, (n, 6 + n_noise), jnp.float32)

    def uint(v: jax.Array, lo: int, hi: int) -> jax.Array:
        return jnp.clip(jnp.floor(v * (hi - lo)).astype(jnp.int32) + lo, lo, hi - 1)

    def op_crop(img: jax.Array, v: jax.Array) -> jax.Array:
        if crop <= 0:
            return img
        return pad_crop(img, uint(v[1], 0, 2 * crop), uint(v[2], 0, 2 * crop), crop, mean_c)

    def op_scale(img: jax.Array, v: jax.Array) -> jax.Array:
        nh = jnp.floor((1.0 - scale + 2.0 * scale * v[3]) * h).astype(jnp.int32)
        nw = jnp.floor((1.0 - scale + 2.0 * scale * v[4]) * w).astype(jnp.int32)
        return resize_crop(img, nh, nw)

    def op_rotate(img: jax.Array, v: jax.Array) -> jax.Array:
        if max_deg <= 0:
            return img
        return rotate_crop(img, uint(v[5], -max_deg, max_deg), max_deg, cval)

    def op_noise(img: jax.Array, v: jax.Array) -> jax.Array:
        lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
        z = np.sqrt(2.0).astype(np.float32) * lax.erf_inv(jnp.maximum(2.0 * v[6:] - 1.0, lo))
        return img + noise * z.reshape(img.shape).astype(img.dtype)

    table = {"crop": op_crop, "scale": op_scale, "rotate": op_rotate, "noise": op_noise}
    branches = [table[o] for o in ops]

    def one(img: jax.Array, v: jax.Array) -> jax.Array:
        return lax.switch(uint(v[0], 0, len(ops)), branches, img, v)

    return jax.vmap(one)(x, u)
