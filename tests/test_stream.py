"""gold.data.stream (array_record records, video folders, class-balanced streams) and the
streamed DM / loss indicator, on generated tiny data."""

import os
import shutil

import jax
import numpy as np
import pytest

from gold import models as gmodels
from gold import nn as gnn
from gold.configs import dm as dm_config
from gold.data import DatasetError
from gold.data import stream as gs
from gold.distill import streamed
from gold.utility import loss as gloss
from gold.utility.streamed import stream_loss_utility

K = 4


def _images(n=40, shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), (np.arange(n) % K).astype(np.int64)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """40 8x8x3 images of 4 classes in 3 shards (ids 100.. so ids != positions)."""
    d = tmp_path_factory.mktemp("records")
    x, y = _images()
    ids = 100 + np.arange(len(x))
    gs.write_records(d, [(ids[:25], y[:25], x[:25]), (ids[25:], y[25:], x[25:])],
                     num_classes=K, name="imagenet64", records_per_shard=16)
    return d, x, y, ids


def test_records_round_trip_in_shards(records):
    d, x, y, ids = records
    src = gs.RecordSource(d)
    assert src.index.shards == (16, 16, 8) and src.shape == (8, 8, 3) and len(src) == 40
    for i in (0, 15, 16, 39):
        sid, label, px = src[i]
        assert (sid, label) == (ids[i], y[i])
        np.testing.assert_array_equal(px, x[i])
    np.testing.assert_array_equal(src.labels, y)


def test_record_errors(tmp_path):
    x, y = _images(4)
    with pytest.raises(DatasetError, match="uint8"):
        gs.write_records(tmp_path / "a", [(np.arange(4), y, x.astype(np.float32))], num_classes=K, name="t")
    with pytest.raises(DatasetError, match="outside"):
        gs.write_records(tmp_path / "b", [(np.arange(4), y + 4, x)], num_classes=K, name="t")
    with pytest.raises(DatasetError, match="no index.npz"):
        gs.RecordSource(tmp_path)


def test_imagenet64_npz_converter(tmp_path):
    """Ten channel-planar batch files (labels 1..1000) -> NHWC records, ids in file order."""
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 256, (2, 12288), dtype=np.uint8) for _ in range(10)]
    for i, dat in enumerate(data):
        np.savez(tmp_path / f"train_data_batch_{i + 1}.npz", data=dat, labels=np.array([1, 1000]))
    gs.convert_imagenet64_npz(tmp_path, tmp_path / "rec")
    src = gs.RecordSource(tmp_path / "rec")
    assert len(src) == 20 and src.num_classes == 1000
    sid, label, px = src[5]  # batch 3, row 1
    assert (sid, label) == (5, 999)
    r, c, ch = 7, 50, 2
    assert px[r, c, ch] == data[2][1, ch * 4096 + r * 64 + c]
    val = rng.integers(0, 256, (3, 12288), dtype=np.uint8)  # the held-out split the evaluation streams
    np.savez(tmp_path / "val_data.npz", data=val, labels=np.array([3, 7, 1000]))
    gs.convert_imagenet64_npz(tmp_path, tmp_path / "rec" / "val", split="val")
    held_out = gs.RecordSource(tmp_path / "rec" / "val")
    assert held_out.labels.tolist() == [2, 6, 999] and held_out.ids.tolist() == [0, 1, 2]
    assert held_out[1][2][r, c, ch] == val[1, ch * 4096 + r * 64 + c]
    os.remove(tmp_path / "train_data_batch_4.npz")
    with pytest.raises(DatasetError, match="incomplete"):
        gs.convert_imagenet64_npz(tmp_path, tmp_path / "rec2")


def test_tfds_converter_on_mock_imagenet_resized(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        gs.convert_tfds("imagenet_resized/64x64", tmp_path, batch=4)
        tf_source = tfds.data_source("imagenet_resized/64x64", split="train")
        src = gs.RecordSource(tmp_path)
        assert len(src) == 6 and src.shape == (64, 64, 3) and src.num_classes == 1000
        for i in (0, 5):  # across the batch boundary
            sid, label, px = src[i]
            assert (sid, label) == (i, tf_source[i]["label"])
            np.testing.assert_array_equal(px, np.asarray(tf_source[i]["image"]))
        gs.convert_tfds("imagenet_resized/64x64", tmp_path / "val", split="validation", batch=4)
        tf_val = tfds.data_source("imagenet_resized/64x64", split="validation")
        np.testing.assert_array_equal(gs.RecordSource(tmp_path / "val")[3][2], np.asarray(tf_val[3]["image"]))


def test_batches_are_class_balanced_and_read_only_kept_ids(records):
    d, x, y, ids = records
    src = gs.CountingSource(gs.RecordSource(d))
    kept = ids[::3]  # classes keep 4, 3, 3, 4 samples; 4 per class per step
    plan = gs.BalancedPlan.build(src, kept, per_class=4, seed=0)
    ds = gs.balanced_batches(src, plan, 6)
    for t in range(6):
        b = ds[t]
        np.testing.assert_array_equal(b.y, np.repeat(np.arange(K), 4))
        assert set(b.ids) <= set(kept)
        counts = np.bincount(y[np.isin(ids, kept)], minlength=K)
        np.testing.assert_array_equal(b.mask.reshape(K, 4).sum(1), np.minimum(counts, 4))
        for c in range(K):  # the distinct draws come first, then they repeat
            row = b.ids[c * 4:(c + 1) * 4]
            m = min(counts[c], 4)
            assert len(set(row[:m])) == m and set(row) == set(row[:m])
    read_ids = np.asarray(src.source.ids)[src.reads]
    assert set(read_ids) <= set(kept) and len(src.reads) == 6 * K * 4
    with pytest.raises(DatasetError, match="no kept samples"):
        gs.BalancedPlan.build(src, ids[y == 0], 2, 0)


def test_stream_and_memory_give_the_same_batches(records):
    d, x, y, ids = records
    kept = ids[ids % 3 != 0]
    disk, mem = gs.RecordSource(d), gs.ArraySource(x, y, K, ids)
    a = gs.balanced_batches(disk, gs.BalancedPlan.build(disk, kept, 3, seed=7), 4)
    b = gs.balanced_batches(mem, gs.BalancedPlan.build(mem, kept, 3, seed=7), 4)
    for t in range(4):
        for u, v in zip(a[t], b[t]):
            np.testing.assert_array_equal(u, v)
    c = gs.balanced_batches(mem, gs.BalancedPlan.build(mem, kept, 3, seed=8), 1)[0]
    assert not np.array_equal(c.ids, a[0].ids)


def test_epoch_order_covers_every_kept_sample_once():
    order, mask = gs.epoch_order(np.arange(10, 17), seed=0, epoch=3, batch_size=3)
    assert order.shape == (3, 3) and mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
    assert sorted(order[mask > 0].tolist()) == list(range(10, 17))


def test_ordered_batches_pass_once_in_record_order(records):
    d, x, y, ids = records
    src = gs.RecordSource(d)
    batches = list(gs.ordered_batches(src, 16))  # 40 records: 16 + 16 + 8 (padded to 16)
    assert [b.x.shape for b in batches] == [(16, 8, 8, 3)] * 3
    mask = np.concatenate([b.mask for b in batches])
    np.testing.assert_array_equal(np.concatenate([b.ids for b in batches])[mask > 0], ids)
    np.testing.assert_array_equal(np.concatenate([b.x for b in batches])[mask > 0], x)
    assert mask.sum() == 40 and [len(b.y) for b in gs.ordered_batches(src, 16, limit=20)] == [16, 16]
    assert [len(b.y) for b in gs.ordered_batches(src, 64)] == [40]  # one batch of all, no padding


# ------------------------------------------------------------------------------ video
def _clip_folder(root, clips_per_class=3, frames=12, hw=20):
    rng = np.random.default_rng(2)
    clips = {}
    for c in range(3):
        os.makedirs(root / "train" / f"class{c}", exist_ok=True)
        for j in range(clips_per_class):
            clip = rng.integers(0, 256, (frames, hw, hw, 3), dtype=np.uint8)
            np.save(root / "train" / f"class{c}" / f"clip{j}.npy", clip)
            clips[(c, j)] = clip
    return clips


def test_video_folder_decodes_frames_and_caches(tmp_path):
    clips = _clip_folder(tmp_path)
    np.testing.assert_array_equal(gs.video.frame_positions(12, 8), [0, 2, 3, 5, 6, 8, 9, 11])
    src = gs.VideoFolderSource(tmp_path, frames=8, size=20, cache_dir=tmp_path / "cache")
    assert src.shape == (8, 20, 20, 3) and src.num_classes == 3 and len(src) == 9
    sid, label, clip = src[4]  # class1/clip1
    assert (sid, label) == (4, 1)
    np.testing.assert_array_equal(clip, clips[(1, 1)][[0, 2, 3, 5, 6, 8, 9, 11]])
    decoded = src.decoded
    np.testing.assert_array_equal(src[4][2], clip)
    assert src.decoded == decoded  # second read: from the decode cache
    small = gs.VideoFolderSource(tmp_path, frames=4, size=10)
    assert small[0][2].shape == (4, 10, 10, 3)
    with pytest.raises(DatasetError, match="no such folder"):
        gs.VideoFolderSource(tmp_path, split="test")


def test_video_container_is_decoded(tmp_path):
    import av
    path = tmp_path / "train" / "a" / "v.mp4"
    os.makedirs(path.parent)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    src = gs.VideoFolderSource(tmp_path, frames=8, size=16)
    clip = src[0][2]
    assert clip.shape == (8, 16, 16, 3)
    means = clip.reshape(8, -1).mean(1)
    assert np.all(np.diff(means) > 0)  # frames in time order (brightness ramps up)


# ---------------------------------------------------------------- streamed DM / utility
def _dm_config(**kw):
    config = dm_config.get_config("imagenet64")
    config.model.width, config.model.depth = 4, 1
    config.batch_real, config.dsa_strategy, config.ipc = 4, "none", 2
    for k, v in kw.items():
        config[k] = v
    return config


def test_streamed_dm_resumes_exactly_and_merges_groups(records, tmp_path):
    d, x, y, ids = records
    src = gs.RecordSource(d)
    full = streamed.distill_stream(_dm_config(), src, None, iterations=4)
    streamed.distill_stream(_dm_config(), src, None, iterations=2, workdir=str(tmp_path / "r"))
    resumed = streamed.distill_stream(_dm_config(), src, None, iterations=4, workdir=str(tmp_path / "r"))
    assert resumed.resumed_from == 2 and len(resumed.losses) == 2
    np.testing.assert_allclose(resumed.x, full.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.losses, full.losses[2:], rtol=1e-5)
    np.testing.assert_array_equal(full.y, np.repeat(np.arange(K), 2))
    assert streamed.class_groups(10, 3) == [(0, 1, 2), (3, 4, 5), (6, 7, 8, 9)]
    gx, gy = streamed.distill_groups(_dm_config(), src, ids[ids % 3 != 0], iterations=1, num_groups=2,
                                     workdir=str(tmp_path / "g"))
    assert gx.shape == (K * 2, 8, 8, 3) and gy.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_streamed_loss_utility_matches_a_replay_and_resumes(records, tmp_path):
    d, x, y, ids = records
    src = gs.RecordSource(d)
    kept = ids[ids % 4 != 3]  # 30 samples, batches of 8: the last one has 6
    model = gmodels.get_model("convnet", K, (8, 8, 3), width=4, depth=1)
    s = gloss.TrainSettings(trials=2, epochs=1, lr=1e-2, batch_size=8, trial_mode="unroll")
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    key = jax.random.key(3)
    u = stream_loss_utility(model, src, kept, key, s, workdir=str(tmp_path / "a"), mean=mean, std=std,
                            seed=1, sigma=0.0, chunk_batches=2)
    np.testing.assert_array_equal(u.ids, kept)
    # Replay with gold.nn.train_step: the mean-over-trials loss of each sample before its update.
    tx = s.optimizer_fn()
    step = jax.jit(lambda st, xb, yb: gnn.train_step(model, tx, st, xb, yb)[:2])
    states = gloss.init_states(model, tx, gloss.trial_keys(key, range(2)), (8, 8, 3))
    trials = [jax.tree.map(lambda a, t=t: a[t], states) for t in range(2)]
    pos = gs.kept_positions(src, kept)
    xn = (x.astype(np.float32) / 255 - 0.5) / 0.25
    want = np.zeros(len(x))
    for e in range(1):
        order, mask = gs.epoch_order(pos, 1, e, 8)
        for row, m in zip(order, mask):
            row = row[m > 0]
            per_trial = []
            for t in range(2):
                trials[t], losses = step(trials[t], xn[row], y[row].astype(np.int32))
                per_trial.append(np.asarray(losses))
            want[row] = np.mean(per_trial, 0)
    np.testing.assert_allclose(u.scores, -want[pos], rtol=2e-4, atol=2e-5)
    # Resume: drop the newest checkpoint (the end of the run) and rerun from the one before.
    a = tmp_path / "a" / "checkpoints"
    steps = sorted(int(p) for p in os.listdir(a) if p.isdigit())
    assert steps == [2, 4]  # 4 batches per epoch, a checkpoint every 2 batches, 2 kept
    shutil.rmtree(a / "4")
    again = stream_loss_utility(model, src, kept, key, s, workdir=str(tmp_path / "a"), mean=mean, std=std,
                                seed=1, sigma=0.0, chunk_batches=2)
    np.testing.assert_allclose(again.scores, u.scores, rtol=1e-5, atol=1e-6)
