"""gold.distill.buffer: vmapped experts, storage, resume after a kill, load errors."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.configs import buffer as buffer_config
from gold import models as gmodels
from gold import nn as gnn
from gold import workdir as gwork
from gold.distill import buffer as gbuf
from gold.distill.unroll import flatten_params


def test_vmapped_experts_equal_sequential_experts_and_fit_many():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 8, 8, 1)).astype(np.float32)
    y = (np.arange(24) % 3).astype(np.int32)
    model = gmodels.get_model("convnet", 3, (8, 8, 1), width=4, depth=1)
    run = gbuf.ExpertRun(model, x, y, epochs=2, lr=0.05, batch_size=8, dsa_strategy="flip_crop",
                         x_test=x[:6], y_test=y[:6])
    keys = gbuf.expert_keys(0, 0, 3)
    traj, losses, acc = run.trajectories(keys)
    traj_s, losses_s, acc_s = run.trajectories_sequential(keys)
    assert traj.shape == (3, 3, run.num_params) and losses.shape == (3, 2) and acc.shape == (3,)
    np.testing.assert_allclose(traj, traj_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses, losses_s, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_s)
    assert float(jnp.abs(traj[:, 1] - traj[:, 0]).max()) > 0  # every epoch moves the params
    assert float(jnp.abs(traj[0] - traj[1]).max()) > 0  # experts differ
    # Epoch 0 is the init and the last snapshot is what gold.nn.fit_many trains (same keys).
    fit = jax.jit(lambda k: gnn.fit_many(model, run.tx, k, run.x, run.y, epochs=2, batch_size=8,
                                         augment=run.augment))(keys)
    for i in range(3):
        final = flatten_params(gnn.unstack_variables(fit.variables, i)["params"])[0]
        np.testing.assert_allclose(traj[i, -1], final, rtol=1e-5, atol=1e-6)
    init0 = gnn.init_variables(model, jax.random.fold_in(keys[0], 0), (8, 8, 1))
    np.testing.assert_allclose(traj[0, 0], flatten_params(init0["params"])[0])


def test_bfloat16_storage_round_trip(tmp_path):
    params = np.random.default_rng(0).normal(size=(2, 3, 50)).astype(np.float32)
    gbuf.write_chunk(str(tmp_path), 0, params, np.zeros((2, 2)), np.zeros(2), np.arange(2), "bfloat16")
    with np.load(tmp_path / gbuf.chunk_file(0)) as f:
        stored = f["params"]
    assert stored.dtype == np.uint16
    back = gbuf._decode(stored, "bfloat16").astype(np.float32)
    np.testing.assert_allclose(back, params, rtol=1e-2, atol=1e-2)


def test_fingerprint_is_order_free_and_detects_other_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4, 4, 1)).astype(np.float32)
    y = np.arange(20) % 2
    perm = rng.permutation(20)
    a = gbuf.selection_fingerprint(x, y, 2)
    assert gbuf.fingerprints_match(a, gbuf.selection_fingerprint(x[perm], y[perm], 2), [10, 10], [10, 10])
    x2 = x.copy()
    x2[3] += 0.5
    assert not gbuf.fingerprints_match(a, gbuf.selection_fingerprint(x2, y, 2), [10, 10], [10, 10])


def _tiny_config():
    config = buffer_config.get_config("mnist")
    config.data.train_per_class = 5
    config.data.test_per_class = 2
    config.model.width = 4
    config.model.depth = 1
    config.num_experts = 2
    config.epochs = 2
    config.experts_per_chunk = 1
    config.batch_size = 16
    config.dsa_strategy = "color_crop"
    return config


def test_resume_after_kill_trains_only_missing_chunks(tmp_path):
    config = _tiny_config()
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    res = gbuf.run(config, full)
    assert res["num_experts"] == 2 and res["chunks_trained"] == 2 and res["num_real"] == 50
    # Simulate a kill while chunk 1 was being written: its entry is missing from the
    # manifest and a half-written temporary file is left behind.
    shutil.copytree(full, killed)
    os.remove(os.path.join(killed, gbuf.chunk_file(1)))
    manifest = gwork.read_json(os.path.join(killed, gbuf.MANIFEST))
    del manifest["chunks"]["1"]
    manifest["complete"] = False
    gwork.write_json(os.path.join(killed, gbuf.MANIFEST), manifest)
    with open(os.path.join(killed, gbuf.chunk_file(1) + ".tmp.npz"), "wb") as f:
        f.write(b"garbage")
    chunk0 = os.path.join(killed, gbuf.chunk_file(0))
    stamp = os.stat(chunk0).st_mtime_ns
    with pytest.raises(gbuf.BufferError, match="(?s)partial: 1 of 2 experts.*launch/buffer.py"):
        gbuf.load_buffer(killed)

    res = gbuf.run(config, killed)
    assert res["chunks_trained"] == 1 and res["experts_trained"] == 1 and res["num_experts"] == 2
    assert os.stat(chunk0).st_mtime_ns == stamp  # the finished chunk was not retrained
    a, b = gbuf.load_buffer(full), gbuf.load_buffer(killed)
    assert a.params.shape == (2, 3, b.params.shape[-1])
    np.testing.assert_array_equal(a.params, b.params)
    assert gwork.read_json(os.path.join(killed, gbuf.MANIFEST))["complete"]
    # Snapshot subsets, and more snapshots than stored epochs.
    assert gbuf.load_buffer(killed, num_snapshots=2).params.shape[1] == 2
    with pytest.raises(gbuf.BufferError, match="stores epochs 0..2"):
        gbuf.load_buffer(killed, num_snapshots=4)
    # Other settings in the same directory are refused.
    config.lr = 0.02
    with pytest.raises(gbuf.BufferError, match="other settings.*lr"):
        gbuf.run(config, killed)


def test_missing_buffer_message(tmp_path):
    with pytest.raises(gbuf.BufferError, match="(?s)no expert buffer.*launch/buffer.py"):
        gbuf.load_buffer(str(tmp_path / "none"), dataset="mnist")
