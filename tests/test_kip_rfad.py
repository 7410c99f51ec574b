"""KIP (empirical NTK) and RFAD (random-feature NNGP): kernels against explicit
references, one step lowers its own loss, learned labels / temperature move, bad input."""

import functools
import importlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import data as gdata
from gold import models as gmodels
from gold import nn as gnn
from gold.distill import common, kip, registry, rfad


# ------------------------------------------------------------------ empirical NTK
def explicit_ntk(apply_fn, params, x1, x2):
    """sum_k J_k(x1) J_k(x2)^T from full jacrev Jacobians."""
    def flat_jac(x):
        jac = jax.jacrev(lambda p: apply_fn(p, x))(params)  # leaves [n, K, *leaf]
        leaves = [l.reshape(l.shape[0], l.shape[1], -1) for l in jax.tree.leaves(jac)]
        return jnp.concatenate(leaves, axis=-1)  # [n, K, P]

    j1, j2 = flat_jac(x1), flat_jac(x2)
    return jnp.einsum("akp,bkp->ab", j1, j2)


@pytest.mark.parametrize("name,overrides", [
    ("convnet", dict(width=4, depth=1, norm="none", conv_impl="xla")),
    ("convnet", dict(width=4, depth=2, norm="instancenorm", conv_impl="shifted")),
    ("mlp", {}),
])
def test_empirical_ntk_equals_explicit_jacobian_product(name, overrides):
    shape = (8, 8, 1)
    model = gmodels.get_model(name, 3, shape, **overrides)
    variables = gnn.init_variables(model, jax.random.key(0), shape)
    params = kip.gaussian_params(variables["params"], jax.random.key(1), 2.0, 0.01)
    apply_fn = lambda p, x: model.apply({**variables, "params": p}, x, train=False)
    x1 = jax.random.normal(jax.random.key(2), (5, *shape))
    x2 = jax.random.normal(jax.random.key(3), (3, *shape))

    @jax.jit
    def both(params, x1, x2):
        want = explicit_ntk(apply_fn, params, jnp.concatenate([x1, x2]), x2)
        k_ss, k_ts = kip.support_and_target_ntk(apply_fn, params, x2, x1)
        chunked = kip.empirical_ntk(apply_fn, params, x1, x2, chunk=2)
        return want, k_ss, k_ts, chunked

    want, k_ss, k_ts, chunked = map(np.asarray, both(params, x1, x2))
    tol = dict(rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(k_ts, want[:5], **tol)
    np.testing.assert_allclose(k_ss, want[5:], **tol)
    np.testing.assert_allclose(chunked, want[:5], **tol)
    assert np.all(np.linalg.eigvalsh(0.5 * (k_ss + k_ss.T)) > -1e-3 * np.abs(k_ss).max())


def test_ntk_of_a_two_layer_relu_network_matches_numpy():
    """f(x) = V^T relu(U^T x) + c: sum_k <J_k(a), J_k(b)> = K (h_a . h_b + 1)
    + (x_a . x_b) sum_j |V_j|^2 1[u_j . x_a > 0] 1[u_j . x_b > 0], whole and chunked."""
    rng = np.random.default_rng(0)
    d, width, k = 6, 7, 3
    params = {"u": rng.normal(size=(d, width)), "v": rng.normal(size=(width, k)), "c": rng.normal(size=k)}
    xt, xs = rng.normal(size=(5, d)), rng.normal(size=(2, d))
    apply_fn = lambda p, x: jax.nn.relu(x @ p["u"]) @ p["v"] + p["c"]
    jparams, jxt, jxs = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (params, xt, xs))
    k_ss, k_ts = kip.support_and_target_ntk(apply_fn, jparams, jxs, jxt)
    chunked = kip.empirical_ntk(apply_fn, jparams, jxt, jxs, chunk=2)

    def numpy_ntk(a, b):
        pa, pb = a @ params["u"], b @ params["u"]
        head = k * (np.maximum(pa, 0) @ np.maximum(pb, 0).T + 1.0)
        gates = ((pa > 0)[:, None, :] & (pb > 0)[None, :, :]) * (params["v"] ** 2).sum(axis=1)
        return head + (a @ b.T) * gates.sum(axis=-1)

    for got, want in ((k_ss, numpy_ntk(xs, xs)), (k_ts, numpy_ntk(xt, xs)), (chunked, numpy_ntk(xt, xs))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_gaussian_params_redraws_kernels_and_biases_only():
    shape = (8, 8, 1)
    model = gmodels.get_model("convnet", 10, shape, width=64, depth=1, norm="instancenorm")
    params = jax.jit(lambda k: gnn.init_variables(model, k, shape)["params"])(jax.random.key(0))
    new = jax.jit(lambda p, k: kip.gaussian_params(p, k, w_var=2.0, b_var=0.01))(params, jax.random.key(1))
    flat = flax.traverse_util.flatten_dict(new)
    w = np.asarray(flat[("conv_0", "kernel")])
    assert w.std() == pytest.approx(np.sqrt(2.0 / 9), rel=0.1)
    assert np.asarray(flat[("conv_0", "bias")]).std() == pytest.approx(0.1, rel=0.3)
    head = np.asarray(flat[("head", "kernel")])
    assert head.std() == pytest.approx(np.sqrt(2.0 / head.shape[0]), rel=0.1)
    old = flax.traverse_util.flatten_dict(params)
    np.testing.assert_array_equal(np.asarray(flat[("norms_0", "scale")]), np.asarray(old[("norms_0", "scale")]))


# --------------------------------------------------------- RFAD random features
def test_rfad_random_feature_kernel_approaches_its_monte_carlo_limit():
    """The averaged random-feature kernel converges to the NNGP (estimated with many
    networks) as the number of networks x width grows: error ~ 1/sqrt(M * F)."""
    shape = (8, 8, 1)
    x = jax.random.normal(jax.random.key(0), (4, *shape))

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def kernel(width, num_models, key):
        model = gmodels.get_model("convnet", 2, shape, width=width, depth=1, norm="none", conv_impl="xla")
        f = rfad.ensemble_features(model, jax.random.split(key, num_models), x, shape, 2.0, 0.01)
        return rfad.nngp_kernel(f, f, 2.0, 0.01)

    reference = np.asarray(kernel(16, 512, jax.random.key(1000)))  # 512 networks x 16 x 16 features

    def error(width, num_models):
        errs = [np.linalg.norm(np.asarray(kernel(width, num_models, jax.random.key(s))) - reference)
                for s in range(8)]
        return float(np.mean(errs)) / np.linalg.norm(reference)

    few, more_models, wider = error(4, 1), error(4, 16), error(64, 1)
    assert more_models < 0.5 * few and wider < 0.5 * few
    assert error(16, 16) < 0.1


def test_rfad_kernel_is_the_feature_inner_product():
    f = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5)), jnp.float32)
    k = np.asarray(rfad.nngp_kernel(f, f, 2.0, 0.01))
    want = 2.0 * (np.asarray(f[0]) @ np.asarray(f[0]).T + np.asarray(f[1]) @ np.asarray(f[1]).T) + 0.01
    np.testing.assert_allclose(k, want, rtol=1e-5)


# ------------------------------------------------------------------ whole steps
@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)


def build(name, digits, arg="digits", **overrides):
    cfg = importlib.import_module(f"gold.configs.{name}").get_config(arg)
    cfg.model.width = 8
    cfg.batch_real = 16
    cfg.update(overrides)
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, cfg.batch_real)
    return registry.build(cfg, real), real


@pytest.mark.parametrize("name,overrides", [
    ("kip", dict(lr_img=0.01, lr_labels=0.01)),
    ("rfad", dict(arg="digits,mse", lr_img=0.01, lr_labels=0.01)),
    ("rfad", dict(lr_img=0.01, loss="mse")),
])
def test_a_step_lowers_its_own_loss_and_learned_entries_move(name, overrides, digits):
    algo, real = build(name, digits, **overrides)
    state = algo.init(jax.random.key(0), real)
    step = jax.jit(algo.step)
    key = jax.random.key(7)  # fixed: the same networks and real batch
    new, m0 = step(state, key, real)
    _, m1 = step(new, key, real)
    assert np.isfinite(float(m0["loss"])) and float(m1["loss"]) < float(m0["loss"])
    assert float(m0["krr_fallback"]) == 0.0
    assert 0.0 <= float(m0["krr_accuracy"]) <= 1.0
    if "labels" in state.params:
        y0 = np.asarray(state.params["labels"])
        np.testing.assert_allclose(y0.sum(axis=1), 0.0, atol=1e-6)  # centred one-hot
        assert np.abs(np.asarray(new.params["labels"]) - y0).max() > 0
        syn = algo.synthetic(new)
        assert syn.y.shape == (10 * algo.settings["ipc"], 10) and syn.y.dtype == jnp.float32
    if "log_temperature" in state.params:
        assert float(new.params["log_temperature"]) != float(state.params["log_temperature"])
    assert int(new.iteration) == int(state.iteration)  # the engine counts


def test_kip_without_label_learning_keeps_hard_labels(digits):
    algo, real = build("kip", digits, learn_labels=False, weight_init="model", kernel_chunk=7)
    state = algo.init(jax.random.key(0), real)
    assert set(state.params) == {"images"}
    new, m = jax.jit(algo.step)(state, jax.random.key(1), real)
    assert np.isfinite(float(m["loss"]))
    assert algo.synthetic(new).y.dtype == jnp.int32


def test_bad_settings_and_models_are_refused(digits):
    with pytest.raises(ValueError, match="lr_labels"):
        build("kip", digits, learn_labels=True, lr_labels=0.0)
    with pytest.raises(ValueError, match="weight_init"):
        build("kip", digits, weight_init="xavier")
    with pytest.raises(ValueError, match="loss"):
        build("rfad", digits, loss="hinge")
    with pytest.raises(ValueError, match="ConvNet family"):
        cfg_model = dict(name="mlp")
        algo_cfg = importlib.import_module("gold.configs.rfad").get_config("digits")
        algo_cfg.model.update(cfg_model)
        real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, 16)
        registry.build(algo_cfg, real)


# ------------------------------------------------------------- configs and labels
@pytest.mark.parametrize("name", ["kip", "frepo", "rfad"])
def test_learned_centred_labels_refuse_a_cross_entropy_evaluation(name, digits):
    cfg = importlib.import_module(f"gold.configs.{name}").get_config("digits,mse")
    assert cfg.learn_labels and cfg.eval.loss == "mse"
    cfg.eval.loss = "ce"
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, 16)
    with pytest.raises(ValueError, match="eval.loss=mse"):
        registry.build(cfg, real)


@pytest.mark.parametrize("name", ["kip", "rfad"])
def test_a_support_set_larger_than_the_kept_data_is_refused(name, digits):
    with pytest.raises(ValueError, match="larger than the kept data"):
        build(name, digits, ipc=31, init="noise")


def test_config_argument_picks_ipc_evaluation_and_zca():
    kip_cfg = importlib.import_module("gold.configs.kip")
    c = kip_cfg.get_config("cifar10,10")
    assert (c.ipc, c.learn_labels, c.eval.loss, c.data.zca) == (10, True, "mse", True)
    assert c.eval.epochs == 2000  # FRePo's eval steps for 100 images, batch 100: 1 step / epoch
    c = kip_cfg.get_config("mnist,dc")
    assert (c.ipc, c.learn_labels, c.eval.loss, c.eval.augment, c.data.zca) == (1, False, "ce", "dc_mnist", False)
    rf = importlib.import_module("gold.configs.rfad").get_config("mnist")
    assert not rf.learn_labels and rf.eval.loss == "ce"  # RFAD: Platt on fixed labels by default
    with pytest.raises(ValueError, match="expected"):
        kip_cfg.get_config("mnist,1,2")
    with pytest.raises(ValueError, match="expected"):
        kip_cfg.get_config("mnist,xent")
