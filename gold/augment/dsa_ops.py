"""Differentiable Siamese Augmentation (DSA), pure JAX.

Re-implementation of the DSA augmentation of Zhao & Bilen (ICML 2021), reference
``utils.py`` of VICO-UoE/DatasetCondensation (``ParamDiffAug``, ``DiffAugment``,
``rand_*``), split into two pure steps so that one random draw can be applied to
several batches (the *Siamese* part: the real batch of a class and its synthetic
batch get the identical transform):

* :func:`sample_dsa_params` draws every random quantity into a :class:`DSAParams`
  pytree (the op-group index plus per-sample parameters of *every* op);
* :func:`apply_dsa` applies them. Parameters drawn with ``batch_size=1`` broadcast to
  any batch (Siamese; the reference copies sample 0's parameters to the whole batch),
  parameters drawn with ``batch_size=len(x)`` are per sample (non-Siamese, the
  reference's ``seed=-1`` path used when training evaluation networks).

Ops (images NHWC float32, ``H`` = rows, ``W`` = columns; all are linear in ``x`` or
affine per sample, hence differentiable w.r.t. ``x`` to any order):

* ``scale``: ``theta = [[sx, 0, 0], [0, sy, 0]]``, ``sx, sy ~ U[1/r, r)``, r=1.2
  (``sx`` acts on the column coordinate), then bilinear ``grid_sample``.
* ``rotate``: ``theta = [[cos a, -sin a, 0], [sin a, cos a, 0]]``,
  ``a ~ U[-15, 15)`` degrees (a = 90 would be an anticlockwise quarter turn,
  ``np.rot90``), bilinear ``grid_sample``.
* ``flip``: horizontal flip (columns) where ``u < 0.5``.
* ``color``: brightness ``x + (u - 0.5) * 1.0``; saturation
  ``(x - mean_c) * (2u) + mean_c`` (``mean_c``: mean over channels per pixel);
  contrast ``(x - m) * (u + 0.5) + m`` (``m``: mean over H, W, C per sample), applied
  in that order with independent ``u ~ U[0, 1)``.
* ``crop``: integer translation ``(dr, dc)``, each uniform in ``[-s, s]`` with
  ``s = int(size * 0.125 + 0.5)``; ``out[i, j] = x[i + dr, j + dc]``, zero outside
  (the reference pads by one zero pixel and gathers with clamped indices, which is
  exactly this).
* ``cutout``: a ``ch x cw`` square, ``ch = int(H * 0.5 + 0.5)``, with "centre"
  ``oy ~ U{0, ..., H - (ch % 2)}``; rows ``[oy - ch // 2, oy - ch // 2 + ch)`` clipped
  to the image (columns alike) are multiplied by zero.

Affine sampling follows ``torch.nn.functional.affine_grid`` + ``grid_sample``
(bilinear, ``padding_mode='zeros'``). The reference pins torch 1.2.0, whose
(implicit) behaviour is ``align_corners=True``; that is the default here
(``DSAConfig.align_corners``). For square images both conventions give identical
results (only the aspect handling of rotations of non-square images differs).

Aug mode ``'S'`` (the reference default) applies ONE op-group per call, drawn
uniformly from the strategy's groups and shared by the whole batch; ``'M'`` applies
every group of the strategy in order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

DEFAULT_STRATEGY: str = "color_crop_cutout_flip_scale_rotate"
"""The DSA strategy of the reference for DC/DSA/DM/MTT distillation."""

DSA_GROUPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
"""Valid op-group names of a strategy string (``'_'``-separated)."""


@dataclasses.dataclass(frozen=True)
class DSAConfig:
    """Magnitudes of the DSA ops (reference ``ParamDiffAug``).

    Attributes:
        aug_mode: ``'S'`` one op-group per call (reference default) or ``'M'`` all
            groups of the strategy in sequence.
        prob_flip: probability of a horizontal flip.
        ratio_scale: ``r``; scale factors are uniform in ``[1/r, r)``.
        ratio_rotate: maximal rotation angle in degrees.
        ratio_crop_pad: maximal translation as a fraction of the image size.
        ratio_cutout: side of the cutout square as a fraction of the image size.
        brightness: brightness shift range (additive, ``(u - 0.5) * brightness``).
        saturation: saturation factor range (``u * saturation``).
        contrast: contrast factor offset (``u + contrast``).
        align_corners: affine grid convention (torch 1.2 behaviour = True).
    """

    aug_mode: str = "S"
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    align_corners: bool = True


@struct.dataclass
class DSAParams:
    """All random quantities of one DSA call (a pytree; ``P`` = sampled batch size).

    Array leaves:
        group: int32 scalar, index into ``groups`` of the op-group applied (mode 'S').
        scale: float32 [P, 2], ``(sx, sy)`` affine scale (columns, rows).
        angle: float32 [P], rotation angle in radians.
        flip: bool [P], horizontal flip.
        brightness: float32 [P], additive brightness shift.
        saturation: float32 [P], saturation factor.
        contrast: float32 [P], contrast factor.
        crop: int32 [P, 2], translation ``(dr, dc)`` in pixels (rows, columns).
        cutout: int32 [P, 2], cutout "centre" ``(oy, ox)`` in pixels.

    Static (hashable) fields: ``groups`` (strategy op-groups), ``image_hw``,
    ``cutout_hw`` (side lengths of the cutout square), ``aug_mode``,
    ``align_corners``.
    """

    group: jax.Array
    scale: jax.Array
    angle: jax.Array
    flip: jax.Array
    brightness: jax.Array
    saturation: jax.Array
    contrast: jax.Array
    crop: jax.Array
    cutout: jax.Array
    groups: tuple[str, ...] = struct.field(pytree_node=False)
    image_hw: tuple[int, int] = struct.field(pytree_node=False)
    cutout_hw: tuple[int, int] = struct.field(pytree_node=False)
    aug_mode: str = struct.field(pytree_node=False, default="S")
    align_corners: bool = struct.field(pytree_node=False, default=True)

    @property
    def batch_size(self) -> int:
        """``P``: 1 for Siamese (broadcast) parameters, else the batch size."""
        return int(self.angle.shape[0])


_PER_SAMPLE = ("scale", "angle", "flip", "brightness", "saturation", "contrast", "crop", "cutout")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a DSA strategy string into op-groups.

    Args:
        strategy: e.g. ``'color_crop_cutout_flip_scale_rotate'``; ``''``, ``'none'``
            and ``'None'`` mean no augmentation.

    Returns:
        Tuple of group names (empty for no augmentation).

    Raises:
        ValueError: on an unknown group name.
    """
    if strategy in ("", "none", "None"):
        return ()
    groups = tuple(strategy.split("_"))
    bad = [g for g in groups if g not in DSA_GROUPS]
    if bad:
        raise ValueError(f"unknown DSA op-group(s) {bad} in {strategy!r}; valid: {DSA_GROUPS}")
    return groups


def require_images(strategy: str, shape: tuple[int, ...]) -> None:
    """ValueError when ``strategy`` augments and the samples of ``shape`` are not images
    ``[H, W, C]`` (e.g. ``[T, H, W, C]`` clips: DSA has no per-frame definition here, and
    the paper uses no DSA on Kinetics, supp. 12.3).

    Raises:
      ValueError: a DSA strategy with op groups on non-image samples (the message says
        to set ``dsa_strategy='none'``).
    """
    if parse_strategy(strategy) and len(tuple(shape)) != 3:
        raise ValueError(f"dsa_strategy={strategy!r} augments images [H, W, C], but the samples are "
                         f"{tuple(shape)} clips; set dsa_strategy='none' (paper: no DSA on video)")


_N_UNIFORMS = 11  # per sample: sx, sy, angle, flip, b, s, c, dr, dc, oy, ox


def _uniform_int(u: jax.Array, lo: int, hi: int) -> jax.Array:
    """Map ``u ~ U[0, 1)`` to an int32 uniform on ``{lo, ..., hi - 1}``."""
    return jnp.clip(jnp.floor(u * (hi - lo)).astype(jnp.int32) + lo, lo, hi - 1)


def _shift_range(size: int, ratio: float) -> int:
    """Reference ``int(size * ratio + 0.5)``."""
    return int(size * ratio + 0.5)


def sample_dsa_params(
    key: jax.Array,
    batch_size: int,
    image_hw: tuple[int, int],
    strategy: str = DEFAULT_STRATEGY,
    cfg: DSAConfig = DSAConfig(),
) -> DSAParams:
    """Draw the random parameters of one DSA call.

    Args:
        key: PRNG key.
        batch_size: ``P``; 1 for Siamese parameters shared by any batch, else the
            number of images they will be applied to (one parameter set per image).
        image_hw: ``(H, W)`` of the images.
        strategy: '_'-separated op-groups (see :data:`DSA_GROUPS`).
        cfg: op magnitudes.

    Returns:
        :class:`DSAParams` with per-sample leaves of leading size ``batch_size``.
        Parameters of every op are drawn, whatever the strategy, so the pytree
        structure only depends on the static arguments.
    """
    if cfg.aug_mode not in ("S", "M"):
        raise ValueError(f"unknown DSA aug_mode {cfg.aug_mode!r}; valid: 'S', 'M'")
    groups = parse_strategy(strategy)
    h, w = (int(image_hw[0]), int(image_hw[1]))
    p = int(batch_size)
    if p < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return _sample_jit(key, p, (h, w), groups, cfg)


def _sample_impl(
    key: jax.Array, p: int, hw: tuple[int, int], groups: tuple[str, ...], cfg: DSAConfig
) -> DSAParams:
    """Jitted body of :func:`sample_dsa_params` (static: p, hw, groups, cfg)."""
    h, w = hw
    # One uniform draw for everything: every jax.random call is a separate threefry
    # kernel, and on CPU each costs ~0.3-0.5 s of compile time.
    u = jax.random.uniform(key, (p * _N_UNIFORMS + 1,), jnp.float32)
    group = _uniform_int(u[-1], 0, max(len(groups), 1))
    u = u[:-1].reshape(p, _N_UNIFORMS)
    r = cfg.ratio_scale
    scale = u[:, 0:2] * (r - 1.0 / r) + 1.0 / r
    angle = (u[:, 2] - 0.5) * 2.0 * cfg.ratio_rotate / 180.0 * np.pi
    flip = u[:, 3] < cfg.prob_flip
    brightness = (u[:, 4] - 0.5) * cfg.brightness
    saturation = u[:, 5] * cfg.saturation
    contrast = u[:, 6] + cfg.contrast
    sh, sw = _shift_range(h, cfg.ratio_crop_pad), _shift_range(w, cfg.ratio_crop_pad)
    crop = jnp.stack([_uniform_int(u[:, 7], -sh, sh + 1), _uniform_int(u[:, 8], -sw, sw + 1)], 1)
    ch, cw = _shift_range(h, cfg.ratio_cutout), _shift_range(w, cfg.ratio_cutout)
    cutout = jnp.stack(
        [_uniform_int(u[:, 9], 0, h + (1 - ch % 2)), _uniform_int(u[:, 10], 0, w + (1 - cw % 2))],
        axis=1,
    )
    return DSAParams(
        group=group,
        scale=scale.astype(jnp.float32),
        angle=angle.astype(jnp.float32),
        flip=flip,
        brightness=brightness.astype(jnp.float32),
        saturation=saturation.astype(jnp.float32),
        contrast=contrast.astype(jnp.float32),
        crop=crop,
        cutout=cutout,
        groups=groups,
        image_hw=(h, w),
        cutout_hw=(ch, cw),
        aug_mode=cfg.aug_mode,
        align_corners=bool(cfg.align_corners),
    )


_sample_jit = jax.jit(_sample_impl, static_argnums=(1, 2, 3, 4))


# ----------------------------------------------------------------------------------
# Per-image ops: img [H, W, C], p: dict of this sample's parameters (scalars / [2]).
# ----------------------------------------------------------------------------------


def _base_coords(n: int, align_corners: bool) -> jax.Array:
    """Normalised pixel-centre coordinates of ``torch.affine_grid`` along one axis."""
    if n == 1:
        return jnp.zeros((1,), jnp.float32)
    i = jnp.arange(n, dtype=jnp.float32)
    if align_corners:
        return 2.0 * i / (n - 1) - 1.0
    return (2.0 * i + 1.0) / n - 1.0


def affine_sample(img: jax.Array, theta: jax.Array, align_corners: bool = True) -> jax.Array:
    """``grid_sample(img, affine_grid(theta))``, bilinear with zero padding.

    Args:
        img: [H, W, C] image.
        theta: [2, 3] affine matrix acting on normalised ``(x=column, y=row, 1)``
            output coordinates and giving normalised input coordinates.
        align_corners: torch's ``align_corners`` (used for both grid and sampling).

    Returns:
        [H, W, C] resampled image (linear in ``img``).
    """
    h, w, _ = img.shape
    xs = _base_coords(w, align_corners)[None, :]
    ys = _base_coords(h, align_corners)[:, None]
    gx = theta[0, 0] * xs + theta[0, 1] * ys + theta[0, 2]
    gy = theta[1, 0] * xs + theta[1, 1] * ys + theta[1, 2]
    if align_corners:
        ix = (gx + 1.0) * 0.5 * (w - 1)
        iy = (gy + 1.0) * 0.5 * (h - 1)
    else:
        ix = ((gx + 1.0) * w - 1.0) * 0.5
        iy = ((gy + 1.0) * h - 1.0) * 0.5
    return bilinear_zeros(img, iy, ix)


def bilinear_zeros(img: jax.Array, iy: jax.Array, ix: jax.Array) -> jax.Array:
    """Bilinear sampling at pixel coordinates, taps outside the image read zero.

    Args:
        img: [H, W, C].
        iy, ix: [h, w] row / column pixel coordinates (0 = first pixel centre).

    Returns:
        [h, w, C] samples.
    """
    h, w, _ = img.shape
    y0f, x0f = jnp.floor(iy), jnp.floor(ix)
    wy1, wx1 = iy - y0f, ix - x0f
    wy0, wx0 = 1.0 - wy1, 1.0 - wx1
    y0, x0 = y0f.astype(jnp.int32), x0f.astype(jnp.int32)
    # four [h, w] gathers: the fastest forward on XLA:CPU (a single [h, w, 2, 2]
    # gather is ~10x slower there); the backward is four scatter-adds
    out = jnp.zeros(iy.shape + img.shape[-1:], img.dtype)
    for yy, wy in ((y0, wy0), (y0 + 1, wy1)):
        for xx, wx in ((x0, wx0), (x0 + 1, wx1)):
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            wgt = jnp.where(valid, wy * wx, 0.0).astype(img.dtype)
            tap = img[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
            out = out + wgt[..., None] * tap
    return out


def _op_scale(img: jax.Array, p: dict, align_corners: bool) -> jax.Array:
    zero = jnp.zeros((), jnp.float32)
    theta = jnp.array([[p["scale"][0], zero, zero], [zero, p["scale"][1], zero]])
    return affine_sample(img, theta, align_corners)


def _op_rotate(img: jax.Array, p: dict, align_corners: bool) -> jax.Array:
    c, s = jnp.cos(p["angle"]), jnp.sin(p["angle"])
    zero = jnp.zeros((), jnp.float32)
    theta = jnp.array([[c, -s, zero], [s, c, zero]])
    return affine_sample(img, theta, align_corners)


def _op_flip(img: jax.Array, p: dict) -> jax.Array:
    return jnp.where(p["flip"], img[:, ::-1, :], img)


def _channel_mean(img: jax.Array) -> jax.Array:
    """[..., C] -> [..., 1] mean over channels (explicit slice sum: XLA:CPU reduces a
    size-3 minor axis ~10x slower than this)."""
    c = img.shape[-1]
    total = img[..., 0:1]
    for i in range(1, c):
        total = total + img[..., i : i + 1]
    return total / c


def _op_color(img: jax.Array, p: dict) -> jax.Array:
    img = img + p["brightness"]
    m = _channel_mean(img)
    img = (img - m) * p["saturation"] + m
    m = jnp.mean(img.reshape(-1))
    return (img - m) * p["contrast"] + m


def _op_crop(img: jax.Array, p: dict) -> jax.Array:
    h, w, _ = img.shape
    rows = jnp.arange(h) + p["crop"][0]
    cols = jnp.arange(w) + p["crop"][1]
    vr = (rows >= 0) & (rows < h)
    vc = (cols >= 0) & (cols < w)
    out = img[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
    return jnp.where((vr[:, None] & vc[None, :])[..., None], out, jnp.zeros((), img.dtype))


def _op_cutout(img: jax.Array, p: dict, cutout_hw: tuple[int, int]) -> jax.Array:
    h, w, _ = img.shape
    ch, cw = cutout_hw
    r0 = p["cutout"][0] - ch // 2
    c0 = p["cutout"][1] - cw // 2
    rows = jnp.arange(h)
    cols = jnp.arange(w)
    in_r = (rows >= r0) & (rows < r0 + ch)
    in_c = (cols >= c0) & (cols < c0 + cw)
    keep = ~(in_r[:, None] & in_c[None, :])
    return img * keep[..., None].astype(img.dtype)


def _group_fn(group: str, params: DSAParams) -> Callable[[jax.Array, dict], jax.Array]:
    """Per-image function of one op-group."""
    if group == "scale":
        return lambda img, p: _op_scale(img, p, params.align_corners)
    if group == "rotate":
        return lambda img, p: _op_rotate(img, p, params.align_corners)
    if group == "flip":
        return _op_flip
    if group == "color":
        return _op_color
    if group == "crop":
        return _op_crop
    if group == "cutout":
        return lambda img, p: _op_cutout(img, p, params.cutout_hw)
    raise ValueError(f"unknown DSA op-group {group!r}; valid: {DSA_GROUPS}")


def apply_dsa(x: jax.Array, params: DSAParams) -> jax.Array:
    """Apply sampled DSA parameters to a batch.

    Args:
        x: [N, H, W, C] float images, ``(H, W) == params.image_hw``.
        params: from :func:`sample_dsa_params` with ``batch_size`` 1 (Siamese: the
            same transform for every image of ``x``) or ``N`` (one per image).

    Returns:
        [N, H, W, C] augmented images, differentiable w.r.t. ``x``.

    Raises:
        ValueError: on a shape mismatch.
    """
    if x.ndim != 4:
        raise ValueError(f"apply_dsa expects NHWC images, got shape {x.shape}")
    n, h, w, _ = x.shape
    if (h, w) != tuple(params.image_hw):
        raise ValueError(f"images are {(h, w)} but params were sampled for {params.image_hw}")
    if not params.groups:
        return x
    pb = params.batch_size
    if pb not in (1, n):
        raise ValueError(f"params batch size {pb} must be 1 (Siamese) or len(x) = {n}")
    return _apply_jit(x, params)


@jax.jit
def _apply_jit(x: jax.Array, params: DSAParams) -> jax.Array:
    """Jitted body of :func:`apply_dsa` (shapes already validated)."""
    # Siamese parameters are broadcast to the batch and applied per sample: the
    # results are identical, and unbatched gather indices under vmap make XLA:CPU pick
    # a transposed layout for the whole switch (~5x slower, measured).
    n = x.shape[0]
    per_sample = {
        k: jnp.broadcast_to(getattr(params, k), (n,) + getattr(params, k).shape[1:])
        for k in _PER_SAMPLE
    }

    def batched(group: str) -> Callable[[jax.Array], jax.Array]:
        fn = _group_fn(group, params)
        return lambda xb: jax.vmap(fn)(xb, per_sample)

    if params.aug_mode == "M":
        for g in params.groups:
            x = batched(g)(x)
        return x
    branches = [batched(g) for g in params.groups]
    if len(branches) == 1:
        return branches[0](x)
    return lax.switch(params.group, branches, x)


def dsa(
    key: jax.Array,
    x: jax.Array,
    strategy: str = DEFAULT_STRATEGY,
    siamese: bool = False,
    cfg: DSAConfig = DSAConfig(),
) -> jax.Array:
    """Sample and apply DSA in one call.

    Args:
        key: PRNG key.
        x: [N, H, W, C] images.
        strategy: op-group string.
        siamese: if True every image gets the same transform (parameters drawn with
            batch size 1); else one draw per image (the op-group is shared by the
            batch either way, as in the reference).
        cfg: op magnitudes.

    Returns:
        [N, H, W, C] augmented images.
    """
    p = sample_dsa_params(key, 1 if siamese else x.shape[0], x.shape[1:3], strategy, cfg)
    return apply_dsa(x, p)
