"""CAFE (gold.distill.cafe): layer taps, the loss against NumPy, the accuracy window, the
iteration-keyed lr schedule, a gradient step lowers the loss, bad settings, a tiny run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gold import models as gmodels
from gold import nn as gnn
from gold.configs import cafe as cafe_config
from gold.distill import cafe, common, loop, registry, settings

SHAPE = (8, 8, 1)


def _convnet(depth=2, width=4):
    model = gmodels.get_model("convnet", 3, SHAPE, width=width, depth=depth)
    return model, gnn.init_variables(model, jax.random.key(0), SHAPE)


def test_taps_are_pre_pool_activations_then_the_pooled_output():
    model, variables = _convnet(depth=2)
    x = jax.random.normal(jax.random.key(1), (2, *SHAPE))
    taps = model.apply(variables, x, method=model.taps)
    assert [t.shape for t in taps] == [(2, 8, 8, 4), (2, 4, 4, 4), (2, 2, 2, 4)]
    blocks = model.apply(variables, x, method=model.blocks)
    # block 2's input is block 1's pooled output: 2x2 average of the tap
    np.testing.assert_allclose(blocks[0][1], taps[0].reshape(2, 4, 2, 4, 2, 4).mean((2, 4)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(taps[-1].reshape(2, -1), model.apply(variables, x, method=model.embed), rtol=1e-6)


def _numpy_cafe(taps_r, taps_s, w, layer_w, embed_w, disc_w):
    def means(f, wts=None):
        f = f.reshape(*f.shape[:2], -1)
        if wts is None:
            return f.mean(1)
        return (f * wts[..., None]).sum(1) / wts.sum(1, keepdims=True)

    align = sum(lw * np.sum((means(r, w) - means(s)) ** 2) for lw, r, s in zip(layer_w, taps_r, taps_s))
    er, es = taps_r[-1].reshape(*taps_r[-1].shape[:2], -1), taps_s[-1].reshape(*taps_s[-1].shape[:2], -1)
    align += embed_w * np.sum((means(er, w) - means(es)) ** 2)
    centers = es.mean(1)
    disc = 0.0
    for c in range(er.shape[0]):
        for b in range(er.shape[1]):
            z = er[c, b] @ centers.T
            disc += w[c, b] * (np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[c])
    return align + disc_w * disc, align, disc


def test_cafe_loss_matches_numpy():
    rng = np.random.default_rng(0)
    k, b, m = 3, 4, 2
    taps_r = [rng.normal(size=(k, b, 4, 4, 2)), rng.normal(size=(k, b, 2, 2, 2))]
    taps_s = [rng.normal(size=(k, m, 4, 4, 2)), rng.normal(size=(k, m, 2, 2, 2))]
    w = np.ones((k, b))
    w[1, 3] = 0.0  # padding of a small class drops out of its mean and of the CE sum
    loss, (align, disc) = cafe.cafe_loss([jnp.asarray(t, jnp.float32) for t in taps_r],
                                         [jnp.asarray(t, jnp.float32) for t in taps_s],
                                         jnp.asarray(w, jnp.float32), (0.1, 1.0), 1.0, 0.01)
    ref_loss, ref_align, ref_disc = _numpy_cafe(taps_r, taps_s, w, (0.1, 1.0), 1.0, 0.01)
    np.testing.assert_allclose(float(align), ref_align, rtol=1e-5)
    np.testing.assert_allclose(float(disc), ref_disc, rtol=1e-5)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)


def test_gradient_steps_on_the_images_lower_the_loss():
    """What one image step of the bi-level loop does: a fixed network, the real features
    constant, plain gradient descent on the synthetic images."""
    model, variables = _convnet(depth=2)
    k, b, m = 3, 6, 2
    xr = jax.random.normal(jax.random.key(2), (k * b, *SHAPE)) + jnp.repeat(jnp.arange(k), b)[:, None, None, None]
    taps = lambda x: model.apply(variables, x, train=True, method=model.taps)
    tr = [t.reshape(k, b, *t.shape[1:]) for t in taps(xr)]
    w = jnp.ones((k, b))

    def loss(xs):
        ts = [t.reshape(k, m, *t.shape[1:]) for t in taps(xs)]
        return cafe.cafe_loss(tr, ts, w, (0.1, 1.0, 1.0), 1.0, 0.01)[0]

    xs = jax.random.normal(jax.random.key(3), (k * m, *SHAPE))
    vg = jax.jit(jax.value_and_grad(loss))
    first, g = vg(xs)
    for _ in range(5):
        xs = xs - 0.05 * g
        value, g = vg(xs)
    assert float(value) < 0.8 * float(first)


def test_window_spread_only_when_full():
    w = cafe.Window.empty(3)
    for v in (0.5, 0.6):
        w = w.push(jnp.float32(v))
        assert np.isnan(float(w.spread()))
    w = w.push(jnp.float32(0.52))
    assert float(w.spread()) == pytest.approx(0.1, abs=1e-6)
    w = w.push(jnp.float32(0.55))  # the oldest (0.5) drops out
    np.testing.assert_allclose(w.values, [0.6, 0.52, 0.55], rtol=1e-6)
    assert float(w.spread()) == pytest.approx(0.08, abs=1e-6)


def test_lr_halves_at_the_reference_iterations_and_reaches_the_update():
    s = cafe.CAFESettings()
    sched = s.lr_schedule()
    got = [float(sched(i)) for i in (0, 1199, 1200, 1599, 1600, 1800, 1999)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125, 0.0125], rtol=1e-6)
    spec = common.SyntheticSpec(common.Pixels(2, 1, SHAPE), 2)
    tx = optax.inject_hyperparams(lambda lr: spec.optimizer(common.sgd(lr, 0.5)))(lr=0.1)
    params = {"images": {"x": jnp.zeros((2, *SHAPE))}}
    opt = cafe.set_lr(tx.init(params), sched(1600))
    grads = {"images": {"x": jnp.ones((2, *SHAPE))}}
    updates, _ = tx.update(grads, opt, params)
    np.testing.assert_allclose(updates["images"]["x"], -0.025, rtol=1e-6)


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="window"):
        cafe.CAFESettings(window=10, max_image_steps=5).validate()
    with pytest.raises(ValueError, match="layer_weights"):
        cafe.CAFESettings(layer_weights=(1.0, 1.0)).weights_for(4)
    assert cafe.CAFESettings().weights_for(2) == (1.0, 1.0)
    with pytest.raises(ValueError, match="variant"):
        cafe_config.get_config("mnist,dss")
    cfg = cafe_config.get_config("cifar10,dsa")
    assert cfg.dsa_strategy != "none" and cfg.eval.epochs == 1000 and cfg.eval.augment == "dsa"
    cfg = cafe_config.get_config("cifar10")
    assert cfg.dsa_strategy == "none" and cfg.eval.epochs == 600
    assert settings.from_config(cafe.CAFESettings, cfg).iterations == 2000


def test_a_network_without_feature_taps_is_refused():
    cfg = cafe_config.get_config("digits")
    cfg.model.name = "mlp"
    real = common.make_real_data(np.zeros((20, *SHAPE), np.float32), np.repeat(np.arange(10), 2), 10, 2)
    with pytest.raises(ValueError, match="no taps"):
        registry.build(cfg, real)


def test_tiny_run_end_to_end(tmp_path):
    cfg = cafe_config.get_config("digits")
    cfg.model.width = 8
    cfg.batch_real = 16
    cfg.iterations = 2
    cfg.window, cfg.max_image_steps, cfg.max_net_epochs = 2, 2, 2
    cfg.checkpoint_every = 0
    cfg.log_every = 1
    cfg.eval.num_models, cfg.eval.epochs, cfg.eval.augment = 1, 2, "none"
    res = loop.run(cfg, str(tmp_path / "cafe"))
    assert res["algorithm"] == "cafe" and res["iterations"] == 2
    assert np.isfinite(res["final_loss"]) and 0.0 <= res["accuracy_mean"] <= 100.0
    assert res["storage_per_class"] == 64.0  # one 8x8 image per class
