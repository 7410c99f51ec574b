"""gold.workdir (resume-or-refuse rule, metrics.csv + TensorBoard), gold.progress,
gold.config_docs and the runlocal config option."""

import glob
import io
import os

import pytest

from gold import config_docs, progress
from gold import workdir as gwork
from gold.configs import buffer as buffer_cfg
from gold.configs import common
from gold.configs import evaluate as evaluate_cfg
from gold.configs import monte_carlo as mc_cfg
from gold.configs import stratify as stratify_cfg
from gold.configs import sweep as sweep_cfg
from gold.configs import train as train_cfg
from gold.configs import utility as utility_cfg


# ------------------------------------------------------------------ resume or refuse
def test_config_differences_lists_changed_fields_except_harmless_ones():
    old = {"lr": 0.1, "data": {"dir": "a", "name": "digits"}, "eval": {"epochs": 3}}
    new = {"lr": 0.2, "data": {"dir": "b", "name": "digits"}, "eval": {"epochs": 4}, "extra": 1}
    assert gwork.config_differences(old, new, ("data.dir", "eval")) == [
        "extra: '<absent>' -> 1", "lr: 0.1 -> 0.2"]
    assert gwork.config_differences(old, old) == []


def test_check_resumable_refuses_another_config_and_accepts_the_same(tmp_path):
    wd = str(tmp_path)
    cfg = train_cfg.get_config("digits")
    gwork.check_resumable(wd, cfg)  # no config.json yet: a new run
    gwork.prepare_workdir(wd, cfg)
    gwork.check_resumable(wd, cfg)
    other = train_cfg.get_config("digits")
    other.lr = 0.5
    with pytest.raises(ValueError, match=r"different config.*lr: 0.01 -> 0.5"):
        gwork.check_resumable(wd, other)
    gwork.check_resumable(wd, other, harmless_fields=("lr",))


# ---------------------------------------------------------------------- metrics
def test_metrics_writer_csv_lines_tensorboard_and_resume_truncation(tmp_path):
    wd = str(tmp_path)
    log = io.StringIO()
    w = gwork.MetricsWriter(wd, stream=log)
    for step in (1, 2, 3):
        w.write(step, loss=1.0 / step)
    w.close()
    raw = open(os.path.join(wd, "metrics.csv"), "rb").read()
    assert b"\r" not in raw and raw.count(b"\n") == 4
    assert glob.glob(os.path.join(wd, "events.out.tfevents.*"))
    assert log.getvalue().count("step") == 3 and log.getvalue().startswith("[")
    # a run resumed from the checkpoint at step 1 drops rows 2 and 3 and rewrites them
    w = gwork.MetricsWriter(wd, stream=None, resume_step=1)
    w.write(2, loss=0.25)
    w.close()
    rows = open(os.path.join(wd, "metrics.csv"), encoding="utf-8").read().splitlines()
    assert rows == ["step,loss", "1,1.0", "2,0.25"]


def test_log_timestamps_count_from_process_start():
    import time

    assert gwork.PROCESS_START <= time.time()
    # pytest started this process well before this test ran
    assert time.time() - gwork.PROCESS_START > 0.05


# ---------------------------------------------------------------------- progress
def test_progress_without_terminal_prints_log_lines(monkeypatch):
    monkeypatch.setenv("GOLD_PROGRESS", "auto")
    out = io.StringIO()  # not a terminal
    bar = progress.bar(10, "things", initial=4, stream=out)
    assert isinstance(bar, progress.LogProgress)
    bar._interval = 0.0
    bar.update(2)
    bar.set_postfix({"loss": 0.5})
    bar.update(4)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("things: 6/10 (60%)")
    assert lines[-1].startswith("things: 10/10 (100%)") and lines[-1].endswith("loss=0.5")
    assert len(lines) == 3


def test_progress_modes(monkeypatch):
    monkeypatch.setenv("GOLD_PROGRESS", "off")
    out = io.StringIO()
    bar = progress.bar(3, "x", stream=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""
    monkeypatch.setenv("GOLD_PROGRESS", "bar")
    bar = progress.bar(3, "x", stream=out)
    bar.update(3)
    bar.set_postfix({"a": 1.0})
    bar.close()
    assert "3/3" in out.getvalue()
    monkeypatch.setenv("GOLD_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="GOLD_PROGRESS"):
        progress.bar(3, "x", stream=out)


# -------------------------------------------------------------------- config docs
def test_describe_documents_shared_and_launcher_fields():
    rows = {p: (v, d) for p, v, d in config_docs.describe(utility_cfg.get_config("digits"),
                                                           config_docs.UTILITY)}
    assert rows["data.name"] == ("digits", config_docs.SHARED["data.name"])
    assert rows["trials"][1].startswith("networks trained")
    assert rows["model.width"][1]
    undocumented = [p for p, (_, d) in rows.items() if not d]
    assert undocumented == []
    text = config_docs.format_table(list(config_docs.describe(train_cfg.get_config("digits"),
                                                                config_docs.TRAIN)))
    assert "epochs = 30" in text and "# training epochs" in text


def test_extra_docs_and_the_algorithm_hook():
    docs = {"lr_img": "image learning rate", "seed": "overridden"}
    rows = config_docs.describe({"lr_img": 2.0, "seed": 1, "ipc": 1}, docs)
    assert rows == [("lr_img", 2.0, "image learning rate"), ("seed", 1, "overridden"),
                    ("ipc", 1, config_docs.SHARED["ipc"])]
    assert config_docs.algorithm_docs({"seed": 0}) == {}
    assert config_docs.algorithm_docs({"algorithm": "dm"})  # the registry's settings docs
    with pytest.raises(ValueError, match="unknown algorithm"):
        config_docs.algorithm_docs({"algorithm": "nope"})


# ----------------------------------------------------------------------- runlocal
def test_parse_arg_splits_options():
    assert common.parse_arg("mnist,runlocal") == ("mnist", frozenset({"runlocal"}))
    assert common.parse_arg("dc,mnist") == ("dc,mnist", frozenset())
    assert common.parse_arg("", "digits") == ("digits", frozenset())
    assert sweep_cfg.parse_arg("dm,digits,runlocal") == ("dm", "digits", frozenset({"runlocal"}))


@pytest.mark.parametrize("module,arg", [
    (utility_cfg, "digits,runlocal"), (train_cfg, "digits,runlocal"), (buffer_cfg, "digits,runlocal"),
    (sweep_cfg, "dc,digits,runlocal"), (stratify_cfg, "dc,digits,runlocal"),
    (mc_cfg, "dc,digits,runlocal"), (evaluate_cfg, "runlocal")])
def test_every_config_loads_with_runlocal_and_shrinks(module, arg):
    small = module.get_config(arg)
    full = module.get_config(arg.replace(",runlocal", "").replace("runlocal", ""))
    small_fields = dict((p, v) for p, v, _ in config_docs.describe(small))
    full_fields = dict((p, v) for p, v, _ in config_docs.describe(full))
    assert set(small_fields) == set(full_fields)  # same fields, same code path
    changed = [p for p in full_fields if small_fields[p] != full_fields[p]]
    assert changed, f"runlocal changed nothing in {module.__name__}"
    for path in ("model.width", "iterations", "epochs", "trials", "num_experts", "eval.epochs",
                 "monte_carlo.trials", "selection.utility.trials"):
        if path in full_fields and full_fields[path]:
            assert small_fields[path] <= full_fields[path]
    if "data.train_per_class" in small_fields:
        assert small_fields["data.train_per_class"] == 100
