"""Sweep and stratification orchestration (fake distillation runner: fast), resume,
bad input; gamma / strata wiring on the embedded digits dataset."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gold.configs import stratify as stratify_cfg  # noqa: E402
from gold.configs import sweep as sweep_cfg  # noqa: E402
from gold import selection as gsel  # noqa: E402
from gold import workdir as gwork  # noqa: E402
from gold.distill.loop import load_data  # noqa: E402
from gold.experiments import report, stratify, sweep  # noqa: E402


class FakeRunner:
    """Stands in for gold.distill.loop.run: selects like the loop does, writes
    config.json / selection.npz / result.json, accuracy a known function of the data."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, config, workdir):
        import jax

        from gold.distill.loop import select_real

        self.calls += 1
        os.makedirs(workdir, exist_ok=True)
        ds = load_data(config.data)
        kept = select_real(config, ds, jax.random.key(int(config.seed)), workdir)
        gwork.prepare_workdir(workdir, config)
        np.savez(os.path.join(workdir, "selection.npz"), ids=ds.ids[kept], indices=kept)
        acc = float(self.fn(config, kept))
        res = {"accuracy_mean": acc, "accuracy_std": 0.5, "num_real": int(len(kept)),
               "seconds": 0.01}
        gwork.write_json(os.path.join(workdir, "result.json"), res)
        return res


def _sweep_config(indicator="random"):
    c = sweep_cfg.get_config("dc,digits")
    c.ratios = (0.05, 0.2, 0.5)
    c.repeats = 2
    c.selection.indicator = indicator
    c.analysis.features = "none"
    return c


def _acc_by_ratio(config, kept):
    # grows with the kept fraction, saturates at 0.2; repeats differ slightly by seed
    r = float(config.selection.ratio)
    return 80.0 - 20.0 * max(0.0, 0.2 - r) / 0.2 + 0.1 * int(config.seed)


def test_sweep_gamma_table_plot_and_resume(tmp_path):
    runner = FakeRunner(_acc_by_ratio)
    cfg = _sweep_config()
    res = sweep.run(cfg, str(tmp_path), runner=runner)
    assert runner.calls == 2 + 3 * 2
    assert res["gamma"] == 0.2 and res["gamma_found"]
    assert [r["ratio"] for r in res["rows"]] == [0.05, 0.2, 0.5]
    assert res["rows"][0]["comparable"] is False and res["rows"][1]["comparable"] is True
    np.testing.assert_allclose(res["full"]["accuracy_mean"], 80.05)
    np.testing.assert_allclose(res["full"]["accuracy_std"], 0.05)
    assert res["repeats"] == 2 and res["ratios"] == [0.05, 0.2, 0.5]
    for f in ("result.json", "table.csv", "table.md", "sweep.png", "config.json"):
        assert (tmp_path / f).exists(), f
    stored = json.loads((tmp_path / "result.json").read_text())
    assert set(stored) >= {"gamma", "full", "rows", "ratios", "repeats"}
    assert set(stored["rows"][0]) >= {"ratio", "accuracy_mean", "accuracy_std"}
    # random selection differs between repeats (the selection key follows the seed)
    a = np.load(tmp_path / "points/r0.05/rep0/selection.npz")["indices"]
    b = np.load(tmp_path / "points/r0.05/rep1/selection.npz")["indices"]
    assert len(a) == len(b) and not np.array_equal(a, b)
    # resume: nothing reruns; a grown grid only runs the new points
    sweep.run(cfg, str(tmp_path), runner=runner)
    assert runner.calls == 8
    cfg.ratios = (0.05, 0.1, 0.2, 0.5)
    res2 = sweep.run(cfg, str(tmp_path), runner=runner)
    assert runner.calls == 10 and res2["gamma"] == 0.2
    # a changed distillation field is a different experiment
    cfg.iterations = 7
    with pytest.raises(ValueError, match="different experiment"):
        sweep.run(cfg, str(tmp_path), runner=runner)
    md = report.render(str(tmp_path))
    assert "gamma" in md and "20%" in md


def test_sweep_with_utility_file_and_diversity(tmp_path):
    ds = load_data(_sweep_config().data)
    rng = np.random.default_rng(0)
    from gold.utility import Utility, save_utility

    feats = rng.normal(size=(len(ds.y_train), 4)).astype(np.float32)
    scores = rng.normal(size=len(ds.y_train)).astype(np.float32)
    u = Utility(scores, ds.y_train, ds.ids, "loss", ds.name, extras={"features": feats})
    path = save_utility(str(tmp_path / "u" / "utility.npz"), u)
    cfg = _sweep_config("loss")
    cfg.selection.utility_path = path
    cfg.analysis.features = "auto"
    cfg.repeats = 1

    def acc(config, kept):  # mean utility of the kept samples
        return 50.0 + 10.0 * float(np.mean(scores[kept]))

    res = sweep.run(cfg, str(tmp_path / "w"), runner=FakeRunner(acc))
    # greedy top-utility: kept sets are nested, so accuracy falls as the ratio grows
    m = [r["accuracy_mean"] for r in res["rows"]]
    assert m[0] > m[1] > m[2]
    assert all(r["diversity"] is not None and r["outliers"] is not None for r in res["rows"])
    assert res["full"]["outliers"] >= res["rows"][-1]["outliers"]
    kept = np.load(tmp_path / "w/points/r0.05/rep0/selection.npz")["indices"]
    want = gsel.select(None, ds.y_train, ds.num_classes, policy="greedy", ratio=0.05, scores=scores)
    np.testing.assert_array_equal(kept, want)


@pytest.mark.parametrize("ratios, match", [((), "empty ratio grid"), ((0.1, 1.5), r"\(0, 1\)"),
                                           ((0.0,), r"\(0, 1\)"), ((5, 10), "not percent")])
def test_sweep_bad_grid(tmp_path, ratios, match):
    cfg = _sweep_config()
    cfg.ratios = ratios
    with pytest.raises(ValueError, match=match):
        sweep.run(cfg, str(tmp_path), runner=FakeRunner(_acc_by_ratio))


def test_sweep_needs_a_policy_and_rule(tmp_path):
    cfg = _sweep_config("none")
    with pytest.raises(ValueError, match="needs a selection policy"):
        sweep.run(cfg, str(tmp_path / "a"), runner=FakeRunner(_acc_by_ratio))
    cfg = _sweep_config()
    cfg.gamma_rule = "nope"
    with pytest.raises(ValueError, match="gamma_rule"):
        sweep.run(cfg, str(tmp_path / "b"), runner=FakeRunner(_acc_by_ratio))


def test_compare_sweeps_and_mismatch(tmp_path):
    cfg = _sweep_config()
    sweep.run(cfg, str(tmp_path / "a"), runner=FakeRunner(_acc_by_ratio))
    sweep.run(cfg, str(tmp_path / "b"), runner=FakeRunner(lambda c, k: 81.0))
    out = sweep.compare([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "cmp.png"),
                        labels=["random", "flat"])
    assert out["gammas"] == {"random": 0.2, "flat": 0.05}
    assert (tmp_path / "cmp.png").exists()
    cfg.ipc = 10
    cfg.ratios = (0.2, 0.5)
    sweep.run(cfg, str(tmp_path / "c"), runner=FakeRunner(_acc_by_ratio))
    with pytest.raises(ValueError, match="mismatched sweep directories.*ipc"):
        sweep.compare([str(tmp_path / "a"), str(tmp_path / "c")], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="no result.json"):
        sweep.compare([str(tmp_path / "a"), str(tmp_path / "nope")], str(tmp_path / "x.png"))


# ------------------------------------------------------------------------ stratify
def _strata_config(num_strata=4):
    c = stratify_cfg.get_config("dc,digits")
    c.selection.num_strata = num_strata
    c.analysis.features = "auto"
    return c


def test_stratify_partition_curve_diversity(tmp_path):
    ds = load_data(_strata_config().data)
    rng = np.random.default_rng(1)
    from gold.utility import Utility, save_utility

    scores = rng.normal(size=len(ds.y_train)).astype(np.float32)
    feats = rng.normal(size=(len(ds.y_train), 3)).astype(np.float32)
    path = save_utility(str(tmp_path / "u.npz"),
                        Utility(scores, ds.y_train, ds.ids, "loss", ds.name, extras={"features": feats}))
    cfg = _strata_config(4)
    cfg.selection.utility_path = path
    runner = FakeRunner(lambda c, kept: 10.0 * float(np.mean(scores[kept])) + 50.0)
    res = stratify.run(cfg, str(tmp_path / "w"), runner=runner)
    assert [r["stratum"] for r in res["strata"]] == [1, 2, 3, 4]
    acc = [r["accuracy_mean"] for r in res["strata"]]
    assert acc == sorted(acc) and res["rising"]["spearman"] == pytest.approx(1.0)
    # the strata partition every class exactly
    kept = [np.load(tmp_path / f"w/points/s{s}/rep0/selection.npz")["indices"] for s in (1, 2, 3, 4)]
    allk = np.sort(np.concatenate(kept))
    np.testing.assert_array_equal(allk, np.arange(len(ds.y_train)))
    assert max(scores[kept[0]]) <= min(scores[kept[3]])
    assert all(r["diversity"] is not None for r in res["strata"])
    assert sum(r["outliers"] for r in res["strata"]) == res["full_diversity"]["outliers"]
    for f in ("result.json", "strata.csv", "strata.md", "strata.png"):
        assert (tmp_path / "w" / f).exists()
    assert set(res["strata"][0]) >= {"stratum", "accuracy_mean", "accuracy_std", "diversity"}
    # resume: nothing reruns
    stratify.run(cfg, str(tmp_path / "w"), runner=runner)
    assert runner.calls == 4


def test_stratum_smaller_than_ipc_is_a_clear_error(tmp_path):
    cfg = _strata_config(50)
    cfg.ipc = 3  # digits classes hold ~144 samples: 50 strata of ~2 < 3
    cfg.selection.indicator = "random"
    with pytest.raises(ValueError, match=r"stratum S\d+ of class \d+ holds 2 sample\(s\), fewer than ipc=3"):
        stratify.run(cfg, str(tmp_path), runner=FakeRunner(lambda c, k: 0.0))
    assert not (tmp_path / "points").exists()


def test_stratify_bad_strata_selection(tmp_path):
    cfg = _strata_config(4)
    cfg.selection.indicator = "random"
    cfg.strata = (0, 5)
    with pytest.raises(ValueError, match=r"outside 1..4"):
        stratify.run(cfg, str(tmp_path), runner=FakeRunner(lambda c, k: 0.0))


# --------------------------------------------------------------- coreset policies
def _tiny_classifier(c):
    u = c.selection.utility
    u.epochs, u.batch_size = 1, 256
    u.model.width, u.model.depth = 4, 1
    return c


@pytest.mark.parametrize("method", ["herding", "kmeans"])
def test_sweep_with_coreset_policy_selects_the_coreset(tmp_path, method):
    import jax

    from gold.selection import coreset

    cfg = _tiny_classifier(_sweep_config(method))
    ratios = (0.05, 0.1) if method == "herding" else (0.1,)  # k-means: one clustering per ratio
    cfg.ratios, cfg.repeats = ratios, 1
    res = sweep.run(cfg, str(tmp_path), runner=FakeRunner(_acc_by_ratio))
    assert [r["ratio"] for r in res["rows"]] == list(ratios)
    ds = load_data(cfg.data)
    with np.load(tmp_path / "utility" / "classifier_outputs.npz") as f:
        inputs = coreset.CoresetInputs(*(f[k] for k in coreset.CoresetInputs._fields))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(cfg.seed)), 1), 1)
    for r in ratios:
        kept = np.load(tmp_path / f"points/r{r:g}/rep0/selection.npz")["indices"]
        want = coreset.coreset_select(method, inputs, ds.num_classes, r, key,
                                      val_size=int(cfg.selection.utility.val_size))
        np.testing.assert_array_equal(kept, want)


def test_select_from_config_knows_the_coreset_indicators(tmp_path):
    import jax

    cfg = _tiny_classifier(_sweep_config("craig"))
    cfg.selection.ratio = 0.05
    ds = load_data(cfg.data)
    kept = gsel.select_from_config(cfg.selection, ds, jax.random.key(0), min_per_class=1,
                                   workdir=str(tmp_path))
    counts = np.bincount(ds.y_train[kept], minlength=ds.num_classes)
    want = [gsel.keep_count(int(n), 0.05, 1) for n in np.bincount(ds.y_train, minlength=ds.num_classes)]
    np.testing.assert_array_equal(counts, want)
    assert (tmp_path / "utility_craig_0.05.npz").exists()
    again = gsel.select_from_config(cfg.selection, ds, jax.random.key(0), min_per_class=1,
                                    workdir=str(tmp_path))
    np.testing.assert_array_equal(kept, again)
