"""gold.distill.loop: end-to-end tiny runs, artifacts, selection, resume, bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.configs import dc as dc_config
from gold.configs import dm as dm_config
from gold import workdir as gwork
from gold.distill import load_synthetic, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(config, data_dir, **over):
    """Seconds-sized run: 20 train / 10 test images per class, width 8, depth 1, 2 eval
    models x 4 epochs."""
    config.data.dir = str(data_dir)
    config.data.train_per_class = 20
    config.data.test_per_class = 10
    config.model.width = 8
    config.model.depth = 1
    config.model.conv_impl = "xla"
    config.batch_real = 8
    config.iterations = 3
    config.eval.num_models = 2
    config.eval.epochs = 4
    config.eval.augment = "none"
    config.checkpoint_every = 1
    config.log_every = 1
    for k, v in over.items():
        node = config
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return config


def test_end_to_end_dm_run_with_selection_and_artifacts(tmp_path, gold_data_dir):
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir, **{
        "selection.indicator": "random", "selection.ratio": 0.5, "ipc": 2,
        "dsa_strategy": "crop_flip", "eval_every": 2})  # Siamese DSA with two cheap op groups
    wd = tmp_path / "dm"
    res = loop.run(cfg, str(wd))
    for f in ("config.json", "result.json", "synthetic.npz", "synthetic.png", "metrics.csv",
              "selection.npz"):
        assert (wd / f).exists(), f
    on_disk = json.loads((wd / "result.json").read_text())
    assert on_disk["num_real"] == res["num_real"] == 100  # 10 of 20 per class kept
    # storage at equal budget: 2 images x 28 x 28 x 1 per class, nothing else learned
    assert on_disk["storage_per_class"] == 2 * 28 * 28 and on_disk["storage_floats"] == 10 * 2 * 28 * 28
    with np.load(wd / "selection.npz") as f:
        assert len(f["ids"]) == 100
    import csv
    with open(wd / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows if r["loss"]] == ["1", "2", "3"]
    assert [r["step"] for r in rows if r["eval_accuracy_mean"]] == ["2", "3"]  # eval_every + final
    for k in ("accuracy_mean", "accuracy_std", "seconds", "algorithm", "dataset", "ipc"):
        assert k in on_disk
    assert on_disk["algorithm"] == "dm" and on_disk["ipc"] == 2 and on_disk["dataset"] == "mnist"
    assert 0.0 <= on_disk["accuracy_mean"] <= 100.0
    syn = load_synthetic(str(wd / "synthetic.npz"))
    assert syn.x.shape == (20, 28, 28, 1) and syn.dataset == "mnist" and syn.ipc == 2
    assert syn.protocol.num_models == 2 and syn.lr is None and syn.meta["num_real"] == 100
    # evaluates anywhere: same key + same test images -> same accuracies as the run
    again = syn.evaluate(jax.random.fold_in(jax.random.key(cfg.seed), 4), data_dir=str(gold_data_dir),
                         test_per_class=10, strict_counts=False)
    np.testing.assert_allclose(again.accuracies, on_disk["accuracies"], atol=1e-6)
    pix = syn.to_pixels()  # de-normalised: pixels = x * std + mean
    np.testing.assert_allclose(pix, syn.x * 0.3081 + 0.1307, rtol=1e-5, atol=1e-6)
    from PIL import Image
    with Image.open(wd / "synthetic.png") as img:
        assert img.size[0] > img.size[1]  # 10 class columns of 2 images


def test_iterations_zero_evaluates_random_real_baseline(tmp_path, gold_data_dir):
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir, iterations=0, init="real")
    res = loop.run(cfg, str(tmp_path / "base"))
    syn = load_synthetic(str(tmp_path / "base" / "synthetic.npz"))
    ds = loop.load_data(cfg.data)
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    for x, y in zip(syn.x, syn.y):  # the initial set = real images of the right class
        match = np.flatnonzero(np.all(flat == x.reshape(-1), axis=1))
        assert len(match) and ds.y_train[match[0]] == y
    assert res["iterations"] == 0 and res["num_real"] == 200


def _launch(workdir, data_dir, extra=(), cache_dir=None):
    args = [sys.executable, os.path.join(REPO, "launch", "distill.py"),
            "--config=" + os.path.join(REPO, "configs", "dc.py") + ":mnist", f"--workdir={workdir}",
            f"--config.data.dir={data_dir}", "--config.data.train_per_class=20",
            "--config.data.test_per_class=10", "--config.model.width=8", "--config.model.depth=1",
            "--config.model.conv_impl=xla", "--config.batch_real=8", "--config.iterations=40",
            "--config.eval.num_models=2", "--config.eval.epochs=4", "--config.eval.augment=none",
            "--config.checkpoint_every=1", "--config.log_every=1", *extra]
    env = {**os.environ, "PYTHONPATH": REPO}
    if cache_dir:  # the three processes share compiled programs (identical executables)
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def test_sigkill_and_resume_gives_the_same_synthetic_set(tmp_path, gold_data_dir):
    killed, cache = tmp_path / "killed", tmp_path / "jax_cache"
    proc = _launch(killed, gold_data_dir, cache_dir=cache)
    ckpt = killed / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if ckpt.exists() else []
        if done and max(done) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not (killed / "result.json").exists()
    resumed = _launch(killed, gold_data_dir, cache_dir=cache)
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, out
    assert "resumed from checkpoint at iteration" in out
    straight = tmp_path / "straight"
    ref = _launch(straight, gold_data_dir, cache_dir=cache)
    out = ref.communicate(timeout=600)[0].decode()
    assert ref.returncode == 0, out
    a = load_synthetic(str(killed / "synthetic.npz"))
    b = load_synthetic(str(straight / "synthetic.npz"))
    np.testing.assert_array_equal(a.x, b.x)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (killed, straight))
    assert ra["accuracies"] == rb["accuracies"]
    steps = [int(line.split(",")[0]) for line in (killed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps[:40] == list(range(1, 41))  # rows after the checkpoint were not duplicated


def test_nan_guard_stops_with_the_iteration_and_keeps_last_checkpoint(tmp_path, gold_data_dir, monkeypatch):
    from gold.distill import registry

    build = registry.build

    def nan_at_4th(config, real):  # DM whose loss turns NaN at the 4th iteration
        algo = build(config, real)

        def step(state, key, real_):
            new, m = algo.step(state, key, real_)
            return new, {"loss": jnp.where(state.iteration >= 3, jnp.nan, m["loss"])}

        return algo._replace(step=step)

    monkeypatch.setattr(registry, "build", nan_at_4th)
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir, iterations=6, dsa_strategy="none")
    with pytest.raises(FloatingPointError, match="dm became unstable at iteration 4.*iteration 3"):
        loop.run(cfg, str(tmp_path / "nan"))
    ckpts = sorted(int(d) for d in os.listdir(tmp_path / "nan" / "checkpoints") if d.isdigit())
    assert ckpts[-1] == 3 and not (tmp_path / "nan" / "result.json").exists()


def test_exploding_pixels_stop_the_run_without_a_checkpoint(tmp_path, gold_data_dir):
    """lr_img=1e30 keeps everything finite for a step but the pixels explode: stopped,
    and the message says that no checkpoint exists yet."""
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir, iterations=4, lr_img=1e30,
               dsa_strategy="none", checkpoint_every=0, log_every=4)
    with pytest.raises(FloatingPointError, match="iteration 1 .*no checkpoint was written yet"):
        loop.run(cfg, str(tmp_path / "boom"))


def test_log_chunks_equal_one_step_at_a_time(tmp_path, gold_data_dir):
    """Chunks of steps (one while_loop per log interval) give the synthetic set and the
    mean losses of logging every step; iterations may grow on a finished run."""
    a = tiny(dm_config.get_config("mnist"), gold_data_dir, iterations=4, dsa_strategy="none",
             checkpoint_every=0, log_every=1)
    b = tiny(dm_config.get_config("mnist"), gold_data_dir, iterations=4, dsa_strategy="none",
             checkpoint_every=0, log_every=4)
    res_a = loop.run(a, str(tmp_path / "a"))
    loop.run(b, str(tmp_path / "b"))
    mtime = os.path.getmtime(tmp_path / "a" / "synthetic.npz")
    assert loop.run(a, str(tmp_path / "a")) == res_a  # finished: kept, nothing recomputed
    assert os.path.getmtime(tmp_path / "a" / "synthetic.npz") == mtime
    xa, xb = (load_synthetic(str(tmp_path / d / "synthetic.npz")).x for d in "ab")
    np.testing.assert_allclose(xa, xb, rtol=1e-5, atol=1e-5)
    import csv
    rows = {d: [r for r in csv.DictReader(open(tmp_path / d / "metrics.csv")) if r["loss"]] for d in "ab"}
    assert [r["step"] for r in rows["b"]] == ["4"]
    assert float(rows["b"][0]["loss"]) == pytest.approx(np.mean([float(r["loss"]) for r in rows["a"]]), rel=1e-4)
    # extend the finished run b to 6 iterations: resumes at 4 and equals a straight 6-iteration run
    b.iterations = 6
    loop.run(b, str(tmp_path / "b"))
    c = tiny(dm_config.get_config("mnist"), gold_data_dir, iterations=6, dsa_strategy="none",
             checkpoint_every=0, log_every=4)
    loop.run(c, str(tmp_path / "c"))
    xb, xc = (load_synthetic(str(tmp_path / d / "synthetic.npz")).x for d in "bc")
    np.testing.assert_array_equal(xb, xc)
    b.iterations = 2
    with pytest.raises(ValueError, match="beyond iterations=2"):
        loop.run(b, str(tmp_path / "b"))


def test_bad_inputs_give_one_clear_error_each(tmp_path, gold_data_dir):
    base = lambda **o: tiny(dc_config.get_config("mnist"), gold_data_dir, **o)
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        loop.run(base(algorithm="nope"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="ratio must be in"):
        loop.run(base(**{"selection.indicator": "random", "selection.ratio": 1.5}), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="ratio must be in"):
        loop.run(base(**{"selection.indicator": "random", "selection.ratio": 0.0}), str(tmp_path / "b2"))
    # IPC larger than the smallest kept class with real init (no selection) ...
    with pytest.raises(ValueError, match="needs 25 distinct images per class"):
        loop.run(base(ipc=25, init="real"), str(tmp_path / "c"))
    # ... and through the selection (kept 2 per class < ipc 5)
    with pytest.raises(ValueError, match="min_per_class|fewer than"):
        loop.run(base(ipc=5, init="real", **{"selection.indicator": "random", "selection.stratum": 10,
                                             "selection.num_strata": 10}), str(tmp_path / "c2"))
    # a utility file from another dataset
    from gold.utility import Utility, save_utility
    n = 20 * 10
    u = Utility(scores=np.zeros(n, np.float32), labels=np.repeat(np.arange(10), 20).astype(np.int32),
                ids=np.arange(n, dtype=np.int64), indicator="loss", dataset="digits", settings={},
                seed=0, seconds=0.0)
    upath = str(tmp_path / "digits_utility.npz")
    save_utility(upath, u)
    with pytest.raises(ValueError, match="digits"):
        loop.run(base(**{"selection.indicator": "loss", "selection.ratio": 0.5,
                         "selection.utility_path": upath}), str(tmp_path / "d"))
    # resuming a workdir whose config differs
    wd = str(tmp_path / "e")
    gwork.prepare_workdir(wd, base(ipc=1))
    with pytest.raises(ValueError, match="different config.*ipc: 1 -> 2"):
        loop.run(base(ipc=2), wd)
    # harmless fields may change
    assert gwork.config_differences({"eval_every": 1, "eval": {"epochs": 3}, "data": {"dir": "a"}},
                                    {"eval_every": 5, "eval": {"epochs": 4}, "data": {"dir": "b"}},
                                    loop.HARMLESS_FIELDS) == []


def test_dc_on_embedded_digits_learns_with_the_resolution_depth(tmp_path):
    """Regression: DC on the 8x8 digits stayed at chance with ConvNetD3.
    The digits config now uses ConvNetD1 and DC from noise learns a usable set."""
    cfg = dc_config.get_config("digits")
    assert cfg.model.depth == 1
    cfg.iterations, cfg.checkpoint_every, cfg.log_every = 60, 1000, 1000
    cfg.eval.num_models, cfg.eval.epochs, cfg.eval.augment = 2, 100, "none"
    res = loop.run(cfg, str(tmp_path / "dc_digits"))
    assert res["num_real"] == 1437
    assert res["accuracy_mean"] > 60.0  # chance 10%; measured ~85% (90% after 200 iterations)
