"""The massive-ores pipeline on a streamed dataset: utility -> selection -> class-split DM.

``run(config, workdir)`` (``launch/stream.py``, ``configs/stream.py``):

1. the source: a record set (``gold.data.stream.RecordSource``) for image datasets, a clip
   folder (``VideoFolderSource``, decode cache in ``stream.cache_dir``) for video ones;
2. the selection, decided from ids and labels only (no pixel is read for it):
   ``selection.indicator`` ``none`` (everything), ``random`` (class-wise random), or
   ``loss`` (the streamed loss indicator, ``gold.utility.streamed``, in
   ``workdir/utility``, or the scores of ``selection.utility_path``), kept greedily at
   ``selection.ratio`` with at least ``ipc`` per class;
3. class-split DM over the kept samples only (``gold.distill.streamed.distill_groups``:
   ``stream.num_groups`` groups, 0 = the paper's for the ipc), merged into
   ``workdir/distill/synthetic.npz``.

Every stage resumes from what an interrupted run left in ``workdir``. The synthetic set
is not evaluated here (an evaluation needs the test split in memory; run
``launch/evaluate.py`` on ``synthetic.npz``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import jax
import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import rng as grng
from gold.data import stream as gstream
from gold.distill import class_split
from gold.distill import streamed as gdstream
from gold.selection import policies
from gold.utility import artifact as gart
from gold.utility import loss as gloss
from gold.utility.streamed import stream_loss_utility
from gold.workdir import write_json


def open_source(config: Any, workdir: str) -> Any:
    """The training split of ``config.data.name`` at ``config.stream.dir``.

    Raises:
      ValueError: ``stream.dir`` unset (says what it must hold).
    """
    info = gdata.get_info(config.data.name)
    where = str(config.stream.dir)
    if not where:
        kind = ("a clip folder <dir>/train/<class>/<clip>.npy|.mp4" if len(info.image_shape) == 4 else
                "a record set (gold.data.stream.convert_imagenet64_npz / convert_tfds)")
        raise ValueError(f"set --config.stream.dir to {kind}")
    if len(info.image_shape) == 4:
        cache = str(config.stream.cache_dir) or os.path.join(workdir, "decode_cache")
        return gstream.VideoFolderSource(where, "train", frames=int(config.stream.frames),
                                         size=int(config.stream.size), cache_dir=cache)
    return gstream.RecordSource(where)


def group_count(config: Any, num_classes: int) -> int:
    """``stream.num_groups``, or the paper's groups at the nearest listed ipc (at most K)."""
    if int(config.stream.num_groups):
        return int(config.stream.num_groups)
    table = dict(config.group_table)
    nearest = min(table, key=lambda i: (abs(i - int(config.ipc)), i))
    return min(int(table[nearest]), num_classes)


def utility_scores(config: Any, source: Any, workdir: str) -> np.ndarray:
    """float32 ``[N]`` loss utility aligned with ``source.ids`` (computed streamed, or read
    from ``selection.utility_path``).

    Raises:
      ValueError: a score file for other samples.
    """
    path = str(config.selection.get("utility_path", "") or "")
    if path:
        u = gart.load_utility(path)
        if not np.array_equal(u.ids, source.ids) or not np.array_equal(u.labels, source.labels):
            raise ValueError(f"{path}: scores for other samples (ids / labels differ from {config.stream.dir})")
        return u.scores
    info = gdata.get_info(config.data.name)
    u_cfg = config.utility
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.depth = int(u_cfg.depth)
    model = config_utils.build_model(model_cfg, source.num_classes, tuple(source.shape))
    settings = gloss.TrainSettings(trials=int(u_cfg.trials), epochs=int(u_cfg.epochs), lr=float(u_cfg.lr),
                                   batch_size=int(u_cfg.batch_size), optimizer=str(u_cfg.optimizer),
                                   trial_mode=str(u_cfg.trial_mode))
    u = stream_loss_utility(model, source, None, grng.substream(jax.random.key(int(config.seed)), "utility.trials"), settings,
                            workdir=os.path.join(workdir, "utility"), mean=info.mean, std=info.std,
                            seed=int(config.seed), dataset=info.name,
                            chunk_batches=int(u_cfg.chunk_batches),
                            read_threads=int(config.stream.read_threads))
    return u.scores


def kept_ids(config: Any, source: Any, workdir: str) -> Optional[np.ndarray]:
    """The selected sample ids (None = all).

    Raises:
      ValueError: an indicator the streamed pipeline does not compute.
    """
    sel = config.selection
    indicator, ratio = str(sel.indicator), float(sel.ratio)
    if indicator == "none" or ratio >= 1.0:
        return None
    labels, k, floor = np.asarray(source.labels), source.num_classes, int(config.ipc)
    if indicator == "random":
        idx = policies.select(grng.stream(grng.root(int(config.seed)), "selection"), labels, k,
                              policy="random", ratio=ratio, min_per_class=floor)
    elif indicator == "loss":
        idx = policies.select(None, labels, k, policy="greedy", ratio=ratio,
                              scores=utility_scores(config, source, workdir), min_per_class=floor)
    else:
        raise ValueError(f"the streamed pipeline selects with none | random | loss, got {indicator!r}")
    return np.asarray(source.ids)[idx]


def run(config: Any, workdir: str) -> dict:
    """Utility, selection and class-split DM on ``config.stream.dir``; writes
    ``result.json`` and returns it."""
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    source = open_source(config, workdir)
    kept = kept_ids(config, source, workdir)
    t_select = time.time() - start
    groups = group_count(config, source.num_classes)
    if groups > 1:  # splitting classes must not change the method (DM without BatchNorm)
        class_split.check_splittable(config, tuple(source.shape), source.num_classes)
    x, _ = gdstream.distill_groups(config, source, kept, iterations=int(config.iterations), num_groups=groups,
                                   workdir=os.path.join(workdir, "distill"),
                                   checkpoint_every=int(config.stream.checkpoint_every),
                                   read_threads=int(config.stream.read_threads))
    result = {"algorithm": str(config.algorithm), "dataset": str(config.data.name), "ipc": int(config.ipc),
              "iterations": int(config.iterations), "num_groups": groups,
              "num_real": int(len(source) if kept is None else len(kept)), "num_samples": int(len(source)),
              "synthetic_shape": list(x.shape), "selection_seconds": t_select,
              "seconds": time.time() - start, "num_devices": jax.device_count()}
    write_json(os.path.join(workdir, "result.json"), result)
    return result


__all__ = ["group_count", "kept_ids", "open_source", "run", "utility_scores"]
