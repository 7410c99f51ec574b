"""FRePo: the label-margin loss and the feature KRR against NumPy, a step lowers its own
loss, the online pool's train / reset semantics, bad input, an end-to-end tiny run that
resumes exactly (the pool lives in DistillState.extra)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import data as gdata
from gold.distill import common, frepo, load_synthetic, loop, registry


def test_label_margin_loss_by_hand():
    y = jnp.array([[0.9, 0.1, 0.0], [0.5, 0.45, 0.0], [0.2, 0.3, 0.1]])
    # margins top1 - top2: 0.8, 0.05, 0.1 -> capped at 1/3: 1/3, 0.05, 0.1
    want = -(1 / 3 + 0.05 + 0.1) / 3
    assert float(frepo.label_margin_loss(y)) == pytest.approx(want, rel=1e-6)


def test_feature_regression_is_linear_kernel_krr():
    rng = np.random.default_rng(0)
    f_s, f_t, y = rng.normal(size=(6, 20)), rng.normal(size=(4, 20)), rng.normal(size=(6, 3))
    k_ss = f_s @ f_s.T
    lam = 1e-3 * np.trace(k_ss) / 6
    want = f_t @ f_s.T @ np.linalg.solve(k_ss + lam * np.eye(6), y)
    got, info = frepo.feature_regression(*(jnp.asarray(a, jnp.float32) for a in (f_t, f_s, y)), 1e-3, 1e-4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-4)
    assert float(info.fallback) == 0.0
    # the ref's loss: 0.5 * sum over classes, mean over rows
    t = rng.normal(size=(4, 3))
    assert float(frepo.scaled_mse(jnp.asarray(want), jnp.asarray(t))) == pytest.approx(
        0.5 * np.mean(np.sum((want - t) ** 2, axis=1)), rel=1e-5)


def test_with_flips_doubles_the_support():
    x = jnp.arange(2 * 2 * 3 * 1, dtype=jnp.float32).reshape(2, 2, 3, 1)
    xf, yf = frepo.with_flips(x, jnp.array([0, 1]))
    np.testing.assert_array_equal(np.asarray(xf[2:]), np.asarray(x)[:, :, ::-1])
    np.testing.assert_array_equal(np.asarray(yf), [0, 1, 0, 1])


@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)


def build(digits, **overrides):
    cfg = importlib.import_module("gold.configs.frepo").get_config("digits")
    cfg.model.width = 8
    cfg.batch_real = 16
    cfg.num_models = 2
    cfg.update(overrides)
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, cfg.batch_real)
    return registry.build(cfg, real), real


def test_a_step_lowers_its_own_loss_and_learned_labels_move(digits):
    # lr_net tiny: the sampled online model is (numerically) the same at both steps
    algo, real = build(digits, learn_labels=True, label_margin_weight=1.0, lr_img=0.01, lr_net=1e-12,
                       optimizer="adam")
    state = algo.init(jax.random.key(0), real)
    y0 = np.asarray(state.params["labels"])
    np.testing.assert_allclose(y0.sum(axis=1), 0.0, atol=1e-6)  # centred one-hot
    step = jax.jit(algo.step)
    key = jax.random.key(3)  # fixed: the same slot and real batch
    new, m0 = step(state, key, real)
    _, m1 = step(new, key, real)
    assert float(m1["kernel_loss"]) < float(m0["kernel_loss"])
    assert float(m0["krr_fallback"]) == 0.0 and 0.0 <= float(m0["krr_accuracy"]) <= 1.0
    assert np.abs(np.asarray(new.params["labels"]) - y0).max() > 0
    assert int(new.iteration) == int(state.iteration)


def test_pool_trains_the_sampled_slot_and_resets_it_after_max_updates(digits):
    algo, real = build(digits, num_models=2, max_online_updates=2)
    state = algo.init(jax.random.key(0), real)
    np.testing.assert_array_equal(np.asarray(state.extra["pool"].age), [0, 1])  # staggered
    step = jax.jit(algo.step)
    for i in range(6):
        before = state.extra["pool"]
        state, m = step(state, jax.random.key(10 + i), real)
        after = state.extra["pool"]
        changed = [not all(np.array_equal(np.asarray(a[j]), np.asarray(b[j]))
                           for a, b in zip(jax.tree.leaves(before.variables), jax.tree.leaves(after.variables)))
                   for j in range(2)]
        assert sum(changed) == 1  # exactly the sampled slot moved
        j = changed.index(True)
        old, new = int(before.age[j]), int(after.age[j])
        if old + 1 >= 2:  # its max_online_updates-th update: re-initialised
            assert new == 0
        else:
            assert new == old + 1
        assert float(m["model_age"]) == new
        assert int(after.age[1 - j]) == int(before.age[1 - j])
    assert int(np.max(np.asarray(state.extra["pool"].age))) < 2


def test_bad_settings_and_a_support_larger_than_the_kept_data(digits):
    with pytest.raises(ValueError, match="optimizer"):
        build(digits, optimizer="sgd")
    with pytest.raises(ValueError, match="learn_labels"):
        build(digits, learn_labels=False, label_margin_weight=1.0)
    with pytest.raises(ValueError, match="larger than the kept data"):
        build(digits, ipc=40, init="noise")
    cfg = importlib.import_module("gold.configs.frepo").get_config("digits")
    cfg.model.name = "mlp"
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, 16)
    with pytest.raises(ValueError, match="ConvNet family"):
        registry.build(cfg, real)


def test_end_to_end_tiny_run_resumes_exactly(tmp_path):
    def cfg(iterations):
        c = importlib.import_module("gold.configs.frepo").get_config("digits")
        c.data.train_per_class, c.data.test_per_class = 20, 10
        c.model.width, c.batch_real, c.num_models, c.max_online_updates = 8, 8, 2, 2
        c.iterations, c.checkpoint_every, c.log_every = iterations, 2, 2
        c.lr_alpha = 1.0  # constant lr: a longer run continues the same schedule
        c.eval.num_models, c.eval.epochs, c.eval.warmup_epochs, c.eval.augment = 1, 4, 1, "none"
        return c

    straight = loop.run(cfg(4), str(tmp_path / "a"))
    loop.run(cfg(2), str(tmp_path / "b"))
    resumed = loop.run(cfg(4), str(tmp_path / "b"))  # continues from iteration 2 with the pool
    a, b = (load_synthetic(str(tmp_path / d / "synthetic.npz")) for d in ("a", "b"))
    np.testing.assert_array_equal(a.x, b.x)
    assert resumed["accuracies"] == straight["accuracies"] and 0.0 <= straight["accuracy_mean"] <= 100.0
