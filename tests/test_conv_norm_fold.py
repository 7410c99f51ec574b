"""gold.models.conv.conv_instance_norm: a first conv + instance norm computed from the
patches equals the two-step form (values, gradients, grad-of-grad, vmap over networks),
and ConvNet's folded first layer gives the plain XLA network's outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.models import FastConv, InstanceNorm, get_model
from gold.models.conv import _per_sample_matmul, conv_instance_norm, normalize_padding


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


def _two_step(x, w, padding, scale, bias, eps=1e-5):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return InstanceNorm(eps).apply({"params": {"scale": scale, "bias": bias}}, y)


def _inputs(c, o=6, n=3, hw=(9, 8), seed=0):
    r = np.random.default_rng(seed)
    x = jnp.asarray(r.normal(size=(n, *hw, c)), jnp.float64)
    w = jnp.asarray(r.normal(size=(3, 3, c, o)) / 3, jnp.float64)
    scale = jnp.asarray(1 + 0.2 * r.normal(size=o), jnp.float64)
    bias = jnp.asarray(0.1 * r.normal(size=o), jnp.float64)
    return x, w, scale, bias


@pytest.mark.parametrize("c,pad", [(1, "SAME"), (3, "SAME"), (1, "VALID"), (2, ((0, 2), (1, 0)))])
def test_equals_conv_then_instance_norm(c, pad):
    with jax.enable_x64():
        x, w, scale, bias = _inputs(c)
        padding = normalize_padding(pad, (3, 3))
        ref = _two_step(x, w, padding, scale, bias)
        assert _rel(conv_instance_norm(x, w, padding, scale, bias, 1e-5), ref) < 1e-12
        # differentiated forward (batched matmul) = evaluated forward (fused multiply-adds)
        y, _ = jax.vjp(lambda x, w, s, b: conv_instance_norm(x, w, padding, s, b, 1e-5), x, w, scale, bias)
        assert _rel(y, ref) < 1e-12

        def loss(f):
            def total(x, w, s, b):
                y = f(x, w, s, b)
                return jnp.sum(jnp.tanh(y) * (1 + jnp.arange(y.size).reshape(y.shape) % 7))
            return total

        fold = loss(lambda x, w, s, b: conv_instance_norm(x, w, padding, s, b, 1e-5))
        two = loss(lambda x, w, s, b: _two_step(x, w, padding, s, b))
        for g, r in zip(jax.grad(fold, (0, 1, 2, 3))(x, w, scale, bias),
                        jax.grad(two, (0, 1, 2, 3))(x, w, scale, bias)):
            assert _rel(g, r) < 1e-10


def test_grad_of_grad_wrt_images_as_gradient_matching_needs():
    """DC differentiates the weight gradient w.r.t. the synthetic images."""
    with jax.enable_x64():
        x, w, scale, bias = _inputs(1, n=2)
        padding = normalize_padding("SAME", (3, 3))
        target = jnp.ones_like(w)

        def matching(f):
            def inner(w, x):
                return jnp.sum(jnp.tanh(f(x, w)) ** 2)
            return lambda x: jnp.sum((jax.grad(inner)(w, x) - target) ** 2)

        fold = matching(lambda x, w: conv_instance_norm(x, w, padding, scale, bias, 1e-5))
        two = matching(lambda x, w: _two_step(x, w, padding, scale, bias))
        assert _rel(jax.grad(fold)(x), jax.grad(two)(x)) < 1e-9


def test_per_sample_matmul_under_vmap_and_grad():
    r = np.random.default_rng(1)
    p = jnp.asarray(r.normal(size=(4, 2, 5, 3)), jnp.float32)   # [K, N, P, k]
    w = jnp.asarray(r.normal(size=(4, 2, 3, 7)), jnp.float32)   # [K, N, k, O]
    b = jnp.asarray(r.normal(size=(4, 2, 7)), jnp.float32)
    ref = jnp.einsum("knpj,knjo->knpo", p, w) + b[:, :, None, :]
    assert _rel(jax.vmap(_per_sample_matmul)(p, w, b), ref) < 1e-6
    g = jax.grad(lambda p, w, b: jnp.sum(jnp.sin(jax.vmap(_per_sample_matmul)(p, w, b))), (0, 1, 2))(p, w, b)
    gr = jax.grad(lambda p, w, b: jnp.sum(jnp.sin(jnp.einsum("knpj,knjo->knpo", p, w) + b[:, :, None, :])),
                  (0, 1, 2))(p, w, b)
    for a, c in zip(g, gr):
        assert _rel(a, c) < 1e-5


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_convnet_first_layer_fold_matches_xla_network(shape):
    fast = get_model("convnet", 10, shape, width=16, conv_impl="shifted")
    plain = get_model("convnet", 10, shape, width=16, conv_impl="xla")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, *shape)), jnp.float32)
    v = fast.init(jax.random.key(0), x[:1])
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, plain.init(jax.random.key(0), x[:1]))
    assert _rel(fast.apply(v, x), plain.apply(v, x)) < 1e-5
    # K networks vmapped over their variables (the evaluation's layout)
    vk = jax.vmap(lambda k: fast.init(k, x[:1]))(jax.random.split(jax.random.key(1), 2))
    out = jax.vmap(lambda v: fast.apply(v, x))(vk)
    ref = jax.vmap(lambda v: plain.apply(v, x))(vk)
    assert _rel(out, ref) < 1e-5
    g = jax.grad(lambda v: jnp.sum(fast.apply(v, x) ** 2))(v)["params"]
    gr = jax.grad(lambda v: jnp.sum(plain.apply(v, x) ** 2))(v)["params"]
    for name in ("conv_0", "norms_0", "conv_1", "head"):
        for leaf in g[name]:
            if (name, leaf) == ("conv_0", "bias"):
                assert float(jnp.max(jnp.abs(g[name][leaf]))) == 0.0  # cancelled by the norm
                continue
            assert _rel(g[name][leaf], gr[name][leaf]) < 1e-4, (name, leaf)


def test_fold_refused_where_it_does_not_apply():
    x = jnp.zeros((1, 8, 8, 16), jnp.float32)   # 9 * 16 > 64 columns
    conv = FastConv(4, impl="shifted")
    assert not conv.folds_instance_norm(16) and conv.folds_instance_norm(3)
    assert not FastConv(4, impl="xla").folds_instance_norm(1)
    with pytest.raises(ValueError, match="cannot compute an instance norm"):
        conv.init(jax.random.key(0), x, instance_norm=(jnp.ones(4), jnp.zeros(4), 1e-5))
