"""The massive-ores pipeline on a streamed dataset: utility -> selection -> class-split DM
-> evaluation.

``run(config, workdir)`` (``launch/stream.py``, ``configs/stream.py``):

1. the sources: a record set (``gold.data.stream.RecordSource``) for image datasets, a clip
   folder (``VideoFolderSource``, decode cache in ``stream.cache_dir``) for video ones;
   the training split at ``stream.dir`` and the held-out split at
   ``<stream.dir>/<stream.test_split>`` (checked at start: classes and sample shape);
2. the selection, decided from ids and labels only (no pixel is read for it):
   ``selection.indicator`` ``none`` (everything), ``random`` (class-wise random), or
   ``loss`` (the streamed loss indicator, ``gold.utility.streamed``, in
   ``workdir/utility``, or the scores of ``selection.utility_path``), kept greedily at
   ``selection.ratio`` with at least ``ipc`` per class;
3. class-split DM over the kept samples only (``gold.distill.streamed.distill_groups``:
   ``stream.num_groups`` groups, 0 = the paper's for the ipc), merged into
   ``workdir/distill/synthetic.npz``;
4. the evaluation (``config.eval``): ``eval.num_models`` networks trained on the (small,
   in-memory) synthetic set by ``gold.evaluate``, tested on the held-out split streamed
   in batches of ``eval.test_batch_size`` (``gold.evaluate.evaluate_streamed``; the first
   ``eval.max_test`` samples when > 0). ``eval.num_models=0`` skips it, explicitly.

Every stage resumes from what an interrupted run left in ``workdir`` (the evaluation, the
last and cheapest stage, is rerun). ``result.json`` holds the accuracy (mean, std, per
network) and the seconds of every stage.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import jax
import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import evaluate as gev
from gold import rng as grng
from gold.data import stream as gstream
from gold.distill import class_split
from gold.distill import streamed as gdstream
from gold.selection import policies
from gold.utility import artifact as gart
from gold.utility import loss as gloss
from gold.utility.streamed import stream_loss_utility
from gold.workdir import write_json


def decode_cache(config: Any, workdir: str) -> str:
    """The clip decode cache: ``stream.cache_dir``, or ``<workdir>/decode_cache``."""
    return str(config.stream.cache_dir) or os.path.join(workdir, "decode_cache")


def open_source(config: Any, workdir: str) -> Any:
    """The training split of ``config.data.name`` at ``config.stream.dir``.

    Raises:
      ValueError: ``stream.dir`` unset (says what it must hold).
    """
    info = gdata.get_info(config.data.name)
    where = str(config.stream.dir)
    if not where:
        kind = ("a clip folder <dir>/train/<class>/<clip>.npy|.mp4" if info.is_video else
                "a record set (gold.data.stream.convert_imagenet64_npz / convert_tfds)")
        raise ValueError(f"set --config.stream.dir to {kind}")
    if info.is_video:
        return gstream.VideoFolderSource(where, "train", frames=int(config.stream.frames),
                                         size=int(config.stream.size), cache_dir=decode_cache(config, workdir))
    return gstream.RecordSource(where)


def open_test_source(config: Any, workdir: str, train: Any) -> Any:
    """The held-out split at ``<stream.dir>/<stream.test_split>``: a record set, or the
    clip folder's split (decoded like the training clips).

    Raises:
      FileNotFoundError: no such split (the message names the path, how to write it, and
        ``eval.num_models=0`` to skip the evaluation).
      ValueError: classes or sample shape that differ from ``train``'s.
    """
    split = str(config.stream.test_split)
    where = os.path.join(str(config.stream.dir), split)
    video = gdata.get_info(config.data.name).is_video
    if not (os.path.isdir(where) if video else os.path.isfile(os.path.join(where, gstream.records.INDEX))):
        how = (f"the clips as {where}/<class>/<clip>.npy|.mp4 (the training class folder names)" if video else
               f"a record set there: gold.data.stream.convert_tfds('imagenet_resized/64x64', '{where}', "
               f"split='validation') or convert_imagenet64_npz(<npz dir>, '{where}', split='val')")
        raise FileNotFoundError(f"the evaluation streams the held-out split from {where}, which does not exist; "
                                f"write {how}, point --config.stream.test_split at another sub-folder, or skip "
                                f"the evaluation with --config.eval.num_models=0")
    if video:
        test = gstream.VideoFolderSource(str(config.stream.dir), split, frames=int(config.stream.frames),
                                         size=int(config.stream.size), cache_dir=decode_cache(config, workdir))
        if test.classes != train.classes:
            raise ValueError(f"{where}: class folders {list(test.classes)[:5]}... differ from the training "
                             f"split's {list(train.classes)[:5]}... (labels are the sorted folder names)")
    else:
        test = gstream.RecordSource(where)
        if test.num_classes != train.num_classes:
            raise ValueError(f"{where}: {test.num_classes} classes, the training records have {train.num_classes}")
    if tuple(test.shape) != tuple(train.shape):
        raise ValueError(f"{where}: samples {tuple(test.shape)}, the training split has {tuple(train.shape)}")
    return test


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


def evaluate(config: Any, x: np.ndarray, y: np.ndarray, test: Any, num_classes: int) -> dict:
    """Test accuracy of the synthetic set ``(x float32 [M, *shape], y int32 [M])``:
    ``config.eval`` networks trained by ``gold.evaluate`` (key: the run's ``eval`` stream),
    tested on ``test`` streamed in record order (``eval.max_test > 0``: its first samples).

    Returns:
      ``accuracy_mean`` / ``accuracy_std`` / ``accuracies`` (percent), ``num_test``,
      ``eval_seconds`` and the protocol.
    """
    import grain

    protocol = config_utils.eval_protocol(config)
    info = gdata.get_info(config.data.name)
    limit = int(config.eval.get("max_test", 0) or 0)
    batches = gstream.ordered_batches(test, protocol.test_batch_size, limit).to_iter_dataset(
        grain.ReadOptions(num_threads=int(config.stream.read_threads), prefetch_buffer_size=2))
    res = gev.evaluate_streamed(grng.stream(grng.root(int(config.seed)), "eval"), x, y, batches, num_classes,
                                protocol, mesh=gev.evaluation_mesh(protocol.num_models, config.get("mesh")),
                                pixel_stats=(info.mean, info.std))
    return {"accuracy_mean": res.mean, "accuracy_std": res.std, "accuracies": [float(a) for a in res.accuracies],
            "num_test": len(test) if limit <= 0 else min(limit, len(test)), "eval_seconds": res.seconds,
            "eval_protocol": protocol.to_dict()}


def run(config: Any, workdir: str, *, source: Optional[Any] = None, test_source: Optional[Any] = None) -> dict:
    """Utility, selection, class-split DM and the streamed evaluation on
    ``config.stream.dir``; writes ``result.json`` and returns it.

    Args:
      config: ``configs/stream.py``.
      workdir: the run's folder (rerunning resumes).
      source, test_source: the training / held-out sources (default: opened from
        ``config.stream``; e.g. a ``gold.data.stream.CountingSource`` to audit reads).

    Raises:
      FileNotFoundError: no held-out split while ``eval.num_models > 0`` (before any
        stage runs).
    """
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    source = open_source(config, workdir) if source is None else source
    evaluated = int(config.eval.num_models) > 0
    if evaluated and test_source is None:  # fail before hours of utility and DM, not after
        test_source = open_test_source(config, workdir, source)
    kept = kept_ids(config, source, workdir)
    t_select = time.time() - start
    groups = group_count(config, source.num_classes)
    if groups > 1:  # splitting classes must not change the method (DM without BatchNorm)
        class_split.check_splittable(config, tuple(source.shape), source.num_classes)
    x, y = gdstream.distill_groups(config, source, kept, iterations=int(config.iterations), num_groups=groups,
                                   workdir=os.path.join(workdir, "distill"),
                                   checkpoint_every=int(config.stream.checkpoint_every),
                                   read_threads=int(config.stream.read_threads))
    t_distill = time.time() - start - t_select
    result = {"algorithm": str(config.algorithm), "dataset": str(config.data.name), "ipc": int(config.ipc),
              "iterations": int(config.iterations), "num_groups": groups,
              "num_real": int(len(source) if kept is None else len(kept)), "num_samples": int(len(source)),
              "synthetic_shape": list(x.shape), "selection_seconds": t_select, "distill_seconds": t_distill}
    if evaluated:
        result.update(evaluate(config, x, y, test_source, source.num_classes))
    else:
        result["evaluation"] = "skipped: eval.num_models=0"
    result.update(seconds=time.time() - start, num_devices=jax.device_count())
    write_json(os.path.join(workdir, "result.json"), result)
    return result


__all__ = ["decode_cache", "evaluate", "group_count", "kept_ids", "open_source", "open_test_source", "run",
           "utility_scores"]
