"""gold.distill.matching against NumPy versions of the reference formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.distill import matching


def _np_distance_wb(gwr, gws):
    """Reference ``distance_wb`` on PyTorch-layout arrays (O first), in NumPy."""
    shape = gwr.shape
    if len(shape) == 1:
        return 0.0
    gwr = gwr.reshape(shape[0], -1)
    gws = gws.reshape(shape[0], -1)
    num = np.sum(gwr * gws, axis=-1)
    den = np.linalg.norm(gwr, axis=-1) * np.linalg.norm(gws, axis=-1) + 0.000001
    return float(np.sum(1.0 - num / den))


def _torch_layout_grads(rng):
    """Fixed random gradients of a small ConvNet in PyTorch layout."""
    return {
        "conv_0": {"kernel": rng.normal(size=(8, 3, 3, 3)), "bias": rng.normal(size=(8,))},  # O,I,H,W
        "norms_0": {"scale": rng.normal(size=(8,)), "bias": rng.normal(size=(8,))},
        "ln": {"scale": rng.normal(size=(8, 4, 4))},  # C,H,W (reference layernorm)
        "head": {"kernel": rng.normal(size=(10, 32)), "bias": rng.normal(size=(10,))},  # O,I
    }


def _to_flax(tree):
    """PyTorch layout -> Flax layout: conv (O,I,H,W)->(H,W,I,O), dense (O,I)->(I,O),
    layernorm (C,H,W)->(H,W,C)."""
    def conv(a):
        if a.ndim == 4:
            return np.transpose(a, (2, 3, 1, 0))
        if a.ndim == 3:
            return np.transpose(a, (1, 2, 0))
        if a.ndim == 2:
            return a.T
        return a
    return jax.tree.map(lambda a: jnp.asarray(conv(a), jnp.float32), tree)


def test_ours_equals_reference_with_layout_transposition():
    rng = np.random.default_rng(0)
    gr_t, gs_t = _torch_layout_grads(rng), _torch_layout_grads(rng)
    # Make one output row identical and one exactly zero (dead channel).
    gs_t["conv_0"]["kernel"][0] = gr_t["conv_0"]["kernel"][0]
    gs_t["head"]["kernel"][3] = 0.0
    expected = sum(_np_distance_wb(a, b) for a, b in zip(jax.tree.leaves(gr_t), jax.tree.leaves(gs_t)))
    got = matching.gradient_distance(_to_flax(gr_t), _to_flax(gs_t), "ours")
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_ours_ignores_1d_and_is_zero_for_identical():
    rng = np.random.default_rng(1)
    g = _to_flax(_torch_layout_grads(rng))
    np.testing.assert_allclose(float(matching.gradient_distance(g, g, "ours")), 0.0, atol=1e-4)
    other = jax.tree.map(lambda a: a if a.ndim > 1 else a + 100.0, g)
    np.testing.assert_allclose(float(matching.gradient_distance(g, other, "ours")), 0.0, atol=1e-4)


def test_mse_cos_l1_match_numpy():
    rng = np.random.default_rng(2)
    gr_t, gs_t = _torch_layout_grads(rng), _torch_layout_grads(rng)
    gr, gs = _to_flax(gr_t), _to_flax(gs_t)
    vr = np.concatenate([np.ravel(a) for a in jax.tree.leaves(gr)])
    vs = np.concatenate([np.ravel(a) for a in jax.tree.leaves(gs)])
    np.testing.assert_allclose(float(matching.gradient_distance(gr, gs, "mse")),
                               np.sum((vs - vr) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(matching.gradient_distance(gr, gs, "l1")),
                               np.sum(np.abs(vs - vr)), rtol=1e-5)
    cos = 1 - np.sum(vr * vs) / (np.linalg.norm(vr) * np.linalg.norm(vs) + 1e-6)
    np.testing.assert_allclose(float(matching.gradient_distance(gr, gs, "cos")), cos, rtol=1e-5)


def test_gradient_is_finite_at_zero_rows_and_unknown_metric():
    g = {"k": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    r = {"k": jnp.ones((3, 4)), "b": jnp.ones(4)}
    grad = jax.grad(lambda s: matching.gradient_distance(r, s, "ours"))(g)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree.leaves(grad))
    with pytest.raises(ValueError, match="unknown matching metric"):
        matching.gradient_distance(r, g, "euclid")
    with pytest.raises(ValueError, match="structure"):
        matching.gradient_distance(r, {"k": g["k"]}, "ours")


def test_leaf_filter_keeps_only_selected_leaves():
    rng = np.random.default_rng(3)
    gr, gs = _to_flax(_torch_layout_grads(rng)), _to_flax(_torch_layout_grads(rng))
    conv_only = matching.gradient_distance(
        gr, gs, "mse", leaf_filter=lambda path, leaf: "conv_0" in jax.tree_util.keystr(path))
    expected = sum(float(jnp.sum((gs["conv_0"][k] - gr["conv_0"][k]) ** 2)) for k in ("kernel", "bias"))
    np.testing.assert_allclose(float(conv_only), expected, rtol=1e-5)


def test_mean_embedding_distance_matches_numpy_and_masks():
    rng = np.random.default_rng(4)
    er = rng.normal(size=(3, 6, 5)).astype(np.float32)
    es = rng.normal(size=(3, 2, 5)).astype(np.float32)
    expected = sum(np.sum((er[c].mean(0) - es[c].mean(0)) ** 2) for c in range(3))
    np.testing.assert_allclose(float(matching.mean_embedding_distance(er, es)), expected, rtol=1e-5)
    mask = np.ones((3, 6), np.float32)
    mask[1, 4:] = 0.0  # class 1 only has 4 real samples
    er2 = er.copy()
    er2[1, 4:] = 1e3  # padding must not matter
    exp2 = sum(np.sum((er[c][: 4 if c == 1 else 6].mean(0) - es[c].mean(0)) ** 2) for c in range(3))
    np.testing.assert_allclose(float(matching.mean_embedding_distance(er2, es, mask)), exp2, rtol=1e-5)
    # one class, 2-D inputs
    np.testing.assert_allclose(float(matching.mean_embedding_distance(er[0], es[0])),
                               np.sum((er[0].mean(0) - es[0].mean(0)) ** 2), rtol=1e-5)
