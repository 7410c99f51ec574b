"""Launchers end to end on the embedded digits (`:digits,runlocal`): command line,
refusal of a changed config, TensorBoard files, and resume == uninterrupted run."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from gold import workdir as gwork
from gold.configs import train as train_cfg
from gold.configs import utility as utility_cfg
from gold.train import train_and_evaluate
from gold.utility import load_utility, run as utility_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(script, *args, env=None):
    """(exit code, stdout, stderr) of ``python launch/<script> args`` (progress as log lines)."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "GOLD_PROGRESS": "log", **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("script", ["utility.py", "train.py", "buffer.py", "sweep.py"])
def test_help_exits_zero_and_lists_flags(script):
    code, out, _ = _launch(script, "--help")
    assert code == 0
    assert "--config" in out and "--workdir" in out and "show_config" in out


def test_unknown_dataset_is_one_line_without_traceback(tmp_path):
    code, _, err = _launch("utility.py", "--config=configs/utility.py:mnistt",
                           f"--workdir={tmp_path}")
    assert code == 1
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: unknown dataset 'mnistt'")
    assert "Traceback" not in err


def test_show_config_lists_documented_fields():
    code, out, _ = _launch("utility.py", "--config=configs/utility.py:digits,runlocal", "--show_config")
    assert code == 0
    assert "trials = 2" in out and "# networks trained from scratch" in out
    assert "data.train_per_class = 100" in out


def test_train_launcher_runs_refuses_a_changed_config_and_keeps_a_finished_run(tmp_path):
    wd = str(tmp_path / "train")
    code, out, err = _launch("train.py", "--config=configs/train.py:digits,runlocal", f"--workdir={wd}")
    assert code == 0, err
    assert "test_accuracy=" in out
    for name in ("config.json", "metrics.csv", "result.json"):
        assert os.path.exists(os.path.join(wd, name))
    assert glob.glob(os.path.join(wd, "events.out.tfevents.*"))
    assert os.path.isdir(os.path.join(wd, "checkpoints", "3"))
    rows = open(os.path.join(wd, "metrics.csv"), encoding="utf-8").read().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"]
    code, _, err = _launch("train.py", "--config=configs/train.py:digits,runlocal", "--config.lr=0.1",
                           f"--workdir={wd}")
    assert code == 1 and "error: workdir" in err and "lr: 0.01 -> 0.1" in err and "Traceback" not in err
    code, out, err = _launch("train.py", "--config=configs/train.py:digits,runlocal", f"--workdir={wd}")
    assert code == 0 and "finished run" in out
    assert open(os.path.join(wd, "metrics.csv"), encoding="utf-8").read().splitlines() == rows


def test_utility_launcher_runs_end_to_end(tmp_path):
    wd = str(tmp_path / "u")
    code, out, err = _launch("utility.py", "--config=configs/utility.py:digits,runlocal",
                             "--config.indicator=el2n", f"--workdir={wd}")
    assert code == 0, err
    u = load_utility(os.path.join(wd, "utility.npz"))
    assert u.indicator == "el2n" and u.num_samples == 1000
    assert glob.glob(os.path.join(wd, "events.out.tfevents.*"))
    code, _, err = _launch("utility.py", "--config=configs/utility.py:digits,runlocal",
                           "--config.indicator=loss", f"--workdir={wd}")
    assert code == 1 and "indicator: 'el2n' -> 'loss'" in err


# ---------------------------------------------------------- resume == uninterrupted
def _interrupt_at(monkeypatch, step):
    """Make the run stop with Ctrl-C right after it logs ``step`` (before that step's
    checkpoint), as a kill between two checkpoints would."""
    original = gwork.MetricsWriter.write

    def write(self, s, **scalars):
        original(self, s, **scalars)
        if s == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(gwork.MetricsWriter, "write", write)


def _metrics(wd):
    return open(os.path.join(wd, "metrics.csv"), encoding="utf-8").read().splitlines()


def test_train_resumed_after_a_kill_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = train_cfg.get_config("digits,runlocal")
    cfg.epochs = 4
    full = train_and_evaluate(cfg, str(tmp_path / "full"))
    wd = str(tmp_path / "killed")
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(cfg, wd)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1", "2"]
    resumed = train_and_evaluate(cfg, wd)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert resumed["train_loss"] == full["train_loss"]
    assert _metrics(wd) == _metrics(str(tmp_path / "full"))  # no duplicated rows


def test_utility_resumed_mid_chunk_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = utility_cfg.get_config("digits,runlocal")  # 2 trials x 3 epochs
    cfg.trials_per_chunk = 1  # 2 chunks: steps 1-3 trial 0, 4-6 trial 1
    full = utility_run(cfg, str(tmp_path / "full"))
    wd = str(tmp_path / "killed")
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)  # checkpoint 4 holds trial 1 after its first epoch
        with pytest.raises(KeyboardInterrupt):
            utility_run(cfg, wd)
    resumed = utility_run(cfg, wd)
    a = load_utility(full["utility_path"])
    b = load_utility(resumed["utility_path"])
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.curve, b.curve)
    for name in ("el2n_curve", "forgetting", "train_loss", "features"):
        np.testing.assert_array_equal(a.extras[name], b.extras[name])
    # same rows once (the wall-clock `seconds` column aside)
    assert [r.rsplit(",", 1)[0] for r in _metrics(wd)] == [
        r.rsplit(",", 1)[0] for r in _metrics(str(tmp_path / "full"))]
