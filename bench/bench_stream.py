"""Streaming benchmark: loader throughput, DM time per iteration and host memory on an
ImageNet-64-shaped stream of 1,000 classes (generated pixels), against the kept ratio.

Run (2-core CPU sizes; numbers go to bench/notes/stream.md):
  python bench/bench_stream.py --workdir=/tmp/bench_stream
  python bench/bench_stream.py --workdir=/tmp/bench_stream --sections=memory
  python bench/bench_stream.py --workdir=/tmp/bench_stream --sections=pipeline --per_class=20 --depth=3
  python bench/bench_stream.py --workdir=/tmp/bench_stream --sections=video_pipeline --classes=16 \
      --per_class=10 --val_per_class=2 --pipeline_ratio=0.5 --width=16 --depth=4 --eval_epochs=5

Sections (``--sections``, comma-separated):
* ``loader``: images/s of class-balanced batches read from array_record shards (grain,
  1 and 2 read threads), clips/s of a generated clip folder (decode cold vs decode cache).
* ``dm``: seconds per DM iteration (after the compiling first one) at IPC 1 and 10 for
  kept ratios 100/30/10 % of ``--per_class`` images per class, the per-class real batch
  following the paper's halving rule (noise init: the step's cost does not depend on the
  init, and a 10% class may keep fewer than 10 images); each run in its own process, with
  its peak RSS. ``--group_classes=100`` times one class group of class-split DM (the
  paper splits ImageNet DM into 4-20 groups), reading from the 1,000-class stream.
* ``memory``: peak RSS of the same DM run (fixed selection: ``--fixed_kept`` per class) on
  generated datasets of ``--per_class`` and ``4 x --per_class`` images per class.
* ``pipeline``: the whole ``launch/stream.py`` pipeline (``gold.experiments.streamed.run``,
  ``configs/stream.py:imagenet64``) on the generated set and a generated held-out split of
  ``--val_per_class`` images per class: selection (``--indicators``: the streamed loss
  indicator, 1 trial x 1 epoch, or random) at ``--pipeline_ratio``, class-split DM (the
  paper's groups at IPC 1) for ``--steps`` + 1 iterations, evaluation of ``--eval_models``
  networks for ``--eval_epochs`` epochs tested on the streamed split; seconds per stage and
  peak RSS, each run in its own process. Then the same random-selection run on a 4x larger
  train and held-out set with the same number of kept images per class (memory flat in N).
* ``video_pipeline``: the same pipeline (``configs/stream.py:kinetics400``, ConvNet + GRU,
  no DSA, the paper's 8 class groups at IPC 1) on a generated clip folder of ``--classes``
  classes x ``--per_class`` clips (and ``--val_per_class`` held-out clips) of 16 frames
  of 64x64, decoded to 8 frames, random selection at ``--pipeline_ratio``.
Every measurement prints one JSON line; ``--out`` collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPE = (64, 64, 3)


def generate(folder: str, classes: int, per_class: int, seed: int = 0) -> str:
    """An ImageNet-64-shaped record set of ``classes * per_class`` random images (cached)."""
    from gold.data import stream as gs

    if os.path.isfile(os.path.join(folder, "index.npz")):
        return folder
    rng = np.random.default_rng(seed)
    n, chunk = classes * per_class, 4096

    def batches():
        for s in range(0, n, chunk):
            ids = np.arange(s, min(s + chunk, n))
            yield ids, ids % classes, rng.integers(0, 256, (len(ids), *SHAPE), dtype=np.uint8)

    gs.write_records(folder, batches(), num_classes=classes, name="imagenet64")
    return folder


def generate_clips(root: str, split: str, classes: int, per_class: int, raw: tuple[int, ...],
                   seed: int = 0) -> str:
    """``<root>/<split>/c<class>/<j>.npy``: uniform-random uint8 clips of shape ``raw``
    ``[T, H, W, C]`` (cached: an existing split folder is kept). Returns ``root``."""
    if os.path.isdir(os.path.join(root, split)):
        return root
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, split, f"c{c:03d}"))
        for j in range(per_class):
            np.save(os.path.join(root, split, f"c{c:03d}", f"{j}.npy"), rng.integers(0, 256, raw, dtype=np.uint8))
    return root


def kept_ids(labels: np.ndarray, classes: int, per_class: int) -> np.ndarray:
    """The first ``per_class`` ids of every class (a fixed class-wise selection)."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(classes)]))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loader(args) -> list[dict]:
    import grain

    from gold.data import stream as gs

    src = gs.RecordSource(generate(os.path.join(args.workdir, f"rec_{args.per_class}"), args.classes,
                                   args.per_class))
    out = []
    for threads in (1, 2):
        plan = gs.BalancedPlan.build(src, None, 8, seed=threads)
        ds = gs.balanced_batches(src, plan, args.loader_steps).to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2))
        t = time.perf_counter()
        n = sum(len(b.y) for b in ds)
        out.append({"what": "loader_images", "threads": threads, "images": n,
                    "images_per_s": n / (time.perf_counter() - t)})
    root = generate_clips(os.path.join(args.workdir, "clips"), "train", 20, 5, (64, 128, 128, 3))
    cache = os.path.join(args.workdir, "clip_cache")
    shutil.rmtree(cache, ignore_errors=True)  # the first pass decodes every clip
    for label in ("decode", "cache"):
        clips = gs.VideoFolderSource(root, frames=8, size=64, cache_dir=cache)
        t = time.perf_counter()
        for i in range(len(clips)):
            clips[i]
        out.append({"what": f"loader_clips_{label}", "clips": len(clips), "raw_clip": [64, 128, 128, 3],
                    "clips_per_s": len(clips) / (time.perf_counter() - t)})
    return out


def dm_run(args, folder: str, keep: int, ipc: int) -> dict:
    """One DM run in this process: per-step times and peak RSS."""
    from gold.configs import dm as dm_config
    from gold.data import stream as gs
    from gold.distill import streamed

    src = gs.RecordSource(folder)
    config = dm_config.get_config("imagenet64")
    config.model.width, config.model.depth = args.width, args.depth
    config.ipc, config.dsa_strategy, config.batch_real, config.init = ipc, "none", 256, "noise"
    kept = kept_ids(src.labels, args.classes, keep)
    stamps = []
    group = tuple(range(args.group_classes)) if args.group_classes else None
    res = streamed.distill_stream(config, src, kept, iterations=args.steps + 1, classes=group,
                                  on_step=lambda t, loss: stamps.append(time.perf_counter()))
    per_step = np.diff(stamps)
    import jax
    from gold import data as gdata
    return {"kept_per_class": keep, "num_kept": int(len(kept)), "ipc": ipc,
            "batch_per_class": gdata.class_batch_size(256, [keep]),
            "seconds_per_iteration": float(np.median(per_step)), "steps_timed": int(len(per_step)),
            "read_wait_s": res.read_seconds, "peak_rss_mb": peak_rss_mb(),
            "classes_per_run": args.group_classes or args.classes,
            "device": jax.devices()[0].device_kind, "width": args.width, "depth": args.depth}


def pipeline_run(args, folder: str, indicator: str, ratio: float, dataset: str) -> dict:
    """One whole streamed pipeline run of ``configs/stream.py:<dataset>`` in this process
    (fresh workdir): seconds per stage, accuracy and peak RSS."""
    import jax

    from gold.configs import stream as stream_config
    from gold.experiments import streamed

    config = stream_config.get_config(dataset)
    config.model.width, config.model.depth = args.width, args.depth
    config.stream.dir = folder
    config.update(ipc=1, iterations=args.steps + 1)
    config.selection.update(indicator=indicator, ratio=ratio)
    config.utility.update(trials=1, epochs=1, depth=args.depth)
    config.eval.update(num_models=args.eval_models, epochs=args.eval_epochs,
                       test_batch_size=min(500, config.eval.test_batch_size))
    workdir = os.path.join(args.workdir, "pipeline_run")
    shutil.rmtree(workdir, ignore_errors=True)
    r = streamed.run(config, workdir)
    return {"dataset": dataset, "indicator": indicator, "ratio": ratio, "num_samples": r["num_samples"], "num_real": r["num_real"],
            "num_test": r["num_test"], "num_groups": r["num_groups"], "iterations": r["iterations"],
            "selection_s": r["selection_seconds"], "distill_s": r["distill_seconds"], "eval_s": r["eval_seconds"],
            "total_s": r["seconds"], "accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"],
            "eval_models": args.eval_models, "eval_epochs": args.eval_epochs, "peak_rss_mb": peak_rss_mb(),
            "device": jax.devices()[0].device_kind, "width": args.width, "depth": args.depth}


def in_subprocess(args, flag: str, value: str) -> dict:
    """The JSON line of this script rerun with ``flag=value`` (one measurement, own process)."""
    cmd = [sys.executable, __file__, f"{flag}={value}", f"--classes={args.classes}", f"--width={args.width}",
           f"--depth={args.depth}", f"--steps={args.steps}", f"--workdir={args.workdir}",
           f"--group_classes={args.group_classes}", f"--eval_models={args.eval_models}",
           f"--eval_epochs={args.eval_epochs}"]
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/bench_stream")
    p.add_argument("--sections", default="loader,dm,memory")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per_class", type=int, default=50)
    p.add_argument("--ratios", default="1,0.3,0.1")
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--steps", type=int, default=2, help="timed DM iterations after the first")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--group_classes", type=int, default=0,
                   help="> 0: time one class group of that many classes (class-split DM; the 1,000-class "
                        "iteration is the sum over groups)")
    p.add_argument("--loader_steps", type=int, default=20)
    p.add_argument("--fixed_kept", type=int, default=5)
    p.add_argument("--val_per_class", type=int, default=5, help="pipeline: held-out images per class")
    p.add_argument("--indicators", default="loss,random", help="pipeline: selection indicators timed")
    p.add_argument("--pipeline_ratio", type=float, default=0.1)
    p.add_argument("--eval_models", type=int, default=2)
    p.add_argument("--eval_epochs", type=int, default=20)
    p.add_argument("--out", default="")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    p.add_argument("--one_pipeline", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        folder, keep, ipc = args.one.rsplit(":", 2)
        print(json.dumps(dm_run(args, folder, int(keep), int(ipc))))
        return
    if args.one_pipeline:
        folder, indicator, ratio, dataset = args.one_pipeline.rsplit(":", 3)
        print(json.dumps(pipeline_run(args, folder, indicator, float(ratio), dataset)))
        return
    os.makedirs(args.workdir, exist_ok=True)
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    sections = args.sections.split(",")
    if "loader" in sections:
        for row in loader(args):
            emit(row)
    if "dm" in sections:
        folder = generate(os.path.join(args.workdir, f"rec_{args.per_class}"), args.classes, args.per_class)
        for ratio in (float(r) for r in args.ratios.split(",")):
            keep = max(1, int(round(ratio * args.per_class)))
            for ipc in (int(i) for i in args.ipcs.split(",")):
                emit({"what": "dm", "ratio": ratio, **in_subprocess(args, "--one", f"{folder}:{keep}:{ipc}")})
    if "memory" in sections:
        for per_class in (args.per_class, 4 * args.per_class):
            folder = generate(os.path.join(args.workdir, f"rec_{per_class}"), args.classes, per_class)
            emit({"what": "memory", "dataset_images": args.classes * per_class,
                  **in_subprocess(args, "--one", f"{folder}:{args.fixed_kept}:1")})
    if "pipeline" in sections:
        keep = max(1, int(round(args.pipeline_ratio * args.per_class)))
        runs = [(1, indicator) for indicator in args.indicators.split(",")] + [(4, "random")]
        for scale, indicator in runs:
            per_class = scale * args.per_class
            folder = generate(os.path.join(args.workdir, f"rec_{per_class}"), args.classes, per_class)
            generate(os.path.join(folder, "val"), args.classes, scale * args.val_per_class, seed=1)
            emit({"what": "pipeline", **in_subprocess(args, "--one_pipeline",
                                                       f"{folder}:{indicator}:{keep / per_class}:imagenet64")})
    if "video_pipeline" in sections:
        root = os.path.join(args.workdir, "pipeline_clips")
        generate_clips(root, "train", args.classes, args.per_class, (16, 64, 64, 3))
        generate_clips(root, "val", args.classes, args.val_per_class, (16, 64, 64, 3), seed=1)
        emit({"what": "video_pipeline", **in_subprocess(args, "--one_pipeline",
                                                         f"{root}:random:{args.pipeline_ratio}:kinetics400")})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
