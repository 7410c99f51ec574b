"""normalize / denormalize and ZCA whitening (kornia / MTT recipe)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.data import ZCA, apply_zca, denormalize, fit_zca, invert_zca, normalize


def test_normalize_uint8_and_float_inputs_agree_and_invert():
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    a = normalize(x8, mean, std)
    b = normalize(x8.astype(np.float32) / 255, mean, std)
    assert a.dtype == np.float32 and a.shape == x8.shape
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a[..., 1], (x8[..., 1] / 255 - 0.4822) / 0.1994, atol=1e-5)
    np.testing.assert_allclose(denormalize(a, mean, std), x8 / 255, atol=1e-6)
    j = jax.jit(lambda x: normalize(x, mean, std))(jnp.asarray(x8))  # works on JAX arrays in jit
    assert isinstance(j, jax.Array)
    np.testing.assert_allclose(np.asarray(j), a, atol=1e-6)


def correlated(n, seed):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((48, 48)) * 0.3 + np.eye(48)
    return (rng.standard_normal((n, 48)) @ mix + 0.5).reshape(n, 4, 4, 3).astype(np.float32)


def kornia_reference(x, eps):
    """kornia.enhance.zca_mean, written out: unbiased cov, SVD, U diag(1/sqrt(S+eps)) U^T."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(0, keepdims=True)
    cov = (flat - mean).T @ (flat - mean) / (len(x) - 1)
    u, s, _ = np.linalg.svd(cov)
    return u @ (u.T / np.sqrt(s + eps)[:, None]), mean


def test_zca_matches_kornia_and_whitens_to_identity():
    x = correlated(3000, 0)
    zca = fit_zca(x, reg=1e-6)
    white = apply_zca(zca, x)
    assert white.shape == x.shape and white.dtype == np.float32
    flat = white.reshape(len(x), -1).astype(np.float64)
    cov = np.cov(flat, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(48), atol=2e-3)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
    t, _ = kornia_reference(x, 0.1)
    zca01 = fit_zca(x, reg=0.1)
    np.testing.assert_allclose(zca01.whiten, t, rtol=1e-4, atol=1e-5)
    assert zca01.reg == 0.1


def test_zca_on_test_data_uses_training_statistics_and_inverts():
    train, test = correlated(2000, 1), correlated(500, 2) + 0.25
    zca = fit_zca(train, reg=0.1)
    expected = (test.reshape(500, -1) - train.reshape(2000, -1).mean(0)) @ zca.whiten
    np.testing.assert_allclose(apply_zca(zca, test).reshape(500, -1), expected, rtol=1e-4, atol=1e-4)
    assert abs(apply_zca(zca, test).mean()) > 0.01  # the test shift is not re-centred away
    np.testing.assert_allclose(invert_zca(zca, apply_zca(zca, test)), test, atol=1e-4)


def test_zca_is_a_pytree_usable_under_jit():
    x = correlated(200, 3)
    zca = fit_zca(x)
    leaves = jax.tree.leaves(zca)
    assert len(leaves) == 3 and isinstance(zca, ZCA)
    out = jax.jit(apply_zca)(zca, jnp.asarray(x[:7]))
    np.testing.assert_allclose(np.asarray(out), apply_zca(zca, x[:7]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        fit_zca(x[:1])
