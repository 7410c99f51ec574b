"""LinBa (gold.distill.linba, gold.distill.bases): A x B shapes, the storage budget, the
bilinear upsampling against NumPy, class-balanced minibatches, the BPTT gradient (momentum
unroll) against finite differences, the step lowers its own loss, bad settings, a tiny run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import data as gdata
from gold import models as gmodels
from gold import nn as gnn
from gold import rng
from gold.configs import linba as linba_config
from gold.distill import bases, common, linba, loop, registry
from gold.distill import unroll as U


def _upsample2_numpy(x):
    """PyTorch F.interpolate(scale_factor=2, mode='bilinear', align_corners=False) on
    [N, h, w, C]: source coordinate (dst + 0.5) / 2 - 0.5, clamped at 0."""
    n, h, w, c = x.shape

    def axis_weights(size):
        src = np.maximum((np.arange(2 * size) + 0.5) / 2 - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, size - 1)
        frac = src - lo
        m = np.zeros((2 * size, size))
        m[np.arange(2 * size), lo] += 1 - frac
        m[np.arange(2 * size), hi] += frac
        return m

    return np.einsum("Hh,Ww,nhwc->nHWc", axis_weights(h), axis_weights(w), x)


@pytest.mark.parametrize("shape,classes,ipc,rows", [((28, 28, 1), 10, 1, 29), ((32, 32, 3), 10, 1, 115),
                                                     ((32, 32, 3), 10, 10, 1843), ((8, 8, 1), 10, 1, 2)])
def test_budget_rows_fill_the_pixel_budget_within_one_row(shape, classes, ipc, rows):
    assert bases.rows_for_budget(ipc, shape, classes, 16, 2) == rows
    lb = bases.LinearBases(classes, rows, 16, shape, 2)
    budget = ipc * np.prod(shape)
    assert 0 <= budget - lb.storage_per_class() < 16  # short of the budget by < one coefficient row
    params = lb.init(jax.random.key(0), None, "noise")
    assert params["bases"].shape == (16, shape[0] // 2, shape[1] // 2, shape[2])
    assert params["coeffs"].shape == (classes * rows, 16)
    assert common.storage_floats(params) / classes == pytest.approx(lb.storage_per_class())


def test_budget_errors():
    with pytest.raises(ValueError, match="no coefficient row"):
        bases.rows_for_budget(1, (8, 8, 1), 2, 16, 1)
    with pytest.raises(ValueError, match="divisible"):
        bases.rows_for_budget(1, (7, 7, 1), 10, 4, 2)


def test_decode_is_upsampled_coefficients_times_bases():
    lb = bases.LinearBases(3, 2, 4, (8, 6, 2), 2)
    params = lb.init(jax.random.key(1), None, "noise")
    a = np.asarray(params["coeffs"], np.float64)
    b = np.asarray(params["bases"], np.float64)
    bound = np.sqrt(6 / (4 + 4 * 3 * 2))  # xavier: (num, dim) = (4 bases, 4*3*2 pixels)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound
    small = np.einsum("nb,bhwc->nhwc", a, b)
    x = lb.decode(params)
    assert x.shape == (6, 8, 6, 2) and lb.per_class == 2
    np.testing.assert_allclose(x, _upsample2_numpy(small), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="noise"):
        lb.init(jax.random.key(1), None, "real")


def test_class_minibatches_are_distinct_rows_of_each_class():
    idx = np.asarray(linba.class_minibatches(jax.random.key(0), 3, 5, 4, 6))
    assert idx.shape == (6, 12)
    for t in range(6):
        for c in range(3):
            part = idx[t, 4 * c:4 * (c + 1)]
            assert len(set(part)) == 4 and part.min() >= 5 * c and part.max() < 5 * (c + 1)
    with pytest.raises(ValueError, match="batch"):
        linba.class_minibatches(jax.random.key(0), 3, 5, 6, 1)


def test_bptt_gradient_through_momentum_unroll_matches_finite_differences():
    """d(real CE after T momentum-SGD steps on decoded A x B images) / d coefficients."""
    shape = (4, 4, 1)
    lb = bases.LinearBases(2, 2, 3, shape, 2)
    model = gmodels.get_model("convnet", 2, shape, width=3, depth=1, conv_impl="xla", pad_to=None)
    apply, _ = U.flat_apply_fn(model, shape)
    theta0, _ = U.flatten_params(gnn.init_variables(model, jax.random.key(0), shape)["params"])
    params = jax.tree.map(lambda p: 5.0 * p, lb.init(jax.random.key(1), None, "noise"))
    xr = jax.random.normal(jax.random.key(2), (6, *shape))
    yr = jnp.array([0, 1, 0, 1, 0, 1])
    idx = linba.class_minibatches(jax.random.key(3), 2, 2, 1, 4)
    y = jnp.array([0, 0, 1, 1])

    def outer(coeffs):
        x = lb.decode({**params, "coeffs": coeffs})
        step_loss = lambda th, b: jnp.mean(gnn.per_sample_cross_entropy(apply(th, x[b], True), y[b]))
        end = U.unroll(step_loss, theta0, 0.5, idx, momentum=0.9).params
        return jnp.mean(gnn.per_sample_cross_entropy(apply(end, xr, True), yr))

    value_and_grad = jax.jit(jax.value_and_grad(outer))  # one compilation for values and gradient
    f = lambda c: float(value_and_grad(jnp.asarray(c))[0])
    g = np.asarray(value_and_grad(params["coeffs"])[1])
    assert np.abs(g).max() > 1e-4
    c0, eps = np.asarray(params["coeffs"], np.float32), 1e-2
    for i, j in [(0, 0), (1, 2), (3, 1)]:
        up, down = c0.copy(), c0.copy()
        up[i, j] += eps
        down[i, j] -= eps
        fd = (f(up) - f(down)) / (2 * eps)
        assert g[i, j] == pytest.approx(fd, rel=5e-2, abs=2e-4)


@pytest.fixture(scope="module")
def digits_algo():
    cfg = linba_config.get_config("digits")
    cfg.model.width = 8
    cfg.batch_real = 8
    cfg.unroll_steps = 5
    d = gdata.load_dataset("digits", train_per_class=20, test_per_class=5, strict_counts=False)
    real = common.make_real_data(d.x_train, d.y_train, d.num_classes, cfg.batch_real)
    return registry.build(cfg, real), real


def test_step_lowers_its_own_loss(digits_algo):
    """Same key twice: the same fresh network, minibatches and real batch, so the
    second loss is the first one's after one clipped SGD step on A and B."""
    algo, real = digits_algo
    assert algo.settings["images_per_class"] == 2 and algo.settings["storage_per_class"] <= 64
    step = jax.jit(algo.step)
    state = algo.init(rng.root(0), real)
    key = rng.root(5)
    state, m0 = step(state, key, real)
    state, m1 = step(state, key, real)
    assert float(m0["grad_norm"]) > 0
    assert float(m1["loss"]) < float(m0["loss"])


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="noise"):
        linba.LinBaSettings(init="real").validate()
    with pytest.raises(ValueError, match="unroll_steps"):
        linba.LinBaSettings(unroll_steps=0).validate()
    assert linba.LinBaSettings(rows_per_class=7).rows((28, 28, 1), 10) == 7
    cfg = linba_config.get_config("mnist")
    assert cfg.eval.batch_size == 640 and cfg.eval.weight_decay == 0.0 and cfg.eval.epochs == 300


def test_tiny_run_end_to_end(tmp_path):
    cfg = linba_config.get_config("digits")
    cfg.model.width = 8
    cfg.batch_real = 8
    cfg.unroll_steps = 2
    cfg.iterations = 2
    cfg.checkpoint_every = 0
    cfg.log_every = 1
    cfg.eval.num_models, cfg.eval.epochs = 1, 2
    res = loop.run(cfg, str(tmp_path / "linba"))
    assert res["algorithm"] == "linba" and np.isfinite(res["final_loss"])
    # 16 bases of 4x4 + 2 rows x 16 coefficients per class = 57.6 <= 64 pixels of one image
    assert res["storage_per_class"] == pytest.approx((16 * 16 + 10 * 2 * 16) / 10)
    assert 0.0 <= res["accuracy_mean"] <= 100.0
