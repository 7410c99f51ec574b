"""The streamed pipeline end to end (``gold.experiments.streamed.run``, what
``launch/stream.py`` runs): selection -> class-split DM (2 groups) -> evaluation streamed
from the held-out split, on a generated record set and a generated clip folder."""

import json
import os

import numpy as np
import pytest

from gold import config_utils
from gold import data as gdata
from gold import evaluate as gev
from gold import rng as grng
from gold.configs import stream as stream_config
from gold.data import stream as gs
from gold.experiments import streamed
from gold.utility.artifact import Utility, save_utility

K = 4


def _config(stream_dir, dataset: str, indicator: str):
    """configs/stream.py at toy size: 2 class groups, 2 DM iterations, 2 evaluation nets."""
    config = stream_config.get_config(f"{dataset},runlocal")
    config.model.width, config.model.depth = 4, 1
    config.stream.update(dir=str(stream_dir), num_groups=2, checkpoint_every=1)
    config.update(iterations=2, ipc=1, batch_real=4, dsa_strategy="none")
    config.selection.update(indicator=indicator, ratio=0.5)
    config.utility.update(trials=1, epochs=2, batch_size=8, depth=1)
    config.eval.update(num_models=2, epochs=3, augment="none", schedule="constant", momentum_reset=False,
                       test_batch_size=8)
    return config


def _records(folder, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8x3 images of K classes (brightness by class) as a record set; ids 1000+."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    x = np.clip(rng.normal(60 + 40 * y[:, None, None, None], 30, (n, 8, 8, 3)), 0, 255).astype(np.uint8)
    gs.write_records(folder, [(1000 + np.arange(n), y, x)], num_classes=K, name="imagenet64")
    return x, y


def test_record_pipeline_reads_kept_ids_evaluates_streamed_and_resumes(tmp_path):
    d = tmp_path / "rec"
    _, y = _records(d, 40, 0)
    # loss scores of a finished utility run (the streamed indicator itself: tests/test_stream.py)
    u = Utility(np.random.default_rng(2).normal(size=40), y, 1000 + np.arange(40), "loss", "imagenet64")
    config = _config(d, "imagenet64", "loss")
    config.selection.utility_path = save_utility(str(tmp_path / "utility"), u)
    with pytest.raises(FileNotFoundError, match=r"rec/val.*eval.num_models=0"):
        streamed.run(config, str(tmp_path / "nothing"))  # no held-out split: refused before any stage
    x_val, y_val = _records(d / "val", 20, 1)
    train, val = gs.CountingSource(gs.RecordSource(d)), gs.CountingSource(gs.RecordSource(d / "val"))
    work = tmp_path / "work"
    r = streamed.run(config, str(work), source=train, test_source=val)

    kept = streamed.kept_ids(config, train.source, str(work))
    for c in range(K):  # the greedy half of every class by utility
        mine = u.labels == c
        assert set(kept[np.isin(kept, u.ids[mine])]) == set(u.ids[mine][np.argsort(-u.scores[mine])[:5]])
    assert r["num_real"] == len(kept) == 20 and r["num_groups"] == 2 and r["synthetic_shape"] == [K, 8, 8, 3]
    assert len(train.reads) and set(train.source.ids[train.reads]) <= set(kept)  # only kept samples read
    assert sorted(set(val.reads)) == list(range(20)) and len(val.reads) == 24  # 3 batches of 8, one padded
    assert json.loads((work / "result.json").read_text())["accuracies"] == r["accuracies"]

    # the streamed accuracy is the in-memory evaluation of the same set on the same data
    with np.load(work / "distill" / "synthetic.npz") as f:
        x_syn, y_syn = f["x"], f["y"]
    info = gdata.get_info("imagenet64")
    memory = gev.evaluate_synthetic(grng.stream(grng.root(config.seed), "eval"), x_syn, y_syn,
                                    np.asarray(gs.normalize(x_val, info.mean, info.std)), y_val, K,
                                    config_utils.eval_protocol(config))
    assert r["num_test"] == 20 and len(r["accuracies"]) == 2
    np.testing.assert_allclose(r["accuracies"], memory.accuracies, atol=1e-4)
    np.testing.assert_allclose([r["accuracy_mean"], r["accuracy_std"]], [memory.mean, memory.std], atol=1e-4)

    # a crash after group 1's last checkpoint: the rerun reads only group 1's init batch
    for done in ("distill/group_0001/synthetic.npz", "distill/synthetic.npz", "result.json"):
        os.remove(work / done)
    train.reads.clear()
    again = streamed.run(config, str(work), source=train, test_source=val)
    assert len(train.reads) == 2 * gdata.class_batch_size(config.batch_real, [5, 5])
    assert set(train.source.ids[train.reads]) <= set(kept)
    assert again["accuracies"] == r["accuracies"]

    config.eval.num_models = 0  # skipping the evaluation is explicit, and recorded
    skipped = streamed.run(config, str(work), source=train)
    assert skipped["evaluation"] == "skipped: eval.num_models=0" and "accuracy_mean" not in skipped


def _clips(root, split: str, per_class: int, seed: int) -> None:
    """``<root>/<split>/class<c>/<j>.npy``: K classes of 6-frame 12x12 clips (brightness by class)."""
    rng = np.random.default_rng(seed)
    for c in range(K):
        os.makedirs(root / split / f"class{c}")
        for j in range(per_class):
            clip = np.clip(rng.normal(60 + 40 * c, 30, (6, 12, 12, 3)), 0, 255).astype(np.uint8)
            np.save(root / split / f"class{c}" / f"{j}.npy", clip)


def test_clip_pipeline_evaluates_on_the_held_out_clips(tmp_path):
    """Random selection (the loss indicator on clips: tests/test_video.py), the ConvNet+GRU."""
    _clips(tmp_path, "train", 4, 0)
    _clips(tmp_path, "val", 2, 1)
    config = _config(tmp_path, "kinetics400", "random")
    config.stream.update(frames=4, size=8)
    work = tmp_path / "work"
    r = streamed.run(config, str(work))
    kept = streamed.kept_ids(config, streamed.open_source(config, str(work)), str(work))
    assert r["num_real"] == len(kept) == 8 and r["num_groups"] == 2 and r["synthetic_shape"] == [K, 4, 8, 8, 3]
    assert r["num_test"] == 8 and len(r["accuracies"]) == 2 and 0 <= r["accuracy_mean"] <= 100
    assert r["eval_protocol"]["augment"] == "none" and r["eval_protocol"]["model"] == "convnet_gru"
    assert len(os.listdir(work / "decode_cache")) == len(kept) + 8  # kept train clips and held-out clips, once
