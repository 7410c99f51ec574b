"""Benchmark gold's own DC step (IPC 1 and IPC 10) and DM step, and its variants.

Timing against PyTorch lives in ``bench/bench_reference.py``, which drives the reference
repository's OWN code (VICO-UoE/DatasetCondensation) interleaved with gold; this script
times gold alone, e.g. to compare convolution implementations on a new CPU.

Usage::

    python bench/bench_distill.py                   # everything
    python bench/bench_distill.py --sections dc1,dm --reps 3
    python bench/bench_distill.py --json /tmp/bench_distill.json

Setting (the paper's DC network): ConvNetD3 width 128 (instance norm, avg pool), real MNIST
(28x28x1, padded to 32x32 inside the net as in the reference), 10 classes x 256 real
images per class per matching step (``--batch-real``), noise-initialised synthetic images.

Sections (seconds per step; compiled ahead, median of ``--reps`` executions after one
warm-up):

* dc1:  DC IPC 1, (outer, inner) = (1, 1): 10 per-class matchings + 1 image update.
* dc10: DC IPC 10, (10, 50): 10 x (10 matchings + image update) + 9 x 50 network
        steps on the 100 synthetic images (one reference iteration; one rep, no warm-up).
* dm:   DM IPC 1 without augmentation and with its DSA strategy (``dm_dsa``).
* variants: DC IPC 1 with XLA's own convolution (``conv_impl='xla'``) instead of the
        shifted-matmul weight gradient, and with the class loop unrolled.

Compile times are reported separately (they are paid once per run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402

from gold.configs import dc as dc_config  # noqa: E402
from gold.configs import dm as dm_config  # noqa: E402
from gold import data as gdata  # noqa: E402
from gold.distill import common, registry  # noqa: E402

SECTIONS = ("dc1", "dc10", "dm", "variants")


def load_real(data_dir: str, per_class: int):
    """First ``per_class`` MNIST training images of every class (normalised)."""
    ds = gdata.load_dataset("mnist", data_dir or None, train_per_class=per_class, test_per_class=1,
                            strict_counts=False)
    return ds.x_train, ds.y_train


class JaxStep:
    """One compiled step of ``config.algorithm`` on real MNIST; ``once()`` times one call."""

    def __init__(self, config, x, y):
        self.real = common.make_real_data(x, y, 10, int(config.batch_real))
        algo = registry.build(config, self.real)
        self.state = algo.init(jax.random.key(0), self.real)
        t = time.perf_counter()
        self.fn = jax.jit(algo.step).lower(self.state, jax.random.key(1), self.real).compile()
        self.compile_s = time.perf_counter() - t
        self.calls = 0

    def once(self) -> float:
        self.calls += 1
        t = time.perf_counter()
        self.state, m = self.fn(self.state, jax.random.key(1 + self.calls), self.real)
        jax.block_until_ready((self.state, m))
        return time.perf_counter() - t


def time_step(step: JaxStep, reps: int, warmup: bool = True) -> dict:
    """Median seconds of ``reps`` calls (after one warm-up call) and the compile time."""
    if warmup:
        step.once()
    times = [step.once() for _ in range(reps)]
    return {"compile_s": step.compile_s, "step_s": float(np.median(times)), "all_s": times}


def dc_cfg(ipc: int, width: int, batch_real: int = 256, **over):
    cfg = dc_config.get_config("mnist")
    cfg.ipc, cfg.model.width, cfg.batch_real = ipc, width, batch_real
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def dm_cfg(width: int, strategy: str, batch_real: int = 256):
    cfg = dm_config.get_config("mnist")
    cfg.ipc, cfg.model.width, cfg.batch_real, cfg.init, cfg.dsa_strategy = 1, width, batch_real, "noise", strategy
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-real", type=int, default=256, help="real images per class per matching")
    ap.add_argument("--data-dir", default=os.environ.get("GOLD_DATA_DIR", ""))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    x, y = load_real(args.data_dir, 300)
    print(f"jax {jax.__version__} backend={jax.default_backend()} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}", flush=True)
    out: dict = {"load_start": os.getloadavg()[0], "width": args.width, "batch_real": args.batch_real}

    def record(name, res):
        out[name] = res
        extra = f" compile={res['compile_s']:.1f}s" if "compile_s" in res else ""
        print(f"{name:28s} {res['step_s']:8.2f} s/step{extra}  ({len(res['all_s'])} reps)", flush=True)

    w, b = args.width, args.batch_real

    def run(name, cfg, reps, warmup=True):
        record(name, time_step(JaxStep(cfg, x, y), reps, warmup))

    if "dc1" in sections:
        run("dc_ipc1", dc_cfg(1, w, b), args.reps)
    if "variants" in sections:
        run("dc_ipc1_xla_conv", dc_cfg(1, w, b, **{"model.conv_impl": "xla"}), args.reps)
        run("dc_ipc1_unrolled", dc_cfg(1, w, b, class_loop="unroll"), args.reps)
    if "dm" in sections:
        run("dm_ipc1", dm_cfg(w, "none", b), args.reps)
        run("dm_ipc1_dsa", dm_cfg(w, dm_config.get_config("mnist").dsa_strategy, b), args.reps)
    if "dc10" in sections:  # one reference iteration, no warm-up (minutes per call)
        run("dc_ipc10", dc_cfg(10, w, b), 1, warmup=False)
    out["load_end"] = os.getloadavg()[0]
    print(f"load average start {out['load_start']:.1f}, end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
