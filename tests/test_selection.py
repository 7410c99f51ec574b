"""gold.selection: class-wise policies, score files, select_from_config, runtime pruning."""

import itertools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gold import selection as gs
from gold import utility as gu


def toy(n_per=(10, 7, 13), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per)])
    perm = rng.permutation(len(labels))
    labels = labels[perm].astype(np.int32)
    scores = rng.normal(size=len(labels))
    return labels, scores


class FakeDataset:
    """The attributes select_from_config reads."""

    def __init__(self, labels, name="toy"):
        self.y_train = labels
        self.num_classes = int(labels.max()) + 1
        self.name = name


# ------------------------------------------------------------------------- policies
@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_greedy_keeps_round_ratio_top_per_class(ratio):
    labels, scores = toy()
    idx = gs.select(None, labels, 3, policy="greedy", ratio=ratio, scores=scores)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    for c in range(3):
        members = np.flatnonzero(labels == c)
        k = max(int(np.floor(ratio * len(members) + 0.5)), 1)
        kept = np.intersect1d(idx, members)
        assert len(kept) == k
        top = members[np.argsort(-scores[members], kind="stable")[:k]]
        np.testing.assert_array_equal(np.sort(kept), np.sort(top))


def test_greedy_rounding_min_per_class_and_ties():
    labels = np.array([0] * 10 + [1] * 5)
    scores = np.zeros(15)  # all tied: lowest indices win
    idx = gs.select(None, labels, 2, policy="greedy", ratio=0.25, scores=scores)
    np.testing.assert_array_equal(idx, [0, 1, 2, 10])  # round(2.5) = 3 (half up), round(1.25) = 1
    idx = gs.select(None, labels, 2, policy="greedy", ratio=0.1, scores=scores, min_per_class=4)
    np.testing.assert_array_equal(idx, [0, 1, 2, 3, 10, 11, 12, 13])
    assert gs.round_half_up(0.5) == 1 and gs.round_half_up(2.5) == 3


def test_random_policy_is_deterministic_per_key_and_balanced():
    labels, _ = toy()
    a = gs.select(jax.random.key(0), labels, 3, policy="random", ratio=0.5)
    b = gs.select(jax.random.key(0), labels, 3, policy="random", ratio=0.5)
    c = gs.select(jax.random.key(1), labels, 3, policy="random", ratio=0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.bincount(labels[a]), [5, 4, 7])


@pytest.mark.parametrize("num_strata", [1, 3, 4, 10])
def test_stratify_partitions_every_class(num_strata):
    labels, scores = toy(n_per=(23, 17, 30))
    parts = [gs.select(None, labels, 3, policy="stratify", scores=scores, stratum=s, num_strata=num_strata)
             for s in range(1, num_strata + 1)]
    all_idx = np.concatenate(parts)
    assert len(all_idx) == len(labels) and len(np.unique(all_idx)) == len(labels)  # union, disjoint
    for c in range(3):
        sizes = [np.sum(labels[p] == c) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        # Ordering: every sample of S_s has utility <= every sample of S_{s+1}.
        for lo, hi in zip(parts[:-1], parts[1:]):
            assert scores[lo[labels[lo] == c]].max() <= scores[hi[labels[hi] == c]].min()


def test_stratify_boundaries_are_the_official_ones():
    np.testing.assert_array_equal(gs.strata_bounds(10, 3), [0, 3, 6, 10])
    labels = np.zeros(10, int)
    scores = np.arange(10.0)
    np.testing.assert_array_equal(
        gs.select(None, labels, 1, policy="stratify", scores=scores, stratum=1, num_strata=3), [0, 1, 2])
    np.testing.assert_array_equal(
        gs.select(None, labels, 1, policy="stratify", scores=scores, stratum=3, num_strata=3), [6, 7, 8, 9])


def test_cluster_quotas():
    np.testing.assert_array_equal(gs.cluster_quotas([10, 10], 4), [2, 2])
    np.testing.assert_array_equal(gs.cluster_quotas([90, 5, 5], 10), [8, 1, 1])
    np.testing.assert_array_equal(gs.cluster_quotas([1, 0, 20], 10), [1, 0, 9])
    q = gs.cluster_quotas([3, 50, 7, 0, 12], 33)
    assert q.sum() == 33 and np.all(q <= [3, 50, 7, 0, 12])
    assert gs.cluster_quotas([2, 2], 9).sum() == 4


def test_greedy_diverse_covers_clusters_with_top_utility():
    rng = np.random.default_rng(0)
    # One class: a big easy blob (high utility) and two small far blobs (lower utility).
    blobs = [rng.normal(size=(80, 2)), rng.normal(size=(10, 2)) + 40, rng.normal(size=(10, 2)) - 40]
    feats = np.concatenate(blobs).astype(np.float32)
    scores = np.concatenate([5 + rng.random(80), rng.random(10), rng.random(10)])
    labels = np.zeros(100, int)
    greedy = gs.select(None, labels, 1, policy="greedy", ratio=0.03, scores=scores)
    assert np.all(greedy < 80)  # plain greedy: all from the easy blob
    div = gs.select(jax.random.key(0), labels, 1, policy="greedy_diverse", ratio=0.03, scores=scores,
                    features=feats)
    assert len(div) == 3
    assert sorted([int(i) // 10 if i >= 80 else -1 for i in div]) == [-1, 8, 9]  # one per blob
    assert div[0] == np.argmax(scores[:80])  # the best of the easy blob
    for blob in (8, 9):
        members = np.arange(80 + (blob - 8) * 10, 90 + (blob - 8) * 10)
        assert members[np.argmax(scores[members])] in div  # top utility inside each cluster
    again = gs.select(jax.random.key(0), labels, 1, policy="greedy_diverse", ratio=0.03, scores=scores,
                      features=feats)
    np.testing.assert_array_equal(div, again)
    big = gs.select(jax.random.key(0), labels, 1, policy="greedy_diverse", ratio=0.5, scores=scores,
                    features=feats, num_clusters=3)
    assert len(big) == 50


# ------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    labels, scores = toy()
    with pytest.raises(ValueError, match="ratio must be in"):
        gs.select(None, labels, 3, policy="greedy", ratio=0.0, scores=scores)
    with pytest.raises(ValueError, match="ratio must be in"):
        gs.select(None, labels, 3, policy="greedy", ratio=1.5, scores=scores)
    with pytest.raises(ValueError, match="fewer than min_per_class"):
        gs.select(None, labels, 3, policy="greedy", ratio=0.5, scores=scores, min_per_class=8)
    with pytest.raises(ValueError, match="dataset has 30 samples"):
        gs.select(None, labels, 3, policy="greedy", ratio=0.5, scores=scores[:-1])
    bad = scores.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gs.select(None, labels, 3, policy="greedy", ratio=0.5, scores=bad)
    with pytest.raises(ValueError, match="needs per-sample utility"):
        gs.select(None, labels, 3, policy="greedy", ratio=0.5)
    with pytest.raises(ValueError, match="unknown selection policy"):
        gs.select(None, labels, 3, policy="best", ratio=0.5, scores=scores)
    with pytest.raises(ValueError, match="stratum must be in"):
        gs.select(None, labels, 3, policy="stratify", scores=scores, stratum=0, num_strata=3)
    with pytest.raises(ValueError, match="stratum 1/4 of class 1 has 1 samples"):
        gs.select(None, labels, 3, policy="stratify", scores=scores, stratum=1, num_strata=4, min_per_class=2)
    with pytest.raises(ValueError, match="needs per-sample features"):
        gs.select(jax.random.key(0), labels, 3, policy="greedy_diverse", ratio=0.5, scores=scores)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        gs.select(None, labels, 3, policy="random", ratio=0.5)


# ----------------------------------------------------------------------- score files
def test_official_json_roundtrip_both_polarities(tmp_path):
    labels, _ = toy()
    values = np.random.default_rng(1).random(len(labels))
    for stem in ("toy_LossConverge_large", "toy_LossConverge_small"):
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps(values.tolist()))
        u = gs.load_scores(str(path), dataset_name="toy", labels=labels)
        idx = gs.select(None, labels, 3, policy="greedy", ratio=0.3, scores=u.scores)
        for c in range(3):
            members = np.flatnonzero(labels == c)
            kept = np.intersect1d(idx, members)
            k = len(kept)
            order = np.argsort(values[members], kind="stable")
            # Official semantics: the suffix names what is DROPPED.
            expected = members[order[:k]] if stem.endswith("large") else members[order[::-1][:k]]
            np.testing.assert_array_equal(np.sort(kept), np.sort(expected))
    # Explicit criterion / keep on a neutral name; missing polarity is refused.
    neutral = tmp_path / "MNIST_LossConverge.json"
    neutral.write_text(json.dumps(values.tolist()))
    np.testing.assert_allclose(gs.load_scores(str(neutral), criterion="LossConverge_large").scores, -values,
                               rtol=1e-6)
    np.testing.assert_allclose(gs.load_scores(str(neutral), keep="large").scores, values, rtol=1e-6)
    with pytest.raises(ValueError, match="polarity"):
        gs.load_scores(str(neutral))
    with pytest.raises(ValueError, match="holds mnist scores"):
        gs.load_scores(str(neutral), dataset_name="cifar10", keep="small")


def test_score_file_of_another_dataset_or_length_is_refused(tmp_path):
    labels, scores = toy()
    u = gu.Utility(scores, labels, np.arange(len(labels)), "loss", "toy")
    path = gu.save_utility(str(tmp_path / "u.npz"), u)
    np.testing.assert_allclose(gs.load_scores(path, dataset_name="toy", labels=labels).scores, scores, rtol=1e-6)
    with pytest.raises(ValueError, match="30 scores but dataset"):
        gs.load_scores(path, dataset_name="toy", labels=labels[:-1])
    with pytest.raises(ValueError, match="computed on dataset 'toy'"):
        gs.load_scores(path, dataset_name="mnist", labels=labels)
    short = tmp_path / "short_x_small.json"
    short.write_text(json.dumps([0.1, 0.2]))
    with pytest.raises(ValueError, match="2 scores but dataset"):
        gs.load_scores(str(short), dataset_name="toy", labels=labels)
    nan = tmp_path / "nan_x_small.json"
    nan.write_text("[0.1, NaN]")
    with pytest.raises(ValueError, match="NaN"):
        gs.load_scores(str(nan))


def test_select_from_config(tmp_path):
    labels, scores = toy()
    ds = FakeDataset(labels)
    u = gu.Utility(scores, labels, np.arange(len(labels)), "loss", "toy",
                   extras={"features": np.random.default_rng(0).normal(size=(len(labels), 3))})
    path = gu.save_utility(str(tmp_path / "u.npz"), u)
    key = jax.random.key(0)

    def cfg(**kw):
        base = dict(indicator="loss", ratio=0.5, utility_path=path, stratum=0, num_strata=10)
        return ml_collections.ConfigDict({**base, **kw})

    n = len(labels)
    np.testing.assert_array_equal(gs.select_from_config(cfg(indicator="none", ratio=1.0), ds, key,
                                                        min_per_class=1), np.arange(n))
    np.testing.assert_array_equal(gs.select_from_config(cfg(ratio=1.0), ds, key, min_per_class=1), np.arange(n))
    np.testing.assert_array_equal(gs.select_from_config(cfg(), ds, key, min_per_class=1),
                                  gs.select(None, labels, 3, policy="greedy", ratio=0.5, scores=scores))
    np.testing.assert_array_equal(
        gs.select_from_config(cfg(stratum=2, num_strata=3), ds, key, min_per_class=1),
        gs.select(None, labels, 3, policy="stratify", scores=scores, stratum=2, num_strata=3))
    rnd = gs.select_from_config(cfg(indicator="random"), ds, key, min_per_class=1)
    np.testing.assert_array_equal(np.bincount(labels[rnd]), [5, 4, 7])
    div = gs.select_from_config(cfg(policy="greedy_diverse"), ds, key, min_per_class=1)
    assert len(div) == 16
    with pytest.raises(ValueError, match="unknown selection indicator"):
        gs.select_from_config(cfg(indicator="magic"), ds, key, min_per_class=1)
    with pytest.raises(ValueError, match="ratio must be in"):
        gs.select_from_config(cfg(ratio=0.0), ds, key, min_per_class=1)
    with pytest.raises(ValueError, match="holds 'loss' scores"):
        gs.select_from_config(cfg(indicator="density"), ds, key, min_per_class=1)
    with pytest.raises(ValueError, match="needs selection.utility_path"):
        gs.select_from_config(cfg(indicator="file", utility_path=""), ds, key, min_per_class=1)
    with pytest.raises(ValueError, match="monte_carlo"):
        gs.select_from_config(cfg(indicator="monte_carlo", utility_path=""), ds, key, min_per_class=1)
    with pytest.raises(ValueError, match="computed on dataset 'toy'"):
        gs.select_from_config(cfg(), FakeDataset(labels, "mnist"), key, min_per_class=1)


def test_select_from_config_computes_and_caches(tmp_path):
    from gold import data as gdata

    ds = gdata.load_dataset("digits")
    sel = ml_collections.ConfigDict(dict(
        indicator="loss", ratio=0.1, utility_path="", stratum=0, num_strata=10,
        utility=dict(trials=1, epochs=1, batch_size=256, save_features=False,
                     model=dict(name="convnet", width=4, depth=1, norm="instancenorm"))))
    idx = gs.select_from_config(sel, ds, jax.random.key(0), min_per_class=2, workdir=str(tmp_path))
    assert (tmp_path / "utility_loss.npz").exists()
    assert np.all(np.bincount(ds.y_train[idx], minlength=10) >= 14)
    again = gs.select_from_config(sel, ds, jax.random.key(0), min_per_class=2, workdir=str(tmp_path))
    np.testing.assert_array_equal(idx, again)  # from the cache
    # EL2N comes from the same cached curves, without training again.
    sel.indicator = "el2n"
    el2n = gs.select_from_config(sel, ds, jax.random.key(0), min_per_class=2, workdir=str(tmp_path))
    cached = gu.load_utility(str(tmp_path / "utility_loss.npz"))
    np.testing.assert_array_equal(el2n, gs.select(None, ds.y_train, 10, policy="greedy", ratio=0.1,
                                                  scores=-cached.extras["el2n_curve"][0], min_per_class=2))
    assert not (tmp_path / "utility_el2n.npz").exists()


def test_ratio_below_one_without_indicator_is_an_error_not_the_full_data():
    labels, _ = toy()
    cfg = ml_collections.ConfigDict(dict(indicator="none", ratio=0.1, utility_path="", stratum=0))
    with pytest.raises(ValueError, match=r"ratio=0.1 with selection.indicator='none'.*'random'"):
        gs.select_from_config(cfg, FakeDataset(labels), jax.random.key(0), min_per_class=1)


def test_min_per_class_raising_the_ratio_is_reported(caplog):
    """ipc=10 with ratio 0.05 on 3 classes of 140: 7 per class asked, 10 kept."""
    labels = np.repeat(np.arange(3), 140).astype(np.int32)
    cfg = ml_collections.ConfigDict(dict(indicator="random", ratio=0.05, utility_path="", stratum=0))
    with caplog.at_level("WARNING"):
        kept = gs.select_from_config(cfg, FakeDataset(labels), jax.random.key(0), min_per_class=10)
    assert len(kept) == 30
    summary = gs.selection_summary(kept, labels, 3, 0.05)
    assert summary == {"requested_ratio": 0.05, "effective_ratio": 30 / 420, "num_kept": 30,
                       "kept_per_class": [10, 10, 10], "raised_classes": 3}
    assert gs.effective_ratio(kept, labels) == pytest.approx(1 / 14)
    assert "min_per_class=10 (the IPC) raises 3 of 3 classes" in caplog.text
    assert "effective ratio of 0.07143" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # 0.1 * 140 = 14 >= 10: nothing raised, nothing said
        cfg.ratio = 0.1
        kept = gs.select_from_config(cfg, FakeDataset(labels), jax.random.key(0), min_per_class=10)
    assert len(kept) == 42 and caplog.text == ""
    assert gs.selection_summary(kept, labels, 3, 0.1)["raised_classes"] == 0


@pytest.mark.parametrize("name,content", [
    ("scores.npz", b"0.1\n0.2\n0.3\n"),  # a text file: numpy's "pickled object data"
    ("scores.txt", b"0.1 0.2 0.3"),
    ("scores.json", b"[0.1, 0.2,"),        # broken JSON
])
def test_unreadable_utility_files_name_the_path_and_what_was_expected(tmp_path, name, content):
    labels, _ = toy()
    path = tmp_path / name
    path.write_bytes(content)
    cfg = ml_collections.ConfigDict(dict(indicator="file", ratio=0.5, utility_path=str(path), stratum=0,
                                         keep="small"))
    with pytest.raises(gu.UtilityFileError, match="utility.npz") as err:
        gs.select_from_config(cfg, FakeDataset(labels), jax.random.key(0), min_per_class=1)
    assert str(path) in str(err.value) and "GoldFromOres" in str(err.value)


def test_truncated_utility_npz_names_the_path(tmp_path):
    labels, scores = toy()
    good = gu.save_utility(str(tmp_path / "u.npz"), gu.Utility(scores, labels, np.arange(len(labels)), "loss"))
    data = open(good, "rb").read()
    for cut in (len(data) // 2, 40):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(gu.UtilityFileError, match="not a readable .npz") as err:
            gs.load_scores(str(bad), dataset_name="toy", labels=labels)
        assert str(bad) in str(err.value) and "expected a gold utility.npz" in str(err.value)


# ------------------------------------------------------------------- runtime pruning
def _inclusion_probs(p, k):
    """Exact P(i in sample) for k sequential draws without replacement from p."""
    n = len(p)
    incl = np.zeros(n)
    for seq in itertools.permutations(range(n), k):
        prob, rest = 1.0, 1.0
        for i in seq:
            prob *= p[i] / rest
            rest -= p[i]
        incl[list(seq)] += prob
    return incl


def test_runtime_prune_matches_exact_without_replacement_probabilities():
    losses = jnp.array([0.1, 0.5, 1.0, 2.0, 3.0])
    tau = 0.7
    keys = jax.random.split(jax.random.key(0), 20000)
    idx = jax.jit(jax.vmap(lambda k: gs.runtime_prune_indices(k, losses, 0.4, tau)))(keys)
    idx = np.asarray(idx)
    assert idx.shape == (20000, 2) and idx.dtype == np.int32
    assert np.all(idx[:, 0] != idx[:, 1]) and idx.min() >= 0 and idx.max() < 5
    freq = np.bincount(idx.ravel(), minlength=5) / 20000
    p = np.exp(-np.asarray(losses) / tau)
    expected = _inclusion_probs(p / p.sum(), 2)
    se = np.sqrt(expected * (1 - expected) / 20000)
    assert np.all(np.abs(freq - expected) < 5 * se + 1e-3), (freq, expected)
    assert np.all(np.diff(freq) < 0)  # lower loss -> drawn more often
    # First draw alone is softmax(-loss / tau).
    first = np.bincount(idx[:, 0], minlength=5) / 20000
    np.testing.assert_allclose(first, p / p.sum(), atol=0.015)


def test_runtime_prune_uniform_at_infinite_temperature():
    losses = jnp.linspace(0.0, 5.0, 10)
    keys = jax.random.split(jax.random.key(1), 10000)
    idx = np.asarray(jax.vmap(lambda k: gs.runtime_prune_indices(k, losses, 0.3, 1e9))(keys))
    counts = np.bincount(idx.ravel(), minlength=10)
    expected = 10000 * 3 / 10
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 27.9  # chi-square, 9 dof, p = 0.001


@pytest.mark.parametrize("b,valid,keep,expected", [
    (16, 10, 0.7, 7), (16, 16, 0.7, 11), (8, 3, 0.5, 2), (5, 1, 0.1, 1), (12, 7, 0.25, 2), (4, 0, 0.5, 0)])
def test_runtime_prune_weights_count_the_valid_entries(b, valid, keep, expected):
    """round(keep * n_valid) entries are kept, not round(keep * B) (B includes padding)."""
    losses = jnp.asarray(np.random.default_rng(b).uniform(0, 3, size=b), jnp.float32)
    mask = jnp.arange(b) < valid
    f = jax.jit(gs.runtime_prune_weights, static_argnums=(2,))
    for seed in range(5):
        w = np.asarray(f(jax.random.key(seed), losses, keep, jnp.float32(1.0), mask))
        assert int(np.sum(w > 0)) == expected and np.all(w[valid:] == 0)
        if expected:
            np.testing.assert_allclose(w[w > 0], 1.0 / expected, rtol=1e-6)


def test_runtime_prune_weights_draw_among_valid_entries_with_softmax_probabilities():
    """Padding entries have the LOWEST losses (they would be drawn first if unmasked) and
    the valid ones are drawn with p = softmax(-loss / tau) over the valid entries only."""
    losses = jnp.array([0.2, 1.5, 0.0, 0.7, 2.5, 0.0, 1.0, 0.0])
    mask = jnp.array([1, 1, 0, 1, 1, 0, 1, 0])  # 5 valid entries
    valid = np.flatnonzero(np.asarray(mask))
    tau, n = 0.8, 20000
    keys = jax.random.split(jax.random.key(3), n)
    for keep, k in ((0.2, 1), (0.4, 2)):
        w = np.asarray(jax.jit(jax.vmap(lambda key: gs.runtime_prune_weights(key, losses, keep, tau, mask)))(keys))
        assert np.all(w[:, np.asarray(mask) == 0] == 0) and np.all(np.sum(w > 0, axis=1) == k)
        freq = np.mean(w[:, valid] > 0, axis=0)
        p = np.exp(-np.asarray(losses)[valid] / tau)
        expected = _inclusion_probs(p / p.sum(), k)  # k = 1: softmax(-loss / tau) itself
        se = np.sqrt(expected * (1 - expected) / n)
        assert np.all(np.abs(freq - expected) < 5 * se + 1e-3), (keep, freq, expected)


def test_runtime_prune_weights_without_mask_keep_the_top_k_of_the_same_draw():
    losses = jnp.array([3.0, 0.1, 2.0, 0.2, 1.0, 5.0, 0.0, 4.0])
    for seed in range(5):
        w = gs.runtime_prune_weights(jax.random.key(seed), losses, 0.5, 1.0)
        idx = gs.runtime_prune_indices(jax.random.key(seed), losses, 0.5, 1.0)
        assert sorted(np.flatnonzero(np.asarray(w)).tolist()) == sorted(np.asarray(idx).tolist())
        w_all = gs.runtime_prune_weights(jax.random.key(seed), losses, 0.5, 1.0, jnp.ones(8))
        np.testing.assert_array_equal(np.asarray(w), np.asarray(w_all))


def test_runtime_prune_weights_and_shapes():
    losses = jnp.array([3.0, 0.1, 2.0, 0.2, 1.0, 5.0, 0.0, 4.0])
    w = jax.jit(gs.runtime_prune_weights, static_argnums=(2,))(jax.random.key(0), losses, 0.5, 1.0)
    assert w.shape == (8,) and int(jnp.sum(w > 0)) == 4
    np.testing.assert_allclose(float(jnp.sum(w)), 1.0, rtol=1e-6)
    g = jax.grad(lambda l: jnp.sum(gs.runtime_prune_weights(jax.random.key(0), l, 0.5, 1.0) * l))(losses)
    np.testing.assert_allclose(np.asarray(g), np.asarray(w))  # pruning itself is not differentiated
    assert gs.runtime_keep_count(7, 0.01) == 1 and gs.runtime_keep_count(10, 0.25) == 3
    with pytest.raises(ValueError, match="keep_ratio"):
        gs.runtime_prune_indices(jax.random.key(0), losses, 0.0, 1.0)
    # jit with a traced tau and static keep_ratio.
    f = jax.jit(gs.runtime_prune_indices, static_argnums=(2,))
    assert f(jax.random.key(2), losses, 0.25, jnp.float32(0.5)).shape == (2,)
