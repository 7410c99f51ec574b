"""gold.utility: smoothing, loss-family training, feature indicators, artifacts, diversity."""

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import scipy.ndimage
from scipy.stats import rankdata

from gold import data as gdata
from gold import models as gmodels
from gold import nn as gnn
from gold import utility as gu
from gold.utility import features as gfeat
from gold.utility import loss as gloss



def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """P(score_pos > score_neg) via ranks (Mann-Whitney U / (n_pos n_neg))."""
    r = rankdata(np.concatenate([scores_pos, scores_neg]))
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return float((r[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits")


def tiny_model(num_classes=10, width=8, depth=2):
    return gmodels.get_model("convnet", num_classes, (8, 8, 1), width=width, depth=depth)


# ------------------------------------------------------------------------ smoothing
@pytest.mark.parametrize("n", [1, 2, 5, 13, 50])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap"])
def test_smoothing_matches_scipy(n, sigma, mode):
    x = np.random.default_rng(n).normal(size=(n, 6))
    expected = scipy.ndimage.gaussian_filter1d(x, sigma, axis=0, mode=mode)
    np.testing.assert_allclose(gu.gaussian_smooth(x, sigma, mode=mode), expected, atol=1e-12)


def test_smoothing_jax_and_default_mode_and_truncate():
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    expected = scipy.ndimage.gaussian_filter1d(x, 3.0, axis=0)  # default: reflect, truncate 4
    np.testing.assert_allclose(np.asarray(gu.gaussian_smooth(jax.numpy.asarray(x), 3.0)), expected, atol=1e-5)
    expected_t = scipy.ndimage.gaussian_filter1d(x, 2.0, axis=0, truncate=1.5)
    np.testing.assert_allclose(gu.gaussian_smooth(x, 2.0, truncate=1.5), expected_t, atol=1e-5)
    np.testing.assert_array_equal(gu.gaussian_smooth(x, 0.0), x)


def test_smoothed_value_truncates_then_smooths():
    curve = np.random.default_rng(1).normal(size=(10, 4))
    v = gu.smoothed_value(curve, 3.0, epoch=5)
    np.testing.assert_allclose(v, scipy.ndimage.gaussian_filter1d(curve[:5], 3.0, axis=0)[-1])
    np.testing.assert_allclose(gu.loss_scores(curve, 3.0), -scipy.ndimage.gaussian_filter1d(curve, 3.0, axis=0)[-1],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="epoch"):
        gu.smoothed_value(curve, 3.0, epoch=11)
    with pytest.raises(ValueError, match="sigma"):
        gu.gaussian_smooth(curve, -1.0)


# ------------------------------------------------------------------- loss training
_EQ_KEY = 7
_EQ_SETTINGS = dict(trials=2, epochs=3, lr=0.05, batch_size=64, optimizer="sgd")


@pytest.fixture(scope="module")
def sequential_reference(digits):
    """The two trials as separate ``gold.nn.fit`` runs (the fit_many key schedule)."""
    x, y = jax.numpy.asarray(digits.x_train[:192]), jax.numpy.asarray(digits.y_train[:192])
    model = tiny_model()
    tx = gloss.TrainSettings(**_EQ_SETTINGS).optimizer_fn()
    fit = jax.jit(lambda v, k: gnn.fit(model, tx, v, x, y, k, epochs=3, batch_size=64, record=True))
    recs = []
    for t in range(2):
        kt = jax.random.fold_in(jax.random.key(_EQ_KEY), t)
        recs.append(fit(gnn.init_variables(model, jax.random.fold_in(kt, 0), x.shape[1:]), jax.random.fold_in(kt, 1)))
    return x, y, model, recs


@pytest.mark.parametrize("mode", ["vmap", "unroll"])
def test_vmapped_trials_equal_sequential_fit(sequential_reference, mode):
    """T trials in one program epoch by epoch (in chunks) == T separate gold.nn.fit runs.

    SGD (not Adam, whose normalisation amplifies float noise in ~0 gradients) keeps the
    comparison of the final weights tight. vmap: both trials in one chunk; unroll: one
    trial per chunk (chunking changes nothing).
    """
    x, y, model, recs = sequential_reference
    settings = gloss.TrainSettings(**_EQ_SETTINGS, trials_per_chunk=0 if mode == "vmap" else 1,
                                   trial_mode=mode)
    steps = []
    stats = gloss.train_trials(model, x, y, jax.random.key(_EQ_KEY), settings,
                               log=lambda s, d: steps.append((s, d["epoch"])))
    expected_steps = [(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3)] if mode == "unroll" else [(1, 1), (2, 2), (3, 3)]
    assert steps == expected_steps  # a progress line per epoch (and chunk)
    first = recs[0].variables
    loss = np.mean([np.asarray(r.record.loss) for r in recs], 0)
    np.testing.assert_allclose(stats.loss_curve, loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.el2n_curve, np.mean([np.asarray(r.record.el2n) for r in recs], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.correct_curve, np.mean([np.asarray(r.record.correct) for r in recs], 0))
    np.testing.assert_allclose(stats.train_loss, np.stack([np.asarray(r.epoch_loss) for r in recs]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(stats.variables), jax.tree.leaves(first)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # Forgetting from the same records, by hand.
    forget = []
    for r in recs:
        c = np.asarray(r.record.correct) > 0.5
        f = np.sum(c[:-1] & ~c[1:], 0)
        forget.append(np.where(c.any(0), f, 3))
    np.testing.assert_allclose(stats.forgetting, np.mean(forget, 0))


def test_forgetting_and_el2n_scores():
    el2n = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_array_equal(gu.el2n_scores(el2n), -el2n[0])  # ceil(10/10) = epoch 1
    np.testing.assert_array_equal(gu.el2n_scores(el2n, 4), -el2n[3])
    np.testing.assert_array_equal(gu.el2n_scores(el2n, -1), -el2n[-1])
    np.testing.assert_array_equal(gu.forgetting_scores(np.array([0.0, 2.5])), [0.0, -2.5])
    assert gloss.default_el2n_epoch(50) == 5


def test_loss_indicator_puts_flipped_labels_at_the_bottom(gold_data_dir):
    """5% of 3,000 real MNIST labels flipped: the loss indicator (2 trials x 2 epochs,
    width 16) must give them low utility (AUROC >= 0.9)."""
    ds = gdata.load_dataset("mnist", str(gold_data_dir), train_per_class=300)
    n = len(ds.y_train)
    assert n == 3000
    rng = np.random.default_rng(0)
    flipped = rng.choice(n, n // 20, replace=False)
    y = ds.y_train.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    noisy = dataclasses.replace(ds, y_train=y)
    cfg = ml_collections.ConfigDict(dict(trials=2, epochs=2, lr=3e-3, batch_size=128,
                                         save_features=False, seed=0,
                                         model=dict(name="convnet", width=16, depth=3, norm="instancenorm")))
    u = gu.compute_utility("loss", noisy, cfg, jax.random.key(0), log=None)
    assert u.scores.shape == (n,) and u.curve.shape == (2, n)
    is_flip = np.zeros(n, bool)
    is_flip[flipped] = True
    # Low utility = positive class: AUROC of (-score) for flipped vs clean.
    assert auroc(-u.scores[is_flip], -u.scores[~is_flip]) >= 0.9
    # The el2n and forgetting by-products of the same run also rank them low.
    el2n = gu.scores_from_record("el2n", u, el2n_epoch=2)
    assert auroc(-el2n.scores[is_flip], -el2n.scores[~is_flip]) >= 0.9


# ------------------------------------------------------------------ feature indicators
def _blobs(n_per=60, classes=3, f=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n_per + 7 * c, f)) * (1 + c) + 10 * c for c in range(classes)])
    y = np.concatenate([np.full(n_per + 7 * c, c) for c in range(classes)]).astype(np.int32)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def test_knn_density_matches_brute_force():
    x, y = _blobs()
    k = 5
    got = gfeat.knn_mean_distance(x, y, 3, k, block=16)
    expected = np.zeros(len(y))
    for i in range(len(y)):
        same = np.flatnonzero((y == y[i]) & (np.arange(len(y)) != i))
        d = np.sort(np.linalg.norm(x[same] - x[i], axis=1))
        expected[i] = d[:k].mean()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gu.density_scores(x, y, 3, k), -expected, rtol=1e-4, atol=1e-4)


def test_knn_against_sklearn_and_k_too_large():
    from sklearn.neighbors import NearestNeighbors

    x, y = _blobs(n_per=40, classes=2, f=8, seed=3)
    got = gfeat.knn_mean_distance(x, y, 2, 7)
    for c in range(2):
        m = y == c
        d, _ = NearestNeighbors(n_neighbors=8).fit(x[m]).kneighbors(x[m])
        np.testing.assert_allclose(got[m], d[:, 1:].mean(1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="too large"):
        gfeat.knn_mean_distance(x, y, 2, 40)


def test_lloyd_matches_sklearn_from_the_same_init():
    from sklearn.cluster import KMeans

    x, _ = _blobs(n_per=80, classes=1, f=4, seed=1)
    init = x[:6].copy()
    res = gfeat.lloyd(jax.numpy.asarray(x), jax.numpy.asarray(init), max_iter=300, block=32)
    km = KMeans(6, init=init, n_init=1, max_iter=300, tol=0, algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(np.asarray(res.assign), km.labels_)
    np.testing.assert_allclose(np.asarray(res.centres), km.cluster_centers_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(res.inertia), km.inertia_, rtol=1e-4)
    d = np.min(np.linalg.norm(x[:, None] - km.cluster_centers_[None], axis=-1), 1)
    np.testing.assert_allclose(np.asarray(res.dist), d, rtol=1e-4, atol=1e-4)


def test_kmeans_plusplus_quality_and_padding():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 3)) * 20
    x = np.concatenate([c + rng.normal(size=(50, 3)) for c in centres]).astype(np.float32)
    sk = KMeans(8, n_init=10, random_state=0).fit(x)
    for seed in range(3):
        res = gfeat.kmeans(jax.random.key(seed), x, 8)
        assert float(res.inertia) <= 1.05 * sk.inertia_
    # Padding rows (valid=False) change nothing.
    xp = np.concatenate([x, np.full((37, 3), 1e3, np.float32)])
    valid = np.arange(len(xp)) < len(x)
    res_p = gfeat.kmeans(jax.random.key(0), xp, 8, valid)
    assert float(res_p.inertia) <= 1.05 * sk.inertia_
    assert set(np.asarray(res_p.assign[:len(x)]).tolist()) == set(range(8))
    with pytest.raises(ValueError, match="K=9"):
        gfeat.kmeans(jax.random.key(0), x[:8], 9)


def test_cluster_distance_per_class():
    from sklearn.cluster import KMeans

    x, y = _blobs(n_per=50, classes=3, f=4, seed=2)
    key = jax.random.key(1)
    d = gfeat.cluster_distance(x, y, 3, 4, key, block=16)
    blocks = gfeat.class_blocks(x, y, 3, 16)
    for c in range(3):
        m = y == c
        res = gfeat.kmeans(jax.random.fold_in(key, c), blocks.feats[c], 4, blocks.valid[c], block=16)
        cents = np.asarray(res.centres) + x[m].mean(0)  # class_blocks centres each class
        expected = np.min(np.linalg.norm(x[m][:, None] - cents[None], axis=-1), 1)
        np.testing.assert_allclose(d[m], expected, rtol=1e-3, atol=1e-3)
        sk = KMeans(4, n_init=10, random_state=0).fit(x[m])
        assert np.sum(d[m] ** 2) <= 1.2 * sk.inertia_
    with pytest.raises(ValueError, match="larger than class"):
        gfeat.cluster_distance(x, y, 3, 51, key)


def test_init_distance_and_default_init_indices():
    x, y = _blobs(n_per=30, classes=3, f=3, seed=4)
    init = gfeat.default_init_indices(jax.random.key(0), y, 3, ipc=2)
    assert len(init) == 6 and np.all(np.bincount(y[init], minlength=3) == 2)
    np.testing.assert_array_equal(init, gfeat.default_init_indices(jax.random.key(0), y, 3, ipc=2))
    d = gu.init_distance(x, y, 3, init)
    for i in range(len(y)):
        ref = init[y[init] == y[i]]
        assert abs(d[i] - np.min(np.linalg.norm(x[ref] - x[i], axis=1))) < 1e-4
    assert np.all(d[init] < 1e-4)
    with pytest.raises(ValueError, match="no init image of class"):
        gu.init_distance(x, y, 3, init[y[init] != 2])


def test_gap_features_are_mean_of_last_block(digits):
    model = tiny_model()
    v = gnn.init_variables(model, jax.random.key(0), (8, 8, 1))
    x = digits.x_train[:50]
    f = gu.gap_features(model, v, x, batch_size=16)
    last = model.apply(v, x, method=lambda m, z: m.features(z)[-1])
    np.testing.assert_allclose(f, np.asarray(last).mean((1, 2)), rtol=1e-5, atol=1e-6)
    assert f.shape == (50, 8)


# ------------------------------------------------------------------------ diversity
def test_diversity_definition_and_outliers():
    f = np.array([[0.0, 0], [2, 0], [10, 0], [12, 0]])
    y = np.array([0, 0, 1, 1])
    st = gu.diversity(f, y)
    assert st.intra == pytest.approx(1.0)           # each point 1 away from its centroid
    assert st.inter == pytest.approx(25.0)          # centroids 1 and 11 -> 5^2
    assert st.diversity == pytest.approx(0.04)
    assert gu.diversity(f * 3, y).diversity == pytest.approx(0.04)  # scale invariant
    with pytest.raises(ValueError, match="two classes"):
        gu.diversity(f, y, indices=[0, 1])
    rng = np.random.default_rng(0)
    g = rng.normal(size=(500, 2))
    g[:5] = [[30, 0], [0, 30], [-30, 0], [0, -30], [25, 25]]
    mask = gu.outlier_mask(g, np.zeros(500, int), 1)
    assert mask[:5].all() and mask[5:].sum() < 30
    assert gu.count_outliers(mask, np.arange(5, 500)) == mask[5:].sum()


# ------------------------------------------------------------------------ artifacts
def test_utility_roundtrip_and_checks(tmp_path):
    n = 12
    u = gu.Utility(scores=np.linspace(-1, 1, n), labels=np.arange(n) % 3, ids=np.arange(n) + 100,
                   indicator="loss", dataset="digits", settings={"sigma": 3.0}, seed=4, seconds=1.5,
                   curve=np.ones((2, n)), extras={"forgetting": np.zeros(n)})
    path = gu.save_utility(str(tmp_path), u)
    assert path.endswith("utility.npz") and os.path.exists(str(tmp_path / "utility.json"))
    meta = json.load(open(tmp_path / "utility.json"))
    assert meta["indicator"] == "loss" and meta["num_samples"] == n and meta["seed"] == 4
    v = gu.load_utility(path)
    np.testing.assert_array_equal(v.scores, u.scores.astype(np.float32))
    np.testing.assert_array_equal(v.ids, u.ids)
    assert v.curve.shape == (2, n) and "forgetting" in v.extras and v.settings == {"sigma": 3.0}
    gu.check_utility(v, "digits", np.arange(n) % 3)
    with pytest.raises(ValueError, match="12 scores but dataset"):
        gu.check_utility(v, "digits", np.zeros(13))
    with pytest.raises(ValueError, match="computed on dataset 'digits'"):
        gu.check_utility(v, "mnist", np.arange(n) % 3)
    with pytest.raises(ValueError, match="labels differ"):
        gu.check_utility(v, "digits", (np.arange(n) + 1) % 3)
    with pytest.raises(ValueError, match="non-finite"):
        gu.Utility(scores=np.array([0.0, np.nan]), labels=[0, 1], ids=[0, 1], indicator="loss")
    with pytest.raises(FileNotFoundError):
        gu.load_utility(str(tmp_path / "missing.npz"))


def test_unknown_indicator_and_impossible_k(digits):
    with pytest.raises(ValueError, match="unknown indicator"):
        gu.compute_utility("nope", digits, None, jax.random.key(0))
    with pytest.raises(ValueError, match="monte_carlo"):
        gu.compute_utility("monte_carlo", digits, None, jax.random.key(0))
    with pytest.raises(ValueError, match="knn_k=500"):
        gu.compute_utility("density", digits, {"knn_k": 500}, jax.random.key(0))
    with pytest.raises(ValueError, match="num_clusters=500"):
        gu.compute_utility("cluster", digits, {"num_clusters": 500}, jax.random.key(0))


def test_run_writes_artifacts_and_feature_indicators(tmp_path, digits):
    """The launcher function end to end on the 8x8 digits, then every feature indicator."""
    import configs.utility as cu

    cfg = cu.get_config("digits")
    cfg.trials, cfg.epochs, cfg.batch_size = 2, 2, 128
    cfg.model.width, cfg.model.depth = 8, 2
    result = gu.run(cfg, str(tmp_path))
    assert result["indicator"] == "loss" and result["num_samples"] == 1437
    for name in ("config.json", "result.json", "utility.npz", "utility.json", "metrics.csv"):
        assert os.path.exists(tmp_path / name)
    u = gu.load_utility(str(tmp_path / "utility.npz"))
    assert u.curve.shape == (2, 1437) and u.extras["features"].shape == (1437, 8)
    assert u.extras["el2n_curve"].shape == (2, 1437) and u.extras["forgetting"].shape == (1437,)
    gu.check_utility(u, "digits", digits.y_train)
    # Re-deriving the loss at another epoch / sigma needs no retraining.
    u1 = gu.scores_from_record("loss", u, epoch=1, sigma=0.0)
    np.testing.assert_allclose(u1.scores, -u.curve[0])
    # Feature indicators from the saved GAP features (trial 0's network) ...
    f = u.extras["features"]
    np.testing.assert_allclose(gu.density_scores(f, u.labels, 10, 5), -gu.knn_mean_distance(f, u.labels, 10, 5))
    assert np.all(gu.cluster_scores(f, u.labels, 10, 4, jax.random.key(0)) <= 0)
    # ... and one through compute_utility (the same training path serves all three).
    small = dict(trials=1, epochs=1, batch_size=128, ipc=2, save_features=False,
                 model=ml_collections.ConfigDict(dict(name="convnet", width=8, depth=2, norm="instancenorm")))
    v = gu.compute_utility("init_distance", digits, ml_collections.ConfigDict(small), jax.random.key(0), log=None)
    assert v.scores.shape == (1437,) and np.all(v.scores <= 0) and np.all(np.isfinite(v.scores))
    assert len(v.extras["init_indices"]) == 20 and "features" not in v.extras
    np.testing.assert_allclose(v.scores[v.extras["init_indices"]], 0.0, atol=1e-3)
