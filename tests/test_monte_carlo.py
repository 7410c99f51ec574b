"""Monte-Carlo utility estimator (gold.utility.monte_carlo): Eq. 3, subsets, convergence."""

import numpy as np
import pytest

from gold.utility import monte_carlo as mc


def test_scores_are_means_of_trials_containing_the_sample():
    subsets = np.array([[0, 1], [1, 2], [0, 2]])
    s = np.array([1.0, 3.0, 5.0])
    scores, counts = mc.mc_scores(subsets, s, 4)
    np.testing.assert_allclose(scores, [3.0, 2.0, 4.0, 3.0])  # sample 3 never drawn: global mean
    np.testing.assert_array_equal(counts, [2, 2, 2, 0])


def test_eq3_planted_additive_utility_is_recovered_linearly():
    rng = np.random.default_rng(0)
    n, m, k = 200, 20, 6000
    u = rng.normal(size=n)
    labels = np.zeros(n, np.int64)
    subsets = mc.draw_subsets(rng, labels, 1, k, m)
    s = u[subsets].sum(1) + 0.5 * rng.normal(size=k)
    scores, counts = mc.mc_scores(subsets, s, n)
    assert counts.min() > 0
    slope, intercept = np.polyfit(u, scores, 1)
    np.testing.assert_allclose(slope, (n - m) / (n - 1), rtol=0.1)
    np.testing.assert_allclose(intercept, (m - 1) * n / (n - 1) * u.mean(), atol=0.4)
    assert np.corrcoef(u, scores)[0, 1] > 0.95
    expected = mc.eq3_expectation(u, m)
    assert np.sqrt(np.mean((scores - expected) ** 2)) < 0.35 * u.std()
    assert mc.spearman(scores, u) > 0.95


def test_eq3_expectation_exact_by_enumeration():
    # Exhaustive: all C(6, 3) subsets, s = sum u => estimator equals Eq. 3 exactly.
    import itertools
    u = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.3])
    subsets = np.array(list(itertools.combinations(range(6), 3)))
    scores, _ = mc.mc_scores(subsets, u[subsets].sum(1), 6)
    np.testing.assert_allclose(scores, mc.eq3_expectation(u, 3), atol=1e-12)


def test_draw_subsets_uniform_and_balanced():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 25)
    uni = mc.draw_subsets(rng, labels, 4, 50, 12, min_per_class=1)
    assert uni.shape == (50, 12) and uni.dtype == np.int32
    assert all(len(set(r)) == 12 and np.all(np.diff(r) > 0) for r in uni)
    assert all(np.bincount(labels[r], minlength=4).min() >= 1 for r in uni)
    bal = mc.draw_subsets(rng, labels, 4, 10, 12, balanced=True)
    assert all(np.array_equal(np.bincount(labels[r], minlength=4), [3, 3, 3, 3]) for r in bal)


def test_subset_size_and_errors():
    assert mc.subset_size(60000, 0.008, 10, balanced=False) == 480
    assert mc.subset_size(100, 0.01, 10, balanced=False) == 10  # at least ipc * C
    assert mc.subset_size(1000, 0.055, 10, balanced=True) == 50
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        mc.subset_size(100, 1.0, 10, balanced=False)
    with pytest.raises(ValueError, match="divisible"):
        mc.draw_subsets(np.random.default_rng(0), np.repeat(np.arange(4), 25), 4, 2, 10, balanced=True)
    with pytest.raises(ValueError, match="almost never"):
        mc.draw_subsets(np.random.default_rng(0), np.zeros(100, int), 2, 2, 2, min_per_class=1)
    with pytest.raises(ValueError, match=r"\[K, M\]"):
        mc.mc_scores(np.zeros((2, 3), int), np.zeros(3), 5)
    with pytest.raises(ValueError, match="finite"):
        mc.mc_scores(np.zeros((1, 3), int), np.array([np.nan]), 5)


def test_split_half_convergence_increases_with_trials():
    rng = np.random.default_rng(2)
    n, m, k = 100, 10, 2000
    u = rng.normal(size=n)
    subsets = mc.draw_subsets(rng, np.zeros(n, int), 1, k, m)
    s = u[subsets].sum(1) + rng.normal(size=k)
    curve = mc.split_half_convergence(subsets, s, n)
    assert [c["trials_per_half"] for c in curve][-1] == 1000
    rhos = [c["spearman"] for c in curve if c["compared"] >= 30 and c["spearman"] is not None]
    assert rhos[-1] > 0.8 and rhos[-1] > rhos[0]
    np.testing.assert_allclose(curve[-1]["mean_visits"], m * 1000 / n)
    with pytest.raises(ValueError, match="at least 2"):
        mc.split_half_convergence(subsets[:1], s[:1], n)
    with pytest.raises(ValueError, match="trials per half"):
        mc.split_half_convergence(subsets, s, n, trial_counts=[2000])
