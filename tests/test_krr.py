"""gold.distill.krr: kernel ridge regression against NumPy, losses by hand, bad kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gold.distill import krr


def random_psd(rng, s, rank=None):
    a = rng.normal(size=(s, rank or 2 * s))
    return a @ a.T


def numpy_krr(k_ts, k_ss, y_s, reg):
    s = k_ss.shape[0]
    lam = reg * np.trace(k_ss) / s
    return k_ts @ np.linalg.solve(k_ss + lam * np.eye(s), y_s)


@pytest.mark.parametrize("reg", [1e-6, 1e-2, 1.0])
def test_krr_predict_matches_numpy_with_the_relative_regulariser(reg):
    rng = np.random.default_rng(0)
    s, t, k = 12, 7, 4
    feats = rng.normal(size=(s + t, 30))
    kern = feats @ feats.T
    k_ss, k_ts = kern[:s, :s], kern[s:, :s]
    y_s = rng.normal(size=(s, k))
    want = numpy_krr(k_ts, k_ss, y_s, reg)
    got, info = krr.krr_predict(jnp.asarray(k_ts, jnp.float32), jnp.asarray(k_ss, jnp.float32),
                                jnp.asarray(y_s, jnp.float32), reg=reg, return_info=True)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    assert float(info.fallback) == 0.0
    np.testing.assert_allclose(float(info.ridge), reg * np.trace(k_ss) / s, rtol=1e-5)


def test_ridge_is_reg_times_mean_eigenvalue():
    k = jnp.diag(jnp.array([1.0, 2.0, 3.0, 6.0]))
    assert float(krr.ridge(k, 0.5)) == pytest.approx(0.5 * 12.0 / 4)


def test_large_reg_shrinks_predictions_to_zero_and_small_reg_interpolates():
    rng = np.random.default_rng(1)
    k_ss = random_psd(rng, 6)
    y = rng.normal(size=(6, 3))
    # predicting the support itself: reg -> 0 interpolates the labels
    near = np.asarray(krr.krr_predict(jnp.asarray(k_ss, jnp.float32), jnp.asarray(k_ss, jnp.float32),
                                      jnp.asarray(y, jnp.float32), reg=1e-7))
    np.testing.assert_allclose(near, y, atol=1e-2)
    far = np.asarray(krr.krr_predict(jnp.asarray(k_ss), jnp.asarray(k_ss), jnp.asarray(y), reg=1e6))
    assert np.abs(far).max() < 1e-3 * np.abs(y).max()


def test_singular_kernel_takes_the_jitter_fallback_and_stays_finite():
    # rank-1 kernel with reg = 0: the plain Cholesky factor fails
    v = jnp.arange(1.0, 6.0)
    k_ss = jnp.outer(v, v)
    y = jnp.eye(5)[:, :3]
    pred, info = krr.krr_predict(k_ss[:2], k_ss, y, reg=0.0, jitter=1e-3, return_info=True)
    assert float(info.fallback) == 1.0
    assert np.all(np.isfinite(np.asarray(pred)))
    np.testing.assert_allclose(float(info.ridge), 1e-3 * float(jnp.trace(k_ss)) / 5, rtol=1e-5)
    # and under jit + grad too
    g = jax.jit(jax.grad(lambda k: jnp.sum(krr.krr_predict(k[:2], k, y, reg=0.0))))(k_ss)
    assert np.all(np.isfinite(np.asarray(g)))
    # vmapped over a good and a singular kernel (a cond would become a select here)
    both = jnp.stack([k_ss + jnp.eye(5), k_ss])
    gv = jax.vmap(jax.grad(lambda k: jnp.sum(krr.krr_predict(k[:2], k, y, reg=0.0))))(both)
    assert np.all(np.isfinite(np.asarray(gv)))


def test_gradient_through_krr_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    xt = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
    tgt = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)

    def loss(x):
        k = lambda a, b: (a @ b.T + 1.0) ** 2
        return krr.mse_loss(krr.krr_predict(k(xt, x), k(x, x), y, reg=1e-2), tgt)

    g = np.asarray(jax.grad(loss)(x))
    eps = 1e-2
    d = np.zeros((5, 3), np.float32)
    d[1, 2] = eps
    fd = (float(loss(x + d)) - float(loss(x - d))) / (2 * eps)
    assert g[1, 2] == pytest.approx(fd, rel=5e-2, abs=1e-4)


def test_check_kernel_reports_bad_kernels_naming_the_setting():
    rng = np.random.default_rng(3)
    good = random_psd(rng, 5)
    info = krr.check_kernel(good, 1e-6)
    assert info["min_eig"] > 0 and info["ridge"] == pytest.approx(1e-6 * np.trace(good) / 5)
    with pytest.raises(krr.KernelError, match="raise reg"):
        krr.check_kernel(np.ones((4, 4)), 0.0)
    with pytest.raises(krr.KernelError, match="raise kip_reg"):
        krr.check_kernel(-np.eye(3), 1e-6, name="kip_reg")
    with pytest.raises(krr.KernelError, match="non-finite"):
        krr.check_kernel(np.full((2, 2), np.nan))
    with pytest.raises(krr.KernelError, match="square"):
        krr.check_kernel(np.ones((2, 3)))


def test_mse_loss_by_hand():
    pred = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    tgt = jnp.array([[0.0, 0.0], [0.5, -0.5]])
    # entries squared: 1, 0, 0, 1 -> mean 0.5 -> 0.25
    assert float(krr.mse_loss(pred, tgt)) == pytest.approx(0.25)
    # weight only the first row: its entries 1, 0 -> 0.5 * 0.5
    assert float(krr.mse_loss(pred, tgt, jnp.array([1.0, 0.0]))) == pytest.approx(0.25)
    assert float(krr.mse_loss(pred, tgt, jnp.array([0.0, 1.0]))) == pytest.approx(0.25)
    assert float(krr.mse_loss(pred, tgt * 0 + pred)) == 0.0


def test_platt_loss_by_hand():
    pred = jnp.array([[0.2, -0.1, 0.4], [1.0, 0.0, 0.0]])
    labels = jnp.array([2, 1])
    for log_t in (0.0, 1.3):
        z = np.exp(log_t) * np.asarray(pred, np.float64)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        want = -(logp[0, 2] + logp[1, 1]) / 2
        assert float(krr.platt_loss(pred, labels, log_t)) == pytest.approx(want, rel=1e-5)
    # centred one-hot targets give the same loss as their argmax
    onehot = krr.one_hot_targets(labels, 3, center=True)
    assert float(krr.platt_loss(pred, onehot, 0.7)) == pytest.approx(float(krr.platt_loss(pred, labels, 0.7)))
    # learnable temperature: the gradient flows into it
    g = jax.grad(lambda t: krr.platt_loss(pred, labels, t))(0.0)
    assert np.isfinite(float(g)) and float(g) != 0.0
    # row weights
    w = jnp.array([1.0, 0.0])
    want0 = float(optax.softmax_cross_entropy_with_integer_labels(pred[:1], labels[:1])[0])
    assert float(krr.platt_loss(pred, labels, 0.0, w)) == pytest.approx(want0, rel=1e-6)


def test_accuracy_and_targets():
    pred = jnp.array([[0.2, 0.1], [0.0, 1.0], [3.0, 1.0]])
    assert float(krr.accuracy(pred, jnp.array([0, 1, 1]))) == pytest.approx(2 / 3)
    t = np.asarray(krr.one_hot_targets(jnp.array([1, 0]), 4, center=True, scale=2.0))
    np.testing.assert_allclose(t, [[-0.5, 1.5, -0.5, -0.5], [1.5, -0.5, -0.5, -0.5]])
