"""gold.distill.unroll: scan-unrolled SGD equals a Python loop; remat changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import models as gmodels
from gold import nn as gnn
from gold.distill import unroll as U

SHAPE = (8, 8, 1)


def _setup(n=6, steps=4, batch=3):
    """A tiny 2-layer tanh network on flat parameters (cheap to compile)."""
    d, h, k = 5, 4, 3
    params = {
        "w1": 0.5 * jax.random.normal(jax.random.key(0), (d, h)),
        "b1": jnp.zeros(h),
        "w2": 0.5 * jax.random.normal(jax.random.key(2), (h, k)),
    }
    theta0, unravel = U.flatten_params(params)

    def apply(theta, xb):
        q = unravel(theta)
        return jnp.tanh(xb @ q["w1"] + q["b1"]) @ q["w2"]

    x = jax.random.normal(jax.random.key(1), (n, d))
    y = jnp.arange(n) % k
    idx = jnp.stack([jax.random.permutation(jax.random.key(10 + t), n)[:batch] for t in range(steps)])

    def make_loss(xs):
        def step_loss(theta, b_idx):
            return jnp.mean(gnn.per_sample_cross_entropy(apply(theta, xs[b_idx]), y[b_idx]))

        return step_loss

    return apply, theta0, x, y, idx, make_loss


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 5e-4)])
def test_unroll_equals_python_loop(momentum, wd):
    _, theta0, x, _, idx, make_loss = _setup()
    lr = jnp.float32(0.05)
    loss = make_loss(x)
    res = jax.jit(
        lambda th: U.unroll(loss, th, lr, idx, momentum=momentum, weight_decay=wd, return_trajectory=True)
    )(theta0)

    step = jax.jit(jax.value_and_grad(loss))
    theta, buf, losses = theta0, jnp.zeros_like(theta0), []
    for t in range(idx.shape[0]):
        l, g = step(theta, idx[t])
        g = g + wd * theta
        buf = momentum * buf + g if momentum else g
        theta = theta - lr * buf
        losses.append(l)
        np.testing.assert_allclose(res.trajectory[t], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.params, theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, np.array(losses), rtol=1e-5)


def test_pytree_params_and_per_leaf_lr():
    p = {"a": jnp.ones(3), "b": jnp.full((2,), 2.0)}
    lr = {"a": 0.1, "b": 0.5}
    res = U.unroll(lambda q, _: jnp.sum(q["a"] ** 2) + jnp.sum(q["b"]), p, lr, jnp.zeros(2))
    # a: 1 -> 0.8 -> 0.64; b: 2 -> 1.5 -> 1.0
    np.testing.assert_allclose(res.params["a"], 0.64, rtol=1e-6)
    np.testing.assert_allclose(res.params["b"], 1.0, rtol=1e-6)


def test_remat_and_plain_gradients_agree():
    _, theta0, x, _, idx, make_loss = _setup()
    target = theta0 + 0.01

    def outer(xs, lr, remat):
        res = U.unroll(make_loss(xs), theta0, lr, idx, remat=remat)
        return jnp.sum((res.params - target) ** 2)

    grad = jax.jit(jax.grad(outer, argnums=(0, 1)), static_argnums=2)
    g_remat = grad(x, jnp.float32(0.05), True)
    g_plain = grad(x, jnp.float32(0.05), False)
    assert float(jnp.abs(g_plain[0]).max()) > 0 and float(jnp.abs(g_plain[1])) > 0
    np.testing.assert_allclose(g_remat[0], g_plain[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g_remat[1], g_plain[1], rtol=1e-4)


def test_lr_gradient_matches_finite_difference():
    _, theta0, x, _, idx, make_loss = _setup(steps=2)
    target = theta0 + 0.01

    def outer(lr):
        return jnp.sum((U.unroll(make_loss(x), theta0, lr, idx).params - target) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(outer))
    lr, eps = 0.05, 1e-2
    g = float(value_and_grad(jnp.float32(lr))[1])
    up, down = value_and_grad(jnp.float32(lr + eps))[0], value_and_grad(jnp.float32(lr - eps))[0]
    fd = (float(up) - float(down)) / (2 * eps)
    assert g == pytest.approx(fd, rel=2e-2, abs=1e-6)


def test_flat_apply_matches_model_apply():
    model = gmodels.get_model("convnet", 3, SHAPE, width=4, depth=1, conv_impl="xla")
    apply, p = U.flat_apply_fn(model, SHAPE)
    variables = gnn.init_variables(model, jax.random.key(0), SHAPE)
    theta, _ = U.flatten_params(variables["params"])
    assert p == theta.shape[0] == gnn.count_params(variables)
    x = jax.random.normal(jax.random.key(1), (2, *SHAPE))
    np.testing.assert_allclose(apply(theta, x, True), model.apply(variables, x, train=True),
                               rtol=1e-5, atol=1e-6)


def test_flat_apply_rejects_batchnorm():
    model = gmodels.get_model("convnet", 3, SHAPE, width=4, depth=1, norm="batchnorm")
    with pytest.raises(ValueError, match="batch_stats"):
        U.flat_apply_fn(model, SHAPE)
