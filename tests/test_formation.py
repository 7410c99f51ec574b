"""Multi-formation (gold.distill.formation) against NumPy references of the IDC code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gold.distill import common
from gold.distill.formation import MultiFormation, cell_sizes, nearest_index


def torch_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of PyTorch's bilinear resize, align_corners=False:
    ``src = (dst + 0.5) * n_in / n_out - 0.5`` clamped at 0, neighbours floor / +1."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[d, i0] += 1 - lam
        m[d, i1] += lam
    return m


def numpy_decode(x, factor, pad_value=0.5):
    """Reference decode_zoom of one class, NHWC: pad, crop grid, bilinear upsample,
    crop-major concatenation."""
    n, h, w, c = x.shape
    s = math.ceil(h / factor)
    p = s * factor - h
    xp = np.pad(x, ((0, 0), (0, p), (0, p), (0, 0)), constant_values=pad_value)
    a = torch_bilinear_matrix(s, h)
    out = []
    for i in range(factor):
        for j in range(factor):
            crop = xp[:, i * s:(i + 1) * s, j * s:(j + 1) * s]
            out.append(np.einsum("Hh,nhwc,Ww->nHWc", a, crop, a))
    return np.concatenate(out)


@pytest.mark.parametrize("factor,size", [(2, 32), (3, 32), (2, 28), (3, 8)])
def test_decode_matches_numpy_reference(factor, size):
    k, ipc, c = 2, 2, 3
    x = np.random.default_rng(0).uniform(size=(k * ipc, size, size, c)).astype(np.float32)
    mf = MultiFormation(k, ipc, (size, size, c), factor)
    out = np.asarray(mf.decode({"x": jnp.asarray(x)}))
    assert out.shape == (k * ipc * factor ** 2, size, size, c) and mf.per_class == ipc * factor ** 2
    want = np.concatenate([numpy_decode(x[cl * ipc:(cl + 1) * ipc], factor) for cl in range(k)])
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_f3_padding_uses_half_gray_in_pixel_units_and_normalises():
    """32 -> 33 padding with 0.5: the bottom-right crop of an all-zero image is 0 in its
    top-left and 0.5-mixed at its far edge; decode returns (x - mean) / std."""
    mean, std = (0.2,), (0.5,)
    mf = MultiFormation(1, 1, (32, 32, 1), 3, mean=mean, std=std)
    out = np.asarray(mf.decode({"x": jnp.zeros((1, 32, 32, 1))}))
    want = (numpy_decode(np.zeros((1, 32, 32, 1)), 3) - 0.2) / 0.5
    np.testing.assert_allclose(out, want, atol=1e-5)
    last = want[8, :, :, 0] * 0.5 + 0.2  # crop (2, 2) in pixel units
    assert last[0, 0] == pytest.approx(0.0) and last[-1, -1] == pytest.approx(0.5)


def test_factor_one_is_the_identity():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8, 8, 1)), jnp.float32)
    np.testing.assert_array_equal(MultiFormation(3, 1, (8, 8, 1), 1).decode({"x": x}), x)


@pytest.mark.parametrize("factor", [2, 3])
def test_decode_gradient(factor):
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 8, 8, 1)), jnp.float32)
    mf = MultiFormation(2, 1, (8, 8, 1), factor, mean=(0.3,), std=(0.4,))
    decode = jax.jit(lambda v: mf.decode({"x": v}))
    check_grads(decode, (x,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    # linear map: the VJP of ones is the column sums of the NumPy decode matrix
    g = jax.jit(jax.grad(lambda v: jnp.sum(decode(v))))(x)
    basis = np.eye(64).reshape(64, 8, 8, 1)
    col = numpy_decode(basis, factor, pad_value=0.0).reshape(factor ** 2, 64, -1).sum(axis=(0, 2)) / 0.4
    np.testing.assert_allclose(np.asarray(g[0, ..., 0]).ravel(), col, rtol=1e-4)


def test_cells_and_nearest_indices():
    assert cell_sizes(32, 3) == (11, 11, 10) and cell_sizes(28, 2) == (14, 14)
    np.testing.assert_array_equal(nearest_index(32, 11), np.floor(np.arange(11) * 32 / 11))


def test_real_init_tiles_distinct_downscaled_real_images():
    """Cell k of stored image n of class c is real image k*ipc + n of the class's draw,
    shrunk by 'nearest'; stored values are [0, 1] pixels."""
    k, ipc, f, h = 2, 2, 2, 8
    rng = np.random.default_rng(3)
    x_real = rng.uniform(size=(40, h, h, 1)).astype(np.float32)
    y_real = np.repeat(np.arange(k), 20)
    real = common.make_real_data((x_real - 0.1) / 0.5, y_real, k, 8)
    mf = MultiFormation(k, ipc, (h, h, 1), f, mean=(0.1,), std=(0.5,))
    key = jax.random.key(0)
    stored = np.asarray(jax.jit(mf.init, static_argnums=2)(key, real, "real")["x"])
    drawn = np.asarray(jax.jit(common.init_real_images, static_argnums=2)(key, real, ipc * f * f)) * 0.5 + 0.1
    idx = nearest_index(h, h // f)
    for c in range(k):
        for n in range(ipc):
            for cell in range(f * f):
                i, j = divmod(cell, f)
                src = drawn[c * ipc * f * f + cell * ipc + n][idx][:, idx]
                got = stored[c * ipc + n, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4]
                np.testing.assert_allclose(got, src, atol=1e-6)
    noise = np.asarray(jax.jit(mf.init, static_argnums=2)(key, real, "noise")["x"])
    assert noise.shape == stored.shape and noise.min() >= 0 and noise.max() <= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        MultiFormation(2, 1, (8, 6, 1), 2)
    with pytest.raises(ValueError, match="factor"):
        MultiFormation(2, 1, (8, 8, 1), 0)
    with pytest.raises(ValueError, match="mean and std"):
        MultiFormation(2, 1, (8, 8, 1), 2, mean=(0.1,))
