"""Monte-Carlo driver (gold.experiments.monte_carlo): stacked subset tables, batched ==
sequential distillation, artifacts, resume, bad input. Tiny ConvNet-D1 on digits."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gold.configs import monte_carlo as mc_cfg  # noqa: E402
from gold.experiments import monte_carlo as mc  # noqa: E402
from gold.experiments import report  # noqa: E402
from gold.utility import load_utility  # noqa: E402


def test_subset_tables_and_common_batch():
    labels = np.array([0, 1, 0, 1, 2, 2, 0])
    subsets = np.array([[0, 1, 4], [2, 3, 5], [1, 2, 6]])
    with pytest.raises(ValueError, match="no sample of class 2"):
        mc.subset_tables(subsets, labels, 3)
    subsets = np.array([[0, 1, 4, 6], [2, 3, 5, 0]])
    idx = mc.subset_tables(subsets, labels, 3)
    table, counts = np.asarray(idx.table), np.asarray(idx.counts)
    assert table.shape == (2, 3, 2)
    np.testing.assert_array_equal(counts, [[2, 1, 1], [2, 1, 1]])
    np.testing.assert_array_equal(table[0], [[0, 6], [1, -1], [4, -1]])
    np.testing.assert_array_equal(table[1], [[0, 2], [3, -1], [5, -1]])
    assert mc.subset_tables(subsets, labels, 3, width=5).table.shape == (2, 3, 5)
    assert mc.common_batch(subsets, labels, 3, 256) == 2  # halved while >= 2 * largest class (2)


def _tiny_config():
    cfg = mc_cfg.get_config("dc,digits")
    cfg.model.width = 4
    cfg.model.depth = 1
    cfg.iterations = 2
    cfg.batch_real = 8
    cfg.eval.epochs = 3
    cfg.eval.num_models = 1
    cfg.eval.augment = "none"
    cfg.monte_carlo.trials = 6
    cfg.monte_carlo.chunk = 4
    cfg.monte_carlo.subset_ratio = 0.1
    cfg.monte_carlo.sequential_check = 2
    cfg.monte_carlo.convergence = (1, 3)
    return cfg


@pytest.mark.parametrize("mode", ["vmap", "hybrid"])
def test_monte_carlo_end_to_end_batched_equals_sequential(tmp_path, mode):
    cfg = _tiny_config()
    cfg.monte_carlo.mode = mode
    res = mc.run(cfg, str(tmp_path))
    assert res["mode"] == mode
    assert res["trials"] == 6 and res["subset_size"] == 144 and res["num_samples"] == 1437
    # vmapped chunk (common random numbers) == the same subsets distilled one by one
    assert res["sequential_max_abs_diff"] < 1.0  # at most a couple of test images flip
    assert [c["trials_per_half"] for c in res["convergence"]] == [1, 3]
    u = load_utility(res["utility_path"])
    assert u.indicator == "monte_carlo" and u.num_samples == 1437
    visits = u.extras["visits"]
    np.testing.assert_array_equal(visits, np.bincount(u.extras["subsets"].ravel(), minlength=1437))
    never = visits == 0
    np.testing.assert_allclose(u.scores[never], u.extras["trial_scores"].mean(), rtol=1e-5)
    for f in ("trials.npz", "result.json", "convergence.csv", "convergence.md", "convergence.png",
              "utility.json"):
        assert (tmp_path / f).exists(), f
    # resume: every chunk is done, so nothing is distilled again
    before = np.load(tmp_path / "trials.npz")["chunk_seconds"].copy()
    cfg.monte_carlo.sequential_check = 0
    res2 = mc.run(cfg, str(tmp_path))
    np.testing.assert_array_equal(np.load(tmp_path / "trials.npz")["chunk_seconds"], before)
    assert res2["trial_accuracy_mean"] == res["trial_accuracy_mean"]
    assert "Monte-Carlo" in report.render(str(tmp_path))


def test_trials_are_independent_by_default():
    """Fidelity: the paper's trials are independent draws; common random numbers are an
    option. Trial i's key depends on its global index only (not on the chunking)."""
    import jax

    assert mc.MCSettings(trials=4, subset_ratio=0.1).crn is False
    assert mc_cfg.get_config("dc,digits").monte_carlo.crn is False
    key = jax.random.key(0)
    data = lambda keys: np.asarray(jax.random.key_data(keys))
    ind = data(mc.trial_keys(key, np.arange(4), crn=False))
    assert len({tuple(k) for k in ind}) == 4
    np.testing.assert_array_equal(data(mc.trial_keys(key, np.array([2, 3]), crn=False)), ind[2:])
    crn = data(mc.trial_keys(key, np.arange(4), crn=True))
    assert len({tuple(k) for k in crn}) == 1


def test_monte_carlo_bad_input(tmp_path):
    cfg = _tiny_config()
    cfg.monte_carlo.trials = 1
    with pytest.raises(ValueError, match="trials must be >= 2"):
        mc.run(cfg, str(tmp_path / "a"))
    cfg = _tiny_config()
    cfg.monte_carlo.subset_ratio = 1.0
    with pytest.raises(ValueError, match=r"subset_ratio must lie in \(0, 1\)"):
        mc.run(cfg, str(tmp_path / "b"))
    cfg = _tiny_config()
    cfg.monte_carlo.mode = "nope"
    with pytest.raises(ValueError, match="unknown monte_carlo.mode"):
        mc.run(cfg, str(tmp_path / "c"))
