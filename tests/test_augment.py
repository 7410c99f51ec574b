"""Tests of gold.augment: DSA (Siamese sampling / application), DC MNIST augmentation,
CutMix. Reference semantics re-implemented in NumPy / scipy where stated."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from gold.augment import (
    DEFAULT_STRATEGY,
    DSA_GROUPS,
    DSAConfig,
    apply_dsa,
    cutmix,
    dc_augment,
    dsa,
    get_augment,
    pad_crop,
    parse_strategy,
    resize_crop,
    rotate_crop,
    sample_dsa_params,
)

HW = (12, 12)

# The op-group index is a traced leaf, so one compilation serves every group.
_apply = apply_dsa  # jitted internally (one compile per shape / static fields)
_dc = dc_augment  # jitted internally
_dsa = jax.jit(dsa, static_argnames=("strategy", "siamese", "cfg"))


def _images(n: int, hw: tuple[int, int] = HW, c: int = 3, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *hw, c)).astype(np.float32))


def _params(key: int, batch: int, group: str, hw: tuple[int, int] = HW, cfg=DSAConfig()):
    """Parameters with the op-group forced to ``group`` (strategy = all groups)."""
    p = sample_dsa_params(jax.random.key(key), batch, hw, DEFAULT_STRATEGY, cfg)
    return p.replace(group=jnp.int32(p.groups.index(group)))


def _set(p, **kw):
    """Replace per-sample leaves with given values (broadcast to the param batch)."""
    out = {}
    for k, v in kw.items():
        old = getattr(p, k)
        out[k] = jnp.broadcast_to(jnp.asarray(v, old.dtype), old.shape)
    return p.replace(**out)


# --------------------------------------------------------------------------- DSA


def test_parse_strategy() -> None:
    assert parse_strategy(DEFAULT_STRATEGY) == DSA_GROUPS
    assert parse_strategy("none") == ()
    with pytest.raises(ValueError, match="valid"):
        parse_strategy("color_blur")
    x = _images(2)
    assert np.array_equal(dsa(jax.random.key(0), x, "none"), x)


@pytest.mark.parametrize("group", DSA_GROUPS)
def test_siamese_broadcast_identical(group: str) -> None:
    """One parameter draw (batch 1) gives the same transform to a batch of 5 and a
    batch of 2, and identical images inside a batch stay identical."""
    x5 = _images(5)
    x2 = x5[:2]
    p = _params(3, 1, group)
    y5 = np.asarray(_apply(x5, p))
    y2 = np.asarray(_apply(x2, p))
    np.testing.assert_array_equal(y5[:2], y2)
    tiled = jnp.tile(x5[:1], (4, 1, 1, 1))
    yt = np.asarray(_apply(tiled, p))
    for i in range(1, 4):
        np.testing.assert_array_equal(yt[i], yt[0])


def test_per_sample_params_differ_and_keys_differ() -> None:
    x = jnp.tile(_images(1), (6, 1, 1, 1))
    for group in ("scale", "rotate", "color", "crop", "cutout"):
        p = _params(1, 6, group)
        y = np.asarray(_apply(x, p))
        distinct = {y[i].tobytes() for i in range(6)}
        assert len(distinct) >= 4, group
        q = _params(2, 6, group)
        assert not np.allclose(y, np.asarray(_apply(x, q))), group
    with pytest.raises(ValueError, match="Siamese"):
        _apply(x, _params(1, 4, "flip"))
    with pytest.raises(ValueError, match="sampled for"):
        _apply(_images(2, (10, 10)), _params(1, 1, "flip"))


def test_dsa_convenience_keys() -> None:
    x = _images(5)
    outs = [np.asarray(dsa(jax.random.key(k), x, DEFAULT_STRATEGY, siamese=True)) for k in range(6)]
    assert sum(not np.allclose(outs[0], o) for o in outs[1:]) >= 4
    y = np.asarray(dsa(jax.random.key(0), x, DEFAULT_STRATEGY, siamese=False))
    assert y.shape == x.shape and np.isfinite(y).all()


@pytest.mark.parametrize("siamese", [True, False])
def test_gradients_flow(siamese: bool) -> None:
    """d/dx of sum(aug(x)) and of a weighted sum is finite and non-zero for every
    op-group; grad-of-grad (as in gradient matching) is finite."""
    x = _images(3)
    w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))

    @jax.jit
    def grads(z: jax.Array, p) -> tuple[jax.Array, jax.Array]:
        g1 = jax.grad(lambda u: jnp.sum(apply_dsa(u, p)))(z)
        g2 = jax.grad(
            lambda v: jnp.sum(jax.grad(lambda u: jnp.sum(jnp.tanh(apply_dsa(u, p) * w)))(v) ** 2)
        )(z)
        return g1, g2

    for group in DSA_GROUPS:
        p = _params(5, 1 if siamese else 3, group)
        for g in grads(x, p):
            g = np.asarray(g)
            assert np.isfinite(g).all() and np.abs(g).sum() > 0, group


def test_flip_matches_numpy() -> None:
    x = _images(6)
    p = _params(0, 6, "flip")
    flips = np.array([True, False, True, True, False, False])
    p = p.replace(flip=jnp.asarray(flips))
    expect = np.where(flips[:, None, None, None], np.asarray(x)[:, :, ::-1], np.asarray(x))
    np.testing.assert_array_equal(np.asarray(_apply(x, p)), expect)


def _np_reference_crop(x: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """The reference rand_crop in NumPy (NCHW logic on NHWC): pad by one zero pixel,
    gather with clamped indices."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    b, gi, gj = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    gi = np.clip(gi + tx[:, None, None] + 1, 0, h + 1)
    gj = np.clip(gj + ty[:, None, None] + 1, 0, w + 1)
    return xp[b, gi, gj]


def test_crop_matches_reference_numpy() -> None:
    x = _images(5, (12, 10))
    p = sample_dsa_params(jax.random.key(7), 5, (12, 10), "crop")
    shifts = np.array([[-2, 1], [0, 0], [2, -1], [1, 2], [-1, -2]], np.int32)
    p = p.replace(crop=jnp.asarray(shifts))
    expect = _np_reference_crop(np.asarray(x), shifts[:, 0], shifts[:, 1])
    np.testing.assert_array_equal(np.asarray(_apply(x, p)), expect)
    # sampled shifts cover exactly [-int(H*0.125+0.5), +...] = [-2, 2] (H=12), [-1, 1] (W=10)
    q = sample_dsa_params(jax.random.key(8), 4000, (12, 10), "crop")
    c = np.asarray(q.crop)
    assert set(np.unique(c[:, 0])) == {-2, -1, 0, 1, 2}
    assert set(np.unique(c[:, 1])) == {-1, 0, 1}


def test_cutout_zeros_expected_square() -> None:
    x = _images(3, (12, 12)) + 10.0  # no zeros in the input
    p = sample_dsa_params(jax.random.key(0), 3, (12, 12), "cutout")
    assert p.cutout_hw == (6, 6)
    centres = np.array([[5, 7], [0, 0], [12, 11]], np.int32)
    p = p.replace(cutout=jnp.asarray(centres))
    y = np.asarray(_apply(x, p))
    for i, (oy, ox) in enumerate(centres):
        mask = np.zeros((12, 12), bool)
        mask[max(oy - 3, 0) : max(oy + 3, 0), max(ox - 3, 0) : max(ox + 3, 0)] = True
        assert np.all(y[i][mask] == 0.0)
        np.testing.assert_array_equal(y[i][~mask], np.asarray(x)[i][~mask])
    # odd cutout size (H=10 -> int(5.5)=5): offsets in [0, H-1]; square rows [oy-2, oy+3)
    x = _images(1, (10, 10)) + 10.0
    p = sample_dsa_params(jax.random.key(0), 1, (10, 10), "cutout")
    assert p.cutout_hw == (5, 5)
    p = p.replace(cutout=jnp.asarray([[4, 9]], jnp.int32))
    y = np.asarray(_apply(x, p))[0, :, :, 0]
    assert np.all(y[2:7, 7:10] == 0) and np.count_nonzero(y == 0) == 15
    q = sample_dsa_params(jax.random.key(1), 3000, (10, 12), "cutout")
    assert np.asarray(q.cutout)[:, 0].max() == 9 and np.asarray(q.cutout)[:, 1].max() == 12


def test_identity_transforms() -> None:
    x = _images(4)
    for ac in (True, False):
        cfg = DSAConfig(align_corners=ac)
        p = _set(_params(0, 4, "rotate", HW, cfg), angle=0.0)
        np.testing.assert_allclose(np.asarray(_apply(x, p)), np.asarray(x), atol=1e-5)
        p = _set(_params(0, 4, "scale", HW, cfg), scale=1.0)
        np.testing.assert_allclose(np.asarray(_apply(x, p)), np.asarray(x), atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_rotate_90_matches_rot90(align_corners: bool) -> None:
    """theta = [[cos, -sin], [sin, cos]] with a = +90 deg is an anticlockwise quarter
    turn (np.rot90 over (H, W))."""
    x = _images(2, (10, 10))
    cfg = DSAConfig(align_corners=align_corners)
    p = _set(_params(0, 1, "rotate", (10, 10), cfg), angle=np.pi / 2)
    y = np.asarray(_apply(x, p))
    expect = np.rot90(np.asarray(x), k=1, axes=(1, 2))
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], expect[:, 1:-1, 1:-1], atol=1e-5)
    np.testing.assert_allclose(y, expect, atol=1e-4)


def test_scale_matches_numpy_bilinear() -> None:
    """Scale 0.5 (align_corners=True) samples the input at (i - c) * 0.5 + c."""
    x = _images(1, (9, 9))
    p = _set(_params(0, 1, "scale", (9, 9)), scale=0.5)
    y = np.asarray(_apply(x, p))[0]
    c = 4.0
    coords = (np.arange(9) - c) * 0.5 + c  # integer or half-integer
    xn = np.asarray(x)[0]

    def interp1(a: np.ndarray, axis: int) -> np.ndarray:
        lo = np.floor(coords).astype(int)
        hi = np.minimum(lo + 1, 8)
        f = (coords - lo).reshape([-1 if d == axis else 1 for d in range(3)])
        return np.take(a, lo, axis) * (1 - f) + np.take(a, hi, axis) * f

    np.testing.assert_allclose(y, interp1(interp1(xn, 0), 1), atol=1e-5)


def test_color_formulas_match_numpy() -> None:
    x = _images(4)
    p = _params(0, 4, "color")
    b, s, c = np.asarray(p.brightness), np.asarray(p.saturation), np.asarray(p.contrast)
    xn = np.asarray(x).astype(np.float64)
    e = xn + b[:, None, None, None]
    m = e.mean(axis=3, keepdims=True)
    e = (e - m) * s[:, None, None, None] + m
    m = e.mean(axis=(1, 2, 3), keepdims=True)
    e = (e - m) * c[:, None, None, None] + m
    np.testing.assert_allclose(np.asarray(_apply(x, p)), e, atol=1e-5)
    # magnitudes: brightness in [-0.5, 0.5), saturation [0, 2), contrast [0.5, 1.5)
    q = sample_dsa_params(jax.random.key(1), 2000, HW)
    assert -0.5 <= float(q.brightness.min()) and float(q.brightness.max()) < 0.5
    assert 0.0 <= float(q.saturation.min()) and float(q.saturation.max()) < 2.0
    assert 0.5 <= float(q.contrast.min()) and float(q.contrast.max()) < 1.5
    assert 1 / 1.2 - 1e-6 <= float(q.scale.min()) and float(q.scale.max()) < 1.2
    assert float(jnp.abs(q.angle).max()) <= 15 / 180 * np.pi + 1e-6
    assert 0.4 < float(q.flip.mean()) < 0.6


def test_group_choice_uniform() -> None:
    keys = jax.random.split(jax.random.key(0), 6000)
    groups = jax.jit(jax.vmap(lambda k: sample_dsa_params(k, 1, HW).group))(keys)
    counts = np.bincount(np.asarray(groups), minlength=6)
    assert counts.shape == (6,)
    expect = 1000.0
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 25.0, counts  # 5 dof, p ~ 1e-4


def test_mode_m_applies_all_groups() -> None:
    x = _images(2)
    cfg = DSAConfig(aug_mode="M")
    p = sample_dsa_params(jax.random.key(0), 2, HW, "flip_crop", cfg)
    p = p.replace(flip=jnp.array([True, True]), crop=jnp.array([[1, 0], [1, 0]], jnp.int32))
    expect = _np_reference_crop(np.asarray(x)[:, :, ::-1], np.array([1, 1]), np.array([0, 0]))
    np.testing.assert_array_equal(np.asarray(_apply(x, p)), expect)


def test_jit_matches_eager_and_speed() -> None:
    x = _images(4)
    key = jax.random.key(4)
    np.testing.assert_allclose(
        np.asarray(_dsa(key, x, siamese=True)), np.asarray(dsa(key, x, siamese=True)), atol=1e-6
    )
    # speed (printed, not asserted): 256 x 32 x 32 x 3 under jit
    xb = _images(256, (32, 32))
    g = jax.jit(apply_dsa)
    for bs in (1, 256):
        times = []
        for group in DSA_GROUPS:
            p = _params(0, bs, group, (32, 32))
            g(xb, p).block_until_ready()
            t0 = time.perf_counter()
            for _ in range(5):
                g(xb, p).block_until_ready()
            times.append((time.perf_counter() - t0) / 5 * 1e3)
        print(
            f"\napply_dsa 256x32x32x3 params batch {bs}: "
            + ", ".join(f"{gname} {t:.2f} ms" for gname, t in zip(DSA_GROUPS, times))
        )


# --------------------------------------------------------------------------- DC


def test_dc_rotate_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(28, 28, 1)).astype(np.float32)
    cval = 0.25
    rot = jax.jit(lambda im, d, cv: rotate_crop(im, d, 45, cv))
    for deg in (-45, -20, -7, 0, 3, 44):
        r = ndi.rotate(img.astype(np.float64), deg, axes=(0, 1), reshape=True, order=3,
                       mode="constant", cval=cval)
        a, b = int((r.shape[0] - 28) / 2), int((r.shape[1] - 28) / 2)
        expect = r[a : a + 28, b : b + 28]
        got = np.asarray(rot(jnp.asarray(img), jnp.int32(deg), jnp.float32(cval)))
        np.testing.assert_allclose(got, expect, atol=5e-5)


def _np_reference_scale(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reference scalefun on one HWC image: torch 'nearest' interpolate + canvas."""
    hh, ww, c = img.shape
    # torch: src = min(floor(dst * (float)in / out), in - 1), in float32
    ri = np.floor(np.arange(h, dtype=np.float32) * np.float32(hh / h)).astype(int)
    ci = np.floor(np.arange(w, dtype=np.float32) * np.float32(ww / w)).astype(int)
    ri, ci = np.minimum(ri, hh - 1), np.minimum(ci, ww - 1)
    tmp = img[ri][:, ci]
    m = max(h, w, hh, ww)
    canvas = np.zeros((m, m, c), img.dtype)
    r, cc = int((m - h) / 2), int((m - w) / 2)
    canvas[r : r + h, cc : cc + w] = tmp
    r, cc = int((m - hh) / 2), int((m - ww) / 2)
    return canvas[r : r + hh, cc : cc + ww]


def test_dc_scale_matches_reference_numpy() -> None:
    img = np.asarray(_images(1, (28, 28), 1))[0]
    rs = jax.jit(resize_crop)
    for h, w in ((22, 22), (33, 33), (23, 30), (31, 25), (28, 28), (29, 22)):
        got = np.asarray(rs(jnp.asarray(img), jnp.int32(h), jnp.int32(w)))
        np.testing.assert_array_equal(got, _np_reference_scale(img, h, w))


def test_dc_crop_semantics() -> None:
    img = np.asarray(_images(1, (8, 8), 2))[0]
    fill = np.array([0.5, -0.5], np.float32)
    pc = jax.jit(lambda im, r, c, f: pad_crop(im, r, c, 4, f))
    for r, c in ((0, 0), (7, 3), (4, 4), (2, 6)):
        padded = np.empty((16, 16, 2), np.float32)
        padded[:] = fill
        padded[4:12, 4:12] = img
        got = np.asarray(pc(jnp.asarray(img), jnp.int32(r), jnp.int32(c), jnp.asarray(fill)))
        np.testing.assert_array_equal(got, padded[r : r + 8, c : c + 8])
    # through dc_augment: every output is one of the 8x8 translations, fill = batch channel mean
    x = _images(40, (8, 8), 2)
    y = np.asarray(_dc(jax.random.key(0), x, "crop"))
    mean = np.asarray(x).mean(axis=(0, 1, 2))
    seen = set()
    for i in range(40):
        padded = np.empty((16, 16, 2), np.float32)
        padded[:] = mean
        padded[4:12, 4:12] = np.asarray(x)[i]
        hits = [(r, c) for r in range(8) for c in range(8)
                if np.allclose(padded[r : r + 8, c : c + 8], y[i], atol=1e-6)]
        assert hits, i
        seen.add(hits[0])
    assert len(seen) > 20


def test_dc_augment_per_sample_choice_and_grad() -> None:
    # one op per sample: on all-zero images (fill = mean = 0) crop outputs are exactly
    # zero and noise outputs are not
    x = jnp.zeros((400, 10, 10, 1), jnp.float32)
    y = np.asarray(_dc(jax.random.key(1), x, "crop_noise", noise=0.5))
    noisy = np.abs(y).reshape(400, -1).max(axis=1) > 0
    assert 0.4 < noisy.mean() < 0.6
    assert 0.45 < y[noisy].std() < 0.55  # N(0, noise^2) with noise = 0.5
    # default MNIST strategy: jit, shape, per-sample variety, finite gradients
    xm = _images(16, (28, 28), 1)
    out = np.asarray(_dc(jax.random.key(2), xm))
    assert out.shape == xm.shape and np.isfinite(out).all()
    assert not np.allclose(out, np.asarray(xm))
    np.testing.assert_array_equal(out, np.asarray(_dc(jax.random.key(2), xm)))
    assert not np.allclose(out, np.asarray(_dc(jax.random.key(3), xm)))
    # gradient (rotate is a fixed linear map too; left out here only for compile time)
    g = jax.jit(jax.grad(lambda z: jnp.sum(_dc(jax.random.key(3), z, "crop_scale_noise") ** 2)))(xm)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
    with pytest.raises(ValueError, match="valid"):
        dc_augment(jax.random.key(0), xm, "crop_flip")


# --------------------------------------------------------------------------- CutMix


def test_cutmix() -> None:
    n, k = 8, 8
    x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, 16, 16, 3))
    y = jax.nn.one_hot(jnp.arange(n), k)
    mixed_any = False
    for s in range(20):
        xm, ym = cutmix(jax.random.key(s), x, y, beta=1.0, prob=1.0)
        xm, ym = np.asarray(xm), np.asarray(ym)
        np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
        for i in range(n):
            vals, cnt = np.unique(xm[i, :, :, 0], return_counts=True)
            frac = dict(zip(vals.astype(int), cnt / 256.0))
            # label weight of every class = its pixel fraction
            for j in range(k):
                assert abs(ym[i, j] - frac.get(j, 0.0)) < 1e-6
            mixed_any |= len(vals) > 1
    assert mixed_any
    xs, ys = cutmix(jax.random.key(0), x, y, prob=0.0)
    np.testing.assert_array_equal(np.asarray(xs), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(y))
    # general beta (gamma-based Beta sampler) under an outer jit
    xj, yj = jax.jit(lambda k: cutmix(k, x, y, beta=0.5, prob=1.0))(jax.random.key(5))
    np.testing.assert_allclose(np.asarray(yj).sum(1), 1.0, atol=1e-6)
    assert xj.shape == x.shape


# --------------------------------------------------------------------------- factory


def test_get_augment_names_and_vmap() -> None:
    assert get_augment("none") is None and get_augment("dsa", strategy="none") is None
    with pytest.raises(ValueError, match="valid"):
        get_augment("autoaug")
    x = _images(4)
    keys = jax.random.split(jax.random.key(0), 2)
    fn = get_augment("dsa")
    # vmapped over K networks (as fit_many does): the op-group index becomes batched
    yk = np.asarray(jax.vmap(lambda k: fn(k, x))(keys))
    for i in range(2):
        np.testing.assert_allclose(yk[i], np.asarray(fn(keys[i], x)), atol=1e-5)
    xm = _images(3, (28, 28), 1)
    for name in ("dc_mnist", "dc_bn"):
        y = np.asarray(get_augment(name)(jax.random.key(1), xm))
        assert y.shape == xm.shape and np.isfinite(y).all() and not np.allclose(y, np.asarray(xm))
