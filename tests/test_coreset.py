"""Coreset baselines (gold.selection.coreset) against brute force on tiny problems."""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.selection import coreset as cs


def _rng(seed=0):
    return np.random.default_rng(seed)


def _tiny_inputs(n=60, f=6, k=3, seed=0):
    rng = _rng(seed)
    labels = np.sort(np.arange(n) % k).astype(np.int32)
    feats = rng.normal(size=(n, f)).astype(np.float32)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    w = rng.normal(size=(f, k)).astype(np.float32) * 0.3
    b = rng.normal(size=k).astype(np.float32) * 0.1
    return cs.CoresetInputs(feats, logits, labels, w, b)


# --------------------------------------------------------------- gradient kernel
def test_gradient_gram_equals_explicit_embedding():
    inp = _tiny_inputs()
    g = cs.gradient_embedding(inp.logits, inp.labels, inp.features)
    assert g.shape == (60, 3 + 6 * 3)
    e = cs.logit_errors(inp.logits, inp.labels)
    np.testing.assert_allclose(cs.gradient_gram(e, inp.features), g @ g.T, rtol=1e-4, atol=1e-4)
    gb = cs.gradient_embedding(inp.logits, inp.labels)
    np.testing.assert_allclose(cs.gradient_gram(e), gb @ gb.T, rtol=1e-5, atol=1e-6)


def test_gradient_embedding_is_the_true_last_layer_gradient():
    inp = _tiny_inputs(n=6)
    w, b = jnp.asarray(inp.head_kernel), jnp.asarray(inp.head_bias)
    h = jnp.asarray(inp.features)
    logits = np.asarray(h @ w + b)
    g = cs.gradient_embedding(logits, inp.labels, inp.features)
    for i in range(6):
        def loss(params):
            z = h[i] @ params[0] + params[1]
            return -jax.nn.log_softmax(z)[inp.labels[i]]
        gw, gb = jax.grad(loss)((w, b))
        np.testing.assert_allclose(g[i, :3], gb, atol=1e-5)
        np.testing.assert_allclose(g[i, 3:], np.asarray(gw).reshape(-1), atol=1e-5)


# ------------------------------------------------------------ facility location
def _naive_greedy(sim, k):
    chosen = []
    for _ in range(k):
        best, best_gain = None, -np.inf
        for j in range(sim.shape[0]):
            if j in chosen:
                continue
            gain = cs.facility_location_value(sim, chosen + [j]) - cs.facility_location_value(sim, chosen)
            if gain > best_gain + 1e-9:
                best, best_gain = j, gain
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_facility_location_greedy_matches_naive_and_bound(seed):
    rng = _rng(seed)
    x = rng.normal(size=(9, 2))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    sim = d.max() - d
    k = 3
    order, gains = cs.facility_location_greedy(sim, k)
    assert list(order) == _naive_greedy(sim, k)
    assert np.all(np.diff(gains) <= 1e-5)  # submodular: gains never increase
    greedy_value = cs.facility_location_value(sim, order)
    np.testing.assert_allclose(gains.sum(), greedy_value, rtol=1e-5)
    best = max(cs.facility_location_value(sim, s) for s in itertools.combinations(range(9), k))
    assert greedy_value >= (1 - 1 / math.e) * best - 1e-6
    assert greedy_value <= best + 1e-6


def test_facility_location_known_pick_order():
    # Two tight clusters {0,1,2} and {3,4}: the first pick is the 1-median of all
    # points (minimum total distance: sample 1, pulled towards the far cluster), the
    # second one of the small cluster.
    x = np.array([[0.0], [0.1], [-0.1], [10.0], [10.2]])
    d = np.abs(x - x.T)
    order, _ = cs.facility_location_greedy(d.max() - d, 2)
    assert order[0] == int(np.argmin(d.sum(1))) == 1 and order[1] in (3, 4)


def test_facility_location_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        cs.facility_location_greedy(-np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match="1 <= k"):
        cs.facility_location_greedy(np.ones((3, 3)), 4)


# ---------------------------------------------------------------------------- OMP
def test_omp_refit_equals_least_squares():
    rng = _rng(3)
    a = rng.normal(size=(12, 8))
    b = rng.normal(size=12)
    order, weights = cs.omp_order(a.T @ a, a.T @ b, 4, lam=0.0, positive=False)
    assert order[0] == int(np.argmax(np.abs(a.T @ b)))
    x_ls = np.linalg.lstsq(a[:, order], b, rcond=None)[0]
    np.testing.assert_allclose(weights, x_ls, rtol=1e-6, atol=1e-8)
    # OMP residual is orthogonal to the support.
    r = b - a[:, order] @ weights
    np.testing.assert_allclose(a[:, order].T @ r, 0.0, atol=1e-8)


def test_omp_recovers_sparse_positive_combination():
    rng = _rng(4)
    a = rng.normal(size=(40, 10))
    a /= np.linalg.norm(a, axis=0)
    b = 2.0 * a[:, 3] + 1.0 * a[:, 7]
    order, weights = cs.omp_order(a.T @ a, a.T @ b, 2, positive=True, target_sq_norm=float(b @ b))
    assert set(order.tolist()) == {3, 7}
    np.testing.assert_allclose(sorted(weights), [1.0, 2.0], atol=1e-6)


def test_omp_nonnegative_ridge_matches_brute_force():
    rng = _rng(5)
    a = rng.normal(size=(15, 6))
    b = rng.normal(size=15)
    order, weights = cs.omp_order(a.T @ a, a.T @ b, 3, lam=0.3, positive=True)
    s = order[weights > 0] if np.any(weights > 0) else order[:0]
    # brute-force: minimise ||A_S x - b||^2 + lam ||x||^2 over x >= 0 by NNLS on the
    # augmented system [A_S; sqrt(lam) I] x = [b; 0].
    from scipy.optimize import nnls
    aug = np.vstack([a[:, order], np.sqrt(0.3) * np.eye(len(order))])
    x_ref = nnls(aug, np.concatenate([b, np.zeros(len(order))]))[0]
    assert len(s) >= 1
    np.testing.assert_allclose(weights, x_ref, atol=1e-6)


# ------------------------------------------------------------------------ herding
def test_herding_matches_numpy_loop():
    rng = _rng(6)
    f = rng.normal(size=(30, 5)).astype(np.float32)
    got = cs.herding_order(f, 10)
    mu = f.mean(0)
    chosen, total = [], np.zeros(5)
    for t in range(10):
        best, best_d = None, np.inf
        for j in range(30):
            if j in chosen:
                continue
            dist = np.sum((mu - (total + f[j]) / (t + 1)) ** 2)
            if dist < best_d:
                best, best_d = j, dist
        chosen.append(best)
        total += f[best]
    assert got.tolist() == chosen


# ------------------------------------------------------------------------ GLISTER
def test_glister_matches_autodiff_lookahead():
    inp = _tiny_inputs(n=20, f=4, k=3, seed=7)
    h = jnp.asarray(inp.features, jnp.float64) if jax.config.read("jax_enable_x64") else jnp.asarray(inp.features)
    w0, b0 = jnp.asarray(inp.head_kernel), jnp.asarray(inp.head_bias)
    logits = np.asarray(h @ w0 + b0)
    members = np.arange(20)
    val = np.arange(0, 20, 2)
    errors = cs.logit_errors(logits, inp.labels)
    eta = 0.5
    got = cs.glister_order(inp.features, errors, inp.features[val], inp.labels[val],
                           inp.head_kernel, inp.head_bias, 4, eta=eta)

    def val_loss(params):
        z = h[val] @ params[0] + params[1]
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(z), jnp.asarray(inp.labels[val])[:, None], 1))

    def sample_grad(i):
        def loss(params):
            z = h[i] @ params[0] + params[1]
            return -jax.nn.log_softmax(z)[inp.labels[i]]
        return jax.grad(loss)((w0, b0))

    grads = [sample_grad(i) for i in members]
    params = (w0, b0)
    chosen = []
    for _ in range(4):
        gv = jax.grad(val_loss)(params)
        gains = [float(jnp.sum(g[0] * gv[0]) + jnp.sum(g[1] * gv[1])) if i not in chosen else -np.inf
                 for i, g in enumerate(grads)]
        j = int(np.argmax(gains))
        chosen.append(j)
        params = (params[0] - eta * grads[j][0], params[1] - eta * grads[j][1])
    assert got.tolist() == chosen


# ------------------------------------------------------------------------- k-means
def test_kmeans_select_picks_one_sample_per_cluster():
    rng = _rng(8)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    f = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres]).astype(np.float32)
    idx = cs.kmeans_select(f, 3, jax.random.key(0))
    assert sorted(i // 10 for i in idx) == [0, 1, 2]
    assert len(set(idx.tolist())) == 3


# --------------------------------------------------------------- class-wise driver
@pytest.mark.parametrize("method", cs.METHODS)
def test_coreset_select_is_classwise_with_budgets(method):
    inp = _tiny_inputs(n=60, f=5, k=3, seed=9)
    idx = cs.coreset_select(method, inp, 3, 0.2, jax.random.key(1), val_size=15)
    assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(inp.labels[idx], minlength=3), [4, 4, 4])


@pytest.mark.parametrize("method", cs.NESTED)
def test_order_scores_reproduce_selection_prefixes(method):
    inp = _tiny_inputs(n=60, f=5, k=3, seed=10)
    key = jax.random.key(2)
    scores = cs.coreset_order_scores(method, inp, 3, 0.5, key, val_size=15)
    for ratio in (0.1, 0.25, 0.5):
        want = cs.coreset_select(method, inp, 3, ratio, key, val_size=15)
        got = []
        for c in range(3):
            m = np.flatnonzero(inp.labels == c)
            kc = int(cs.class_budgets(inp.labels, 3, ratio)[c])
            got.append(m[np.argsort(-scores[m], kind="stable")[:kc]])
        np.testing.assert_array_equal(np.sort(np.concatenate(got)), want)


def test_bad_method_and_ratio():
    inp = _tiny_inputs()
    with pytest.raises(ValueError, match="unknown coreset method"):
        cs.coreset_select("nope", inp, 3, 0.1, jax.random.key(0))
    with pytest.raises(ValueError, match="ratio"):
        cs.coreset_select("herding", inp, 3, 0.0, jax.random.key(0))
    with pytest.raises(ValueError, match="not nested"):
        cs.coreset_order_scores("kmeans", inp, 3, 0.1, jax.random.key(0))


class _Tiny(nn.Module):
    num_classes: int = 3

    def setup(self):
        self.body = nn.Dense(4)
        self.head = nn.Dense(self.num_classes)

    def embed(self, x, train=False):
        return nn.relu(self.body(x.reshape(x.shape[0], -1)))

    def __call__(self, x, train=False):
        return self.head(self.embed(x, train))


def test_classifier_outputs_shapes_and_consistency():
    model = _Tiny()
    x = np.random.default_rng(0).normal(size=(7, 2, 2, 1)).astype(np.float32)
    v = model.init(jax.random.key(0), jnp.asarray(x))
    out = cs.classifier_outputs(model, v, x, np.zeros(7, np.int32), batch_size=3)
    assert out.features.shape == (7, 4) and out.logits.shape == (7, 3)
    np.testing.assert_allclose(out.features @ out.head_kernel + out.head_bias, out.logits, atol=1e-5)
