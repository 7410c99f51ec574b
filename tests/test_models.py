"""Tests for gold.models: shapes, parameter counts, norms, and the custom-vjp conv."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gold.models import (FastConv, InstanceNorm, conv2d, get_model, model_names,
                         model_options)

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)
KEY = jax.random.PRNGKey(0)


def _n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _flat(tree) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def _rel_err(a, b) -> float:
    a, b = _flat(a), _flat(b)
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


# ----------------------------------------------------------------------------- ConvNet


def test_convnetd3_parameter_count_and_features():
    model = get_model("convnet", 10, CIFAR)
    x = jax.random.normal(KEY, (2, *CIFAR))

    @jax.jit
    def run(x):
        variables = model.init(KEY, x)
        return (variables, model.apply(variables, x, method=model.embed),
                model.apply(variables, x, method=model.features), model.apply(variables, x))

    variables, emb, feats, logits = run(x)
    assert set(variables) == {"params"}
    assert _n_params(variables["params"]) == 320_010
    assert variables["params"]["head"]["kernel"].shape == (2048, 10)
    assert variables["params"]["conv_0"]["kernel"].shape == (3, 3, 3, 128)
    assert emb.shape == (2, 2048)
    assert [f.shape for f in feats] == [(2, 16, 16, 128), (2, 8, 8, 128), (2, 4, 4, 128)]
    emb = feats[-1].reshape(2, -1)
    head = variables["params"]["head"]
    np.testing.assert_allclose(logits, emb @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)


def test_convnet_mnist_padding_reproduces_reference_padding_3():
    x = jax.random.normal(KEY, (2, *MNIST))
    full = get_model("convnet", 10, MNIST)
    emb = jax.eval_shape(lambda: full.init_with_output(KEY, x, method=full.embed)[0])
    assert emb.shape == (2, 2048)
    model = get_model("convnet", 10, MNIST, width=8, conv_impl="xla")
    variables = model.init(KEY, x)
    # Reference: first conv with padding 3 on the raw 28x28 input -> 32x32 maps.
    p0 = variables["params"]["conv_0"]
    ref = jax.lax.conv_general_dilated(x, p0["kernel"], (1, 1), ((3, 3), (3, 3)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + p0["bias"]
    # The first block (conv -> instance norm -> relu -> avg pool 2x2) on that map, bias
    # included (the model itself skips adding it: instance norm cancels it exactly).
    mean = ref.mean(axis=(1, 2), keepdims=True)
    var = ((ref - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    block = jax.nn.relu((ref - mean) / jnp.sqrt(var + 1e-5))
    block = block.reshape(2, 16, 2, 16, 2, 8).mean(axis=(2, 4))
    feats = model.apply(variables, x, method=model.features)
    assert feats[0].shape == (2, 16, 16, 8)
    np.testing.assert_allclose(feats[0], block, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm,bias_used", [("instancenorm", False), ("batchnorm", True),
                                            ("none", True)])
def test_conv_bias_skipped_only_before_instance_norm(norm, bias_used):
    """Instance norm cancels the conv bias: the parameter exists (reference tree) but
    has an exactly zero gradient; with other norms it is used."""
    x = jax.random.normal(KEY, (3, *MNIST))
    model = get_model("convnet", 10, MNIST, width=8, norm=norm)
    variables = model.init(KEY, x)
    assert variables["params"]["conv_0"]["bias"].shape == (8,)
    loss = lambda p: jnp.sum(model.apply({**variables, "params": p}, x) ** 2)
    g = jax.grad(loss)(variables["params"])
    biases = [np.abs(np.asarray(g[f"conv_{i}"]["bias"])).max() for i in range(3)]
    assert (min(biases) > 0) if bias_used else (max(biases) == 0.0)
    # Moving the bias leaves the instance-norm network's output unchanged.
    conv_1 = variables["params"]["conv_1"]
    shifted = {**variables["params"], "conv_1": {**conv_1, "bias": conv_1["bias"] + 3.0}}
    out = model.apply({**variables, "params": shifted}, x)
    same = np.allclose(out, model.apply(variables, x), atol=1e-6)
    assert same != bias_used


@pytest.mark.parametrize("name,depth,feat", [("convnetd1", 1, 32768), ("convnetd2", 2, 8192),
                                             ("convnetd4", 4, 512)])
def test_convnet_depths(name, depth, feat):
    model = get_model(name, 10, CIFAR)
    out = jax.eval_shape(lambda: model.init_with_output(
        KEY, jnp.zeros((2, *CIFAR)), method=model.embed))
    assert out[0].shape == (2, feat)
    assert model.depth == depth


def test_instancenorm_normalises_each_channel_of_each_sample():
    x = 3.0 * jax.random.normal(KEY, (4, 8, 8, 5)) + jnp.arange(5.0) * 2.0
    norm = InstanceNorm()
    variables = norm.init(KEY, x)
    y = norm.apply(variables, x)  # scale 1, bias 0 at init = the pre-affine output
    np.testing.assert_allclose(jnp.mean(y, axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(y, axis=(1, 2)), 1.0, atol=1e-3)
    # Matches Flax GroupNorm with one channel per group (the reference GroupNorm(C, C)).
    gn = nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5)
    ref = gn.apply(gn.init(KEY, x), x)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # Affine is per channel.
    v2 = {"params": {"scale": jnp.full((5,), 2.0), "bias": jnp.full((5,), 0.5)}}
    np.testing.assert_allclose(norm.apply(v2, x), 2.0 * y + 0.5, rtol=1e-5, atol=1e-5)


def test_layernorm_matches_reference_elementwise_affine():
    model = get_model("convnet_ln", 10, CIFAR)
    params = model.init(KEY, jnp.zeros((1, *CIFAR)))["params"]
    # Reference nn.LayerNorm([C, H, W]): affine per element of the (pre-pool) map.
    assert params["norms_0"]["scale"].shape == (32, 32, 128)
    assert params["norms_2"]["bias"].shape == (8, 8, 128)


# ----------------------------------------------------------------------------- all models


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_forward_shapes_all_models(name, shape):
    if name == "convnet_gru":
        shape = (4, *shape)  # the video model takes clips: 4 frames of this shape
    model = get_model(name, 7, shape)
    x = jnp.zeros((3, *shape))

    def run():
        variables = model.init(KEY, x)
        return model.apply(variables, x), model.apply(variables, x, method=model.embed)

    logits, emb = jax.eval_shape(run)
    assert logits.shape == (3, 7)
    assert emb.ndim == 2 and emb.shape[0] == 3


@pytest.mark.parametrize("name,feat", [("mlp", 128), ("lenet", 84), ("alexnet", 3072),
                                       ("vgg11", 512), ("resnet18", 512)])
def test_embedding_sizes(name, feat):
    for shape in (CIFAR, MNIST):
        model = get_model(name, 10, shape)
        out = jax.eval_shape(lambda: model.init_with_output(
            KEY, jnp.zeros((2, *shape)), method=model.embed))
        assert out[0].shape == (2, feat), (name, shape)


def test_reference_parameter_counts():
    expected = {"mlp": 411_146, "lenet": 62_006, "convnet_nn": 319_242}
    for name, n in expected.items():
        model = get_model(name, 10, CIFAR)
        params = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, *CIFAR))))["params"]
        assert _n_params(params) == n, name


def test_batchnorm_running_stats_update_numerically():
    shape = (8, 8, 3)
    model = get_model("convnet_bn", 10, shape, width=8, depth=2)
    x = jax.random.normal(KEY, (4, *shape)) * 2.0 + 1.0

    @jax.jit
    def run(x):
        variables = model.init(KEY, x[:1])
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        h = model.apply(variables, x, method=lambda m, x: m.conv[0](x))
        out_eval = model.apply({**variables, **updates}, x, train=False)
        return variables, logits, updates, h, out_eval

    variables, logits, updates, h, out_eval = run(x)
    assert set(variables) == {"params", "batch_stats"}
    assert logits.shape == (4, 10)
    old, new = variables["batch_stats"]["norms_0"], updates["batch_stats"]["norms_0"]
    # PyTorch momentum 0.1: new = 0.9 * old + 0.1 * batch statistic.
    np.testing.assert_allclose(new["mean"], 0.1 * jnp.mean(h, (0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * jnp.var(h, (0, 1, 2)), rtol=1e-4)
    assert float(jnp.max(jnp.abs(new["mean"] - old["mean"]))) > 1e-3
    # Eval mode uses the running stats and needs no mutable collection.
    assert out_eval.shape == (4, 10) and not np.allclose(out_eval, logits)


@pytest.mark.parametrize("name", ["convnet_bn", "alexnet_bn", "vgg11", "resnet18"])
def test_batchnorm_models_update_every_running_stat_in_train_mode(name):
    # Traced only (no compile): in train mode every batch_stats output must be computed,
    # i.e. no output is the input array passed through unchanged; in eval mode, all are.
    model = get_model(name, 10, CIFAR)
    x = jnp.zeros((2, *CIFAR))
    variables = jax.eval_shape(lambda: model.init(KEY, x))
    assert "batch_stats" in variables and "head" in variables["params"]

    def passthrough(train: bool) -> tuple[int, int]:
        fn = lambda v: model.apply(v, x, train=train, mutable=["batch_stats"])[1]
        closed = jax.make_jaxpr(fn)(variables)
        invars = set(map(id, closed.jaxpr.invars))
        outs = closed.jaxpr.outvars
        return sum(id(o) in invars for o in outs), len(outs)

    n_pass, n_out = passthrough(True)
    assert n_out == len(jax.tree.leaves(variables["batch_stats"])) and n_pass == 0
    n_pass, n_out = passthrough(False)
    assert n_pass == n_out


def test_vgg_rejects_small_inputs():
    model = get_model("vgg11", 10, (16, 16, 3))
    with pytest.raises(ValueError, match="32x32"):
        jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 16, 16, 3))))


def test_non_bn_models_have_only_params():
    for name in ("convnet", "mlp", "lenet", "alexnet", "vgg11_in", "resnet18_in"):
        model = get_model(name, 10, CIFAR)
        variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, *CIFAR))))
        assert set(variables) == {"params"}, name
        assert "head" in variables["params"], name


# ----------------------------------------------------------------------------- registry


def test_get_model_errors():
    with pytest.raises(ValueError) as err:
        get_model("convnet9000", 10, CIFAR)
    for n in ("convnet", "mlp", "resnet18", "vgg11"):
        assert n in str(err.value)
    with pytest.raises(ValueError, match="unknown override.*depht.*accepted:.*depth"):
        get_model("convnet", 10, CIFAR, depht=4)
    with pytest.raises(ValueError, match="input_shape"):
        get_model("convnet", 10, (32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        get_model("mlp", 0, CIFAR)
    with pytest.raises(ValueError, match="norm"):
        bad = get_model("convnet", 10, CIFAR, norm="batch")
        bad.init(KEY, jnp.zeros((1, *CIFAR)))
    with pytest.raises(ValueError, match="conv_impl"):
        bad = get_model("convnet", 10, CIFAR, conv_impl="cudnn")
        bad.init(KEY, jnp.zeros((1, *CIFAR)))


def test_get_model_overrides():
    model = get_model("ConvNet", 100, CIFAR, depth=2, width=32, norm="batchnorm",
                      pooling="maxpooling", conv_impl="xla")
    assert (model.depth, model.width, model.norm, model.pooling) == (2, 32, "batchnorm",
                                                                    "maxpooling")
    assert "conv_impl" in model_options("resnet18")
    assert "depth" not in model_options("mlp")


# ----------------------------------------------------------------------------- custom conv


@pytest.mark.parametrize("padding,ksize", [("SAME", 3), ("VALID", 5), (3, 3), (((0, 2), (1, 0)), 3)])
def test_conv2d_matches_xla_first_and_second_order(padding, ksize):
    k1, k2 = jax.random.split(KEY)
    x = jax.random.normal(k1, (3, 7, 8, 4))
    w = 0.3 * jax.random.normal(k2, (ksize, ksize, 4, 5))

    def loss(x, w, impl):
        return jnp.sum(jnp.tanh(conv2d(x, w, padding, impl)) ** 2)

    def matching(x, w, impl):  # a function of the weight gradient, as in DC
        gw = jax.grad(loss, 1)(x, w, impl)
        return jnp.sum(gw ** 2) + jnp.sum(jnp.sin(gw))

    def all_orders(x, w, impl):
        return (loss(x, w, impl), jax.grad(loss, (0, 1))(x, w, impl),
                jax.grad(matching, (0, 1))(x, w, impl))

    fn = jax.jit(all_orders, static_argnums=2)
    for r, g in zip(fn(x, w, "xla"), fn(x, w, "shifted")):
        assert _rel_err(g, r) < 1e-5


def test_fastconv_matches_nn_conv_parameters_and_output():
    x = jax.random.normal(KEY, (2, 6, 6, 3))
    fast = FastConv(4, (3, 3), "SAME", impl="shifted")
    variables = fast.init(KEY, x)
    conv = nn.Conv(4, (3, 3), padding="SAME")
    ref_vars = conv.init(KEY, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ref_vars)
    np.testing.assert_allclose(fast.apply(variables, x), conv.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    bound = 1.0 / np.sqrt(27)  # PyTorch default init U(+-1/sqrt(fan_in))
    assert float(jnp.max(jnp.abs(_flat(variables)))) <= bound


def _dc_matching(model, variables, x_syn, y_syn, x_real, y_real):
    """DC-style loss: 1 - cos between per-parameter gradients on real and synthetic data."""

    def ce(params, x, y):
        logits = model.apply({"params": params}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    g_real = jax.grad(ce)(variables["params"], x_real, y_real)
    g_syn = jax.grad(ce)(variables["params"], x_syn, y_syn)
    cos = jax.tree.map(lambda a, b: jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)),
                       g_real, g_syn)
    return sum(1.0 - c for c in jax.tree.leaves(cos))


def test_convnet_shifted_equals_xla_including_grad_of_grad():
    shape = (8, 8, 3)
    ks = jax.random.split(KEY, 4)
    x_syn = jax.random.normal(ks[0], (4, *shape))
    x_real = jax.random.normal(ks[1], (6, *shape))
    y_syn, y_real = jnp.arange(4) % 3, jnp.arange(6) % 3
    fast = get_model("convnet", 3, shape, width=8, depth=2, conv_impl="shifted")
    slow = get_model("convnet", 3, shape, width=8, depth=2, conv_impl="xla")
    variables = fast.init(ks[2], x_syn)

    def all_orders(model):
        def loss(params):
            logits = model.apply({"params": params}, x_real)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(6), y_real])

        dc = jax.grad(lambda xs: _dc_matching(model, variables, xs, y_syn, x_real, y_real))
        return model.apply(variables, x_syn), jax.grad(loss)(variables["params"]), dc(x_syn)

    got, ref = jax.jit(lambda: all_orders(fast))(), jax.jit(lambda: all_orders(slow))()
    assert float(jnp.max(jnp.abs(ref[2]))) > 0
    for g, r in zip(got, ref):
        assert _rel_err(g, r) < 1e-4


def test_grad_of_grad_under_vmap_over_networks():
    shape = (6, 6, 2)
    x = jax.random.normal(KEY, (4, *shape))
    y = jnp.arange(4) % 2
    params = []
    models = {impl: get_model("convnet", 2, shape, width=4, depth=2, conv_impl=impl)
              for impl in ("xla", "shifted")}
    stacked = jax.jit(jax.vmap(lambda k: models["xla"].init(k, x)["params"]))(
        jax.random.split(KEY, 3))

    def outer(params, xs, impl):
        def ce(p):
            logits = models[impl].apply({"params": p}, xs)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(4), y])
        g = jax.grad(ce)(params)
        return sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(g))

    for impl in ("xla", "shifted"):
        fn = jax.jit(jax.vmap(jax.grad(outer, 1), (0, None, None)), static_argnums=2)
        params.append(fn(stacked, x, impl))
    assert params[0].shape == (3, *x.shape)
    assert _rel_err(params[1], params[0]) < 1e-4


def test_vmap_over_networks_avoids_grouped_convolutions():
    # JAX's default conv batching rule turns K vmapped kernels into one grouped conv
    # (slow on XLA:CPU); the shifted conv's custom_vmap rule loops over K instead, and
    # folds an images-only batch axis into N. Checked on the lowered program (no compile).
    shape = (6, 6, 2)
    x = jnp.ones((3, 4, *shape))
    texts = {}
    for impl in ("xla", "shifted"):
        model = get_model("convnet", 2, shape, width=4, depth=2, conv_impl=impl)
        stacked = jax.eval_shape(jax.vmap(lambda k: model.init(k, x[0])["params"]),
                                 jax.random.split(KEY, 3))

        def grad1(p, xb, model=model):
            return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, xb) ** 2))(p)

        texts[impl] = jax.jit(jax.vmap(grad1)).lower(stacked, x).as_text()
        p0 = jax.tree.map(lambda a: jnp.zeros(a.shape[1:], a.dtype), stacked)
        x_only = jax.jit(jax.vmap(lambda xb: jax.grad(
            lambda xb: jnp.sum(model.apply({"params": p0}, xb) ** 2))(xb))).lower(x).as_text()
        assert set(re.findall(r"feature_group_count = (\d+)", x_only)) == {"1"}
    assert "3" in set(re.findall(r"feature_group_count = (\d+)", texts["xla"]))
    assert set(re.findall(r"feature_group_count = (\d+)", texts["shifted"])) == {"1"}


def test_vmapped_shifted_conv_matches_per_network_results():
    ks = jax.random.split(KEY, 3)
    x = jax.random.normal(ks[0], (3, 2, 5, 5, 2))
    w = jax.random.normal(ks[1], (3, 3, 3, 2, 4))
    dy = jax.random.normal(ks[2], (3, 2, 5, 5, 4))

    def vjp(x, w, dy):
        y, back = jax.vjp(lambda x, w: conv2d(x, w, "SAME", "shifted"), x, w)
        return (y, *back(dy))

    got = jax.vmap(vjp)(x, w, dy)
    ref = [jax.vjp(lambda x, w: conv2d(x, w, "SAME", "xla"), x[i], w[i]) for i in range(3)]
    ref = [jnp.stack(t) for t in zip(*[(y, *back(dy[i])) for i, (y, back) in enumerate(ref)])]
    for g, r in zip(got, ref):
        assert _rel_err(g, r) < 1e-5
    shared = jax.vmap(lambda xb: conv2d(xb, w[0], "SAME", "shifted"))(x)
    assert _rel_err(shared, conv2d(x.reshape(6, 5, 5, 2), w[0], "SAME", "xla").reshape(
        3, 2, 5, 5, 4)) < 1e-5


def test_unrolled_training_with_scan_and_checkpoint_matches_xla():
    # MTT / LinBa style: differentiate through SGD steps (lax.scan + jax.checkpoint)
    # w.r.t. the synthetic images.
    shape = (6, 6, 2)
    ks = jax.random.split(KEY, 3)
    x_syn = jax.random.normal(ks[0], (4, *shape))
    x_real = jax.random.normal(ks[1], (5, *shape))
    y_syn, y_real = jnp.arange(4) % 2, jnp.arange(5) % 2

    def unrolled(xs, impl):
        model = get_model("convnet", 2, shape, width=4, depth=1, conv_impl=impl)
        params = model.init(ks[2], xs)["params"]

        def ce(p, x, y):
            logits = model.apply({"params": p}, x)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(len(y)), y])

        @jax.checkpoint
        def step(p, _):
            g = jax.grad(ce)(p, xs, y_syn)
            return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), None

        params, _ = jax.lax.scan(step, params, None, length=2)
        return ce(params, x_real, y_real)

    fn = jax.jit(jax.grad(unrolled), static_argnums=1)
    ref, got = fn(x_syn, "xla"), fn(x_syn, "shifted")
    assert float(jnp.max(jnp.abs(ref))) > 0
    assert _rel_err(got, ref) < 1e-4


def test_shifted_conv_has_no_forward_mode_but_xla_does():
    x = jax.random.normal(KEY, (1, 5, 5, 2))
    w = jax.random.normal(KEY, (3, 3, 2, 2))
    jax.jvp(lambda x: conv2d(x, w, "SAME", "xla"), (x,), (x,))
    with pytest.raises(TypeError):
        jax.jvp(lambda x: conv2d(x, w, "SAME", "shifted"), (x,), (x,))
