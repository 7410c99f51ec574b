"""Cross-architecture evaluation (gold.experiments.cross_arch) and the report renderer."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gold.configs import evaluate as evaluate_cfg  # noqa: E402
from gold import data as gdata  # noqa: E402
from gold.distill import save_synthetic  # noqa: E402
from gold.evaluate import EvalProtocol  # noqa: E402
from gold.experiments import cross_arch, report  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits")


def _save_set(path, ds, seed=0, meta=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ds.num_classes, *ds.x_train.shape[1:])).astype(np.float32)
    y = np.arange(ds.num_classes, dtype=np.int32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_synthetic(path, x=x, y=y, lr=None, dataset=ds, ipc=1, algorithm="dc",
                   protocol=EvalProtocol(model="convnet", model_overrides=(("width", 8),), epochs=300),
                   meta=meta or {})
    return path


def test_protocol_for_replaces_model_and_overrides():
    stored = EvalProtocol(model="convnet", model_overrides=(("width", 32),), epochs=300, num_models=5,
                          lr_decay_epochs=(150,))
    ev = evaluate_cfg.get_config().eval
    p = cross_arch.protocol_for(stored, "lenet", ev)
    assert p.model == "lenet" and p.model_overrides == () and p.epochs == 300
    assert p.decay_epochs() == (150,)
    ev.epochs, ev.num_models, ev.augment = 20, 2, "dsa"
    p = cross_arch.protocol_for(stored, "convnet", ev)
    assert p.model_overrides == (("width", 32),) and p.epochs == 20 and p.num_models == 2
    assert p.augment == "dsa" and p.decay_epochs() == (12,)  # after epoch index 20 // 2 + 1


def test_cross_arch_end_to_end_and_cache(tmp_path, digits):
    a = _save_set(str(tmp_path / "a" / "synthetic.npz"), digits, 0,
                  {"selection": {"indicator": "loss", "ratio": 0.05}})
    _save_set(str(tmp_path / "b" / "synthetic.npz"), digits, 1, {"selection": {"indicator": "none"}})
    cfg = evaluate_cfg.get_config()
    cfg.synthetic = f"{a},{tmp_path / 'b'}"
    cfg.models = ("mlp", "convnet")
    cfg.eval.epochs = 2
    cfg.eval.num_models = 1
    cfg.eval.max_test = 50
    out = tmp_path / "x"
    res = cross_arch.run(cfg, str(out))
    assert res["models"] == ["mlp", "convnet"]
    assert [r["label"] for r in res["rows"]] == ["loss 5%", "dc full"]
    for r in res["rows"]:
        for m in ("mlp", "convnet"):
            assert 0.0 <= r["results"][m]["accuracy_mean"] <= 100.0
    for f in ("result.json", "table.csv", "table.md", "cross_arch.png"):
        assert (out / f).exists()
    assert "| loss 5% |" in (out / "table.md").read_text()
    cells = sorted(os.listdir(out / "cells"))
    assert cells == ["0_convnet.json", "0_mlp.json", "1_convnet.json", "1_mlp.json"]
    res2 = cross_arch.run(cfg, str(out))  # cached cells: same numbers
    assert json.dumps(res2["rows"]) == json.dumps(res["rows"])
    md = report.render(str(tmp_path))
    assert "Cross-architecture" in md and "loss 5%" in md


def test_cross_arch_bad_input(tmp_path, digits):
    cfg = evaluate_cfg.get_config()
    with pytest.raises(ValueError, match="empty"):
        cross_arch.run(cfg, str(tmp_path / "w"))
    cfg.synthetic = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        cross_arch.run(cfg, str(tmp_path / "w"))
    a = _save_set(str(tmp_path / "a.npz"), digits)
    other = dataclasses.replace(digits, name="mnist")
    b = _save_set(str(tmp_path / "b.npz"), other)
    cfg.synthetic = f"{a},{b}"
    with pytest.raises(ValueError, match="different datasets"):
        cross_arch.run(cfg, str(tmp_path / "w"))
    cfg.synthetic = a
    cfg.models = ("nope",)
    with pytest.raises(ValueError, match="unknown model"):
        cross_arch.run(cfg, str(tmp_path / "w"))


def test_report_errors_and_kinds(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.render(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no result.json"):
        report.render(str(tmp_path))
    d = tmp_path / "run1"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"accuracy_mean": 90.0, "accuracy_std": 1.0, "num_real": 10,
                                               "algorithm": "dc", "dataset": "mnist", "ipc": 1}))
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "result.json").write_text(json.dumps({"indicator": "loss", "num_samples": 5,
                                                            "dataset": "mnist", "seconds": 1.0}))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "result.json").write_text(json.dumps({"foo": 1}))
    md = report.render(str(tmp_path), title="T")
    assert md.startswith("# T") and "## Distillation runs" in md and "90.00 +- 1.00" in md
    assert "## Utility indicators" in md and "## Other results" in md
    assert report.result_kind({"gamma": 0.1, "rows": []}) == "sweep"
    assert report.result_kind({"strata": []}) == "stratify"
    assert report.result_kind({"convergence": []}) == "monte_carlo"
    assert report.main(["report", str(tmp_path), str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text() == md.replace("# T", f"# Results: {tmp_path.name}", 1)
