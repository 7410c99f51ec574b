"""gold.parallel: mesh layouts, clear errors, and the same numbers on 1 and 4 devices.

The layout rules are pure (``mesh_shape``) and checked for 1, 2, 4 and 8 devices in
this process. The equalities run in one subprocess with 4 forced CPU devices
(``XLA_FLAGS`` must be set before JAX starts; the rest of the suite runs with one
device): the sharded K-model evaluation, a DM step under ``jit`` with mesh shardings
(real data replicated and split along ``data``), a short ``engine.distill`` and a
tiny ``loop.run`` against the single-device results.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from gold import parallel
from gold.configs import dm as dm_config


@pytest.mark.parametrize("n, requested, prefer, max_size, expected", [
    (1, None, "model", {"model": 5}, (1, 1, 1)),
    (2, None, "model", {"model": 5}, (1, 2, 1)),
    (4, None, "model", {"model": 5}, (1, 4, 1)),
    (8, None, "model", {"model": 5}, (2, 4, 1)),      # at most 5 model shards: 4, the rest on data
    (8, None, "model", {"model": 10}, (1, 8, 1)),
    (8, None, "data", None, (8, 1, 1)),
    (8, {"model": 2}, "data", None, (4, 2, 1)),
    (8, {"data": 2, "model": 0}, "model", {"model": 5}, (2, 4, 1)),
    (4, {"data": 1, "model": 0, "class": 0}, "model", {"model": 2}, (1, 2, 2)),  # rest to class
    (4, {"data": 2, "model": 2, "class": 1}, "model", None, (2, 2, 1)),
])
def test_mesh_shape_layouts(n, requested, prefer, max_size, expected):
    shape = parallel.mesh_shape(n, requested, prefer=prefer, max_size=max_size)
    assert tuple(shape[a] for a in parallel.AXES) == expected
    assert int(np.prod(expected)) == n


def test_class_axis_auto_divides_the_classes():
    assert parallel.mesh_shape(4, None, prefer="class", divides={"class": 10})["class"] == 2
    assert parallel.mesh_shape(3, None, prefer="class", divides={"class": 10}) == \
        {"data": 3, "model": 1, "class": 1}


@pytest.mark.parametrize("n, requested, kw, match", [
    (3, {"class": 3}, {"divides": {"class": 10}}, "does not divide 10"),
    (4, {"model": 8}, {"max_size": {"model": 5}}, "more model shards than models"),
    (4, {"model": 3}, {}, "does not divide the 4 devices"),
    (8, {"model": 8}, {"max_size": {"model": 5}}, "mesh.model=8: more model shards than models \\(5\\)"),
    (4, {"data": 1, "model": 2, "class": 1}, {}, "leaves 2 of the 4 devices"),
    (4, {"tensor": 2}, {}, "unknown mesh axis 'tensor'"),
    (4, {"data": -1}, {}, "must be >= 0"),
    (4, None, {"prefer": "pipeline"}, "unknown mesh axis 'pipeline'"),
])
def test_impossible_layouts_are_clear_errors(n, requested, kw, match):
    with pytest.raises(ValueError, match=match):
        parallel.mesh_shape(n, requested, **kw)


def test_one_device_gives_the_trivial_mesh_and_helpers_place_trees():
    mesh = parallel.make_mesh({"data": 0, "model": 0, "class": 0}, devices=jax.devices()[:1],
                              prefer="model", max_size={"model": 5})
    assert mesh.axis_names == parallel.AXES and mesh.size == 1 and parallel.is_trivial(mesh)
    assert parallel.is_trivial(None)
    tree = parallel.replicate({"a": np.ones(3, np.float32)}, mesh)
    assert tree["a"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match="mesh has no axis 'tensor'"):
        parallel.along(mesh, "tensor")
    assert parallel.padded_size(5, 4) == 8 and parallel.padded_size(8, 4) == 8
    assert "data=1 model=1 class=1 on 1 cpu device" == parallel.describe(mesh)


def test_one_device_evaluation_is_the_plain_program():
    """On one device the default evaluation runs the unsharded jitted program: the
    same accuracies bit for bit."""
    from gold import evaluate as gev

    rs = np.random.default_rng(0)
    x, y = rs.normal(size=(10, 4, 4, 1)).astype(np.float32), np.arange(10, dtype=np.int32)
    protocol = gev.EvalProtocol(model="mlp", num_models=2, epochs=1, batch_size=5)
    key = jax.random.key(1)
    res = gev.evaluate_synthetic(key, x, y, x, y, 10, protocol)
    plain = gev._compiled(protocol, 10)(jax.random.split(key, 2), x, y, x, y, np.float32(protocol.lr))
    np.testing.assert_array_equal(res.accuracies, np.asarray(plain, np.float64) * 100.0)


def test_config_mesh_is_a_documented_loop_field():
    from gold import config_docs

    cfg = dm_config.get_config("digits")
    assert cfg.mesh.to_dict() == parallel.DEFAULT_MESH
    assert all(f"mesh.{a}" in config_docs.SHARED for a in parallel.AXES)
    assert parallel.mesh_from_config(cfg, prefer="model").size == jax.device_count()
    bad = dm_config.get_config("digits")
    bad.mesh.data = 2  # would only replicate: refused, not silently ignored
    with pytest.raises(ValueError, match="mesh.data=2: nothing is split"):
        parallel.mesh_from_config(bad)


def test_step_mesh_class_axis_only_for_per_class_algorithms():
    from gold.configs import mtt as mtt_config
    from gold.distill import loop

    assert loop.step_mesh(dm_config.get_config("digits"), 10).size == jax.device_count()
    cfg = dm_config.get_config("digits")
    cfg.mesh["class"] = 2  # one device here: the layout itself is impossible
    with pytest.raises(ValueError, match="needs a multiple of 2 devices"):
        loop.step_mesh(cfg, 10)
    cfg = mtt_config.get_config("digits")
    cfg.mesh["class"] = 2
    with pytest.raises(ValueError, match="mesh.class=2: mtt has no per-class loop"):
        loop.step_mesh(cfg, 10)


def test_split_map_outside_a_mesh_is_the_plain_call_and_memory_is_reported():
    fn = lambda c, x: (c * 2, x.sum(axis=1))
    c, x = np.arange(6, dtype=np.int32), np.ones((6, 3), np.float32)
    out = jax.jit(lambda c, x: parallel.split_map(fn, "class", c, x))(c, x)
    np.testing.assert_array_equal(out[0], c * 2)
    np.testing.assert_array_equal(out[1], np.full(6, 3.0))
    keep = jax.numpy.ones((256, 1024), jax.numpy.float32)  # 1 MiB live on device 0
    mem = parallel.device_memory()
    assert mem["devices"] == [f"{d.platform}:{d.id}" for d in jax.local_devices()]
    assert mem["source"] in ("memory_stats", "live_arrays") and mem["in_use_mb"][0] >= 1.0
    assert "MiB" in parallel.describe_memory(mem)
    del keep


# -------------------------------------------------------------- 4 forced CPU devices
FOUR_DEVICES = textwrap.dedent(r'''
    import json, os, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from gold import data as gdata, evaluate as gev, parallel, rng
    from gold.configs import dc as dc_config, dm as dm_config
    from gold.distill import common, engine, registry, loop

    assert jax.device_count() == 4, jax.devices()
    out, t0 = {}, time.time()
    diff = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    one = jax.devices()[:1]
    out["mesh4"] = parallel.mesh_shape(4, None, prefer="model", max_size={"model": 5})
    mesh = parallel.make_mesh(None, prefer="model", max_size={"model": 5})
    out["mesh_shape"] = [int(mesh.shape[a]) for a in parallel.AXES]

    # --- K-model evaluation: 5 networks on 4 devices (padded to 8); the loop below
    # evaluates 3 networks on data=2 x model=2
    ds = gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)
    rs = np.random.default_rng(0)
    x_syn = rs.normal(size=(20, 8, 8, 1)).astype(np.float32)
    y_syn = (np.arange(20) % 10).astype(np.int32)
    protocol = gev.EvalProtocol(model="mlp", num_models=5, epochs=3, batch_size=8, test_batch_size=25)
    key = rng.seed_stream(0, "eval")
    keys = jax.random.split(key, 5)
    args = (x_syn, y_syn, ds.x_test, ds.y_test, jnp.float32(0.01))
    ref = np.asarray(gev.train_and_test_on(None, protocol, 10, keys, *args))
    sharded = np.asarray(gev.train_and_test_on(mesh, protocol, 10, keys, *args))
    auto = gev.evaluate_synthetic(key, x_syn, y_syn, ds.x_test, ds.y_test, 10, protocol)
    out["eval"] = {"ref": ref.tolist(), "sharded": sharded.tolist(),
                   "auto": (auto.accuracies / 100).tolist(), "num_test": int(len(ds.y_test))}
    try:
        gev.train_and_test_on(mesh, protocol, 10, keys[:2], *args)
    except ValueError as e:
        out["eval_error"] = str(e)
    out["t_eval"] = time.time() - t0

    # --- a DM step and a short distill: unsharded vs jit with mesh shardings
    cfg = dm_config.get_config("digits")
    cfg.model.width, cfg.batch_real, cfg.dsa_strategy = 8, 16, "none"
    real = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 16)
    algo = registry.build(cfg, real)
    root = rng.root(0)
    state = algo.init(rng.stream(root, "init"), real)
    skey = rng.step_key(rng.stream(root, "steps"), 0)
    st1, m1 = jax.jit(algo.step)(state, skey, real)
    dmesh = parallel.make_mesh(None, prefer="data")
    rep = parallel.replicated(dmesh)
    results = {}
    for placement in parallel.REAL_PLACEMENTS:
        real4 = parallel.place_real(real, dmesh, placement)
        step4 = jax.jit(algo.step, in_shardings=(rep, rep, parallel.shardings_of(real4)),
                        out_shardings=rep)
        st4, m4 = step4(parallel.replicate(state, dmesh), parallel.replicate(skey, dmesh), real4)
        x1, x4 = algo.synthetic(st1).x, algo.synthetic(st4).x
        results[placement] = {"x": diff(x1, x4), "moved": diff(x1, algo.synthetic(state).x),
                              "loss": diff(m1["loss"], m4["loss"]),
                              "devices": len(jax.tree.leaves(st4.params)[0].sharding.device_set),
                              "real_spec": str(real4.x.sharding.spec)}
    out["dm_step"] = results
    distill = lambda k, r: engine.distill(algo, k, r, 3)
    syn1, p1 = jax.jit(distill)(root, real)
    real4 = parallel.place_real(real, dmesh, "data")
    syn4, p4 = jax.jit(distill, in_shardings=(rep, parallel.shardings_of(real4)), out_shardings=rep)(
        parallel.replicate(root, dmesh), real4)
    out["distill"] = {"x": diff(syn1.x, syn4.x), "loss": diff(p1.metrics["loss"], p4.metrics["loss"]),
                      "steps": int(p4.steps), "healthy": bool(p4.healthy)}
    out["t_steps"] = time.time() - t0

    def on_mesh(fn, mesh, *args):  # fn as one program per device (the loop's jit site)
        rep = parallel.replicated(mesh)
        prog = jax.jit(parallel.replicated_program(fn, mesh, len(args)),
                       in_shardings=(rep,) * len(args), out_shardings=rep)
        return prog(*parallel.replicate(args, mesh)), prog.lower(*args).as_text()

    # --- the class axis: DM on 8 classes over class=4, DC on 10 over data=2 x class=2
    keep = ds.y_train < 8
    real8 = common.make_real_data(ds.x_train[keep], ds.y_train[keep], 8, 16)
    split = {}
    for name, mod, r, req in (("dm", dm_config, real8, {"class": 4}), ("dc", dc_config, real, {"class": 2})):
        cfg = mod.get_config("digits")
        cfg.model.name, cfg.model.width, cfg.batch_real, cfg.dsa_strategy = "mlp", 8, 16, "none"
        if name == "dc":
            cfg.ipc, cfg.outer_loop, cfg.inner_loop = 2, 2, 1
        algo = registry.build(cfg, r)
        state = algo.init(rng.stream(root, "init"), r)
        cmesh = parallel.make_mesh(req, prefer="class", divides={"class": r.num_classes})
        st1, m1 = jax.jit(algo.step)(state, skey, r)
        (st4, m4), text = on_mesh(algo.step, cmesh, state, skey, r)
        x1 = algo.synthetic(st1).x
        split[name] = {"x": diff(x1, algo.synthetic(st4).x), "loss": diff(m1["loss"], m4["loss"]),
                       "moved": diff(x1, algo.synthetic(state).x), "all_gather": "all_gather" in text,
                       "mesh": [int(cmesh.shape[a]) for a in parallel.AXES]}
    out["class_split"] = split

    # --- an MTT step (replicated on data=4) on a fake expert buffer
    import tempfile
    sys.path.insert(0, "tests")
    import test_mtt as tm
    real_m, bdir = tm._real(), tempfile.mkdtemp()
    cfg = tm._config(bdir, max_start_epoch=2, expert_epochs=1)
    tm.write_fake_buffer(bdir, real_m, cfg, epochs=3)
    algo = registry.build(cfg, real_m)
    state = algo.init(jax.random.key(0), real_m)
    st1, m1 = jax.jit(algo.step)(state, jax.random.key(5), real_m)
    (st4, m4), _ = on_mesh(algo.step, dmesh, state, jax.random.key(5), real_m)
    out["mtt"] = {"x": diff(algo.synthetic(st1).x, algo.synthetic(st4).x),
                  "lr": diff(algo.synthetic(st1).lr, algo.synthetic(st4).lr),
                  "loss": diff(m1["loss"], m4["loss"]),
                  "moved": diff(algo.synthetic(st1).x, algo.synthetic(state).x)}

    # --- one loss-indicator epoch: 3 trials over model=4 (padded to 4) vs one program
    from gold import config_utils
    from gold.utility import loss as gloss
    import ml_collections
    net = config_utils.build_model(ml_collections.ConfigDict({"name": "mlp", "width": 16}), 10, (8, 8, 1))
    ts = gloss.TrainSettings(trials=3, epochs=1, batch_size=64, trials_per_chunk=3, trial_mode="vmap")
    ukey = jax.random.key(3)
    u1 = gloss.train_trials(net, ds.x_train, ds.y_train, ukey, ts, keep_first=False)
    umesh = parallel.make_mesh({"model": 4}, prefer="model")
    u4 = gloss.train_trials(net, ds.x_train, ds.y_train, ukey, ts, keep_first=False, mesh=umesh)
    out["utility"] = {f: diff(getattr(u1, f), getattr(u4, f))
                      for f in ("loss_curve", "el2n_curve", "correct_curve", "train_loss")}
    out["utility"]["mean_loss"] = float(np.mean(u1.loss_curve))
    out["t_more"] = time.time() - t0

    # --- the run loop on 4 devices (the tiny config of the test's workdir)
    if len(sys.argv) > 1:
        cfg = dm_config.get_config("digits")
        cfg.update_from_flattened_dict(json.loads(sys.argv[2]))
        res = loop.run(cfg, sys.argv[1])
        out["run"] = {"accuracies": res["accuracies"], "final_loss": res["final_loss"]}
    out["t_total"] = time.time() - t0
    print("RESULT " + json.dumps(out))
''')

RUN_CONFIG = {"model.width": 8, "batch_real": 16, "dsa_strategy": "none", "iterations": 3,
              "log_every": 2, "checkpoint_every": 2, "data.train_per_class": 12,
              "data.test_per_class": 5, "eval.num_models": 3, "eval.epochs": 2, "eval.model": "mlp"}


def run_on_four_devices(script: str, *args: str, timeout: int = 900) -> dict:
    """Run the Python source ``script`` (with ``args`` as ``sys.argv[1:]``) in a
    subprocess with 4 forced CPU devices (added to the suite's ``XLA_FLAGS``,
    conftest.py) and return the JSON it prints after ``RESULT `` on its last such line."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """The subprocess's measurements (JSON) and the loop's 4-device workdir."""
    workdir = str(tmp_path_factory.mktemp("run4"))
    return run_on_four_devices(FOUR_DEVICES, workdir, json.dumps(RUN_CONFIG)), workdir


def test_four_device_mesh(four_devices):
    out, _ = four_devices
    assert out["mesh4"] == {"data": 1, "model": 4, "class": 1} and out["mesh_shape"] == [1, 4, 1]


def test_sharded_k_model_evaluation_equals_one_device(four_devices):
    ev = four_devices[0]["eval"]
    tol = 1.0 / ev["num_test"] + 1e-6  # exact, or at most one test image apart
    for name in ("sharded", "auto"):
        np.testing.assert_allclose(ev[name], ev["ref"], atol=tol, err_msg=name)
    assert "4 model shards but only 2 evaluation networks" in four_devices[0]["eval_error"]


def test_dm_step_under_the_mesh_equals_one_device(four_devices):
    for placement, r in four_devices[0]["dm_step"].items():
        assert r["x"] <= 1e-5 and r["loss"] <= 1e-5, (placement, r)
        assert r["devices"] == 4
    assert "data" in four_devices[0]["dm_step"]["data"]["real_spec"]


def test_distill_under_the_mesh_equals_one_device(four_devices):
    d = four_devices[0]["distill"]
    assert d["steps"] == 3 and d["healthy"]
    assert d["x"] <= 1e-5 and d["loss"] <= 1e-5, d


def test_class_split_dc_and_dm_steps_equal_one_device(four_devices):
    """DM's 8 classes over class=4 and DC's 10 over data=2 x class=2: each device loops
    over its classes, the results are all-gathered; the same numbers."""
    split = four_devices[0]["class_split"]
    assert split["dm"]["mesh"] == [1, 1, 4] and split["dc"]["mesh"] == [2, 1, 2]
    for name, r in split.items():
        assert r["all_gather"], name
        assert r["moved"] > 1e-3, (name, r)  # the step did something
        assert r["x"] <= 1e-5 and r["loss"] <= 1e-5, (name, r)


def test_mtt_step_on_four_devices_equals_one_device(four_devices):
    r = four_devices[0]["mtt"]
    assert r["moved"] > 0
    assert r["x"] <= 1e-5 and r["lr"] <= 1e-5 and r["loss"] <= 1e-5, r


def test_loss_indicator_epoch_split_along_model_equals_one_program(four_devices):
    r = four_devices[0]["utility"]
    assert np.isfinite(r["mean_loss"]) and r["mean_loss"] > 0
    for name in ("loss_curve", "el2n_curve", "correct_curve", "train_loss"):
        assert r[name] <= 1e-5, (name, r)


def test_run_loop_on_four_devices_equals_one_device(four_devices, tmp_path):
    from gold.distill import artifacts, loop

    out, workdir4 = four_devices
    cfg = dm_config.get_config("digits")
    cfg.update_from_flattened_dict(RUN_CONFIG)
    res = loop.run(cfg, str(tmp_path))
    syn1 = artifacts.load_synthetic(os.path.join(tmp_path, "synthetic.npz"))
    syn4 = artifacts.load_synthetic(os.path.join(workdir4, "synthetic.npz"))
    np.testing.assert_allclose(syn4.x, syn1.x, atol=1e-5)
    assert abs(out["run"]["final_loss"] - res["final_loss"]) <= 1e-5
    np.testing.assert_allclose(out["run"]["accuracies"], res["accuracies"], atol=100.0 / 50 + 1e-6)
