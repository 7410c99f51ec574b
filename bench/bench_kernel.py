"""Benchmark the kernel methods' steps (KIP, FRePo, RFAD) against DC and DM on CPU.

Usage::

    python bench/bench_kernel.py                         # every section
    python bench/bench_kernel.py --sections steps --ipcs 1 --reps 3
    python bench/bench_kernel.py --json /tmp/bench_kernel.json

Setting (the CPU size of BENCHMARKS.md): real MNIST (the first ``--per-class`` training
images of every class), ConvNetD3 width ``--width`` (32), each algorithm's own config
(``configs/<name>.py:mnist,<ipc>``; KIP / FRePo with learned labels) with
``batch_real`` = ``--batch-real`` (64) real images per class (KIP: ``--kip-batch-real``,
20: its step costs K vjps per real image; ``kernel_chunk`` ``--kip-chunk``, 0), real init.

Sections:

* steps: seconds per step (one reference iteration) of kip, frepo, rfad, dc, dm at
  each IPC of ``--ipcs``: compiled ahead (compile time reported apart), median of
  ``--reps`` executions (1 at IPC >= 10 for KIP and DC, whose steps are long).
* kip_memory: XLA's temporary-buffer size (``compiled.memory_analysis()``: the peak
  working set of the step besides its inputs and outputs) of the KIP step at IPC 1
  against the real batch per class (``--kip-batches``), with the whole kernel at once
  and with ``kernel_chunk`` = 10 real images' Jacobians at a time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402

from gold import data as gdata  # noqa: E402
from gold.distill import common, registry  # noqa: E402

SECTIONS = ("steps", "kip_memory")
METHODS = ("kip", "frepo", "rfad", "dc", "dm")


def config_for(name: str, ipc: int, width: int, batch_real: int):
    """``configs/<name>.py`` for MNIST at ``ipc`` (KIP / FRePo / RFAD through their
    "dataset,ipc" argument), width and real batch set, real init."""
    module = importlib.import_module(f"gold.configs.{name}")
    cfg = module.get_config(f"mnist,{ipc}" if name in ("kip", "frepo", "rfad") else "mnist")
    cfg.ipc = ipc
    cfg.model.width = width
    cfg.batch_real = batch_real
    cfg.init = "real"
    return cfg


def compiled_step(cfg, real):
    """(the algorithm, its initial state, the ahead-of-time compiled step, compile seconds)."""
    algo = registry.build(cfg, real)
    state = jax.jit(algo.init)(jax.random.key(0), real)
    start = time.perf_counter()
    step = jax.jit(algo.step).lower(state, jax.random.key(1), real).compile()
    return algo, state, step, time.perf_counter() - start


def time_step(cfg, real, reps: int) -> dict:
    """Median seconds per step over ``reps`` executions and the compile time."""
    _, state, step, compile_s = compiled_step(cfg, real)
    times = []
    for r in range(reps):
        start = time.perf_counter()
        state, metrics = step(state, jax.random.key(2 + r), real)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return {"seconds_per_step": statistics.median(times), "reps": reps, "compile_seconds": compile_s}


def kip_temp_bytes(real, width: int, batch: int, chunk: int) -> int:
    """XLA temporary bytes of the compiled KIP step (IPC 1) at ``batch`` real images per class."""
    cfg = config_for("kip", 1, width, batch)
    cfg.kernel_chunk = chunk
    _, _, step, _ = compiled_step(cfg, common.make_real_data(real.x, real.y, real.num_classes, batch))
    return int(step.memory_analysis().temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--kip-batch-real", type=int, default=20)
    parser.add_argument("--kip-batches", default="10,20,50,100")
    parser.add_argument("--kip-chunk", type=int, default=0,
                        help="KIP's kernel_chunk in the steps section (0 = the whole real batch's Jacobian)")
    parser.add_argument("--per-class", type=int, default=200, help="MNIST training images per class")
    parser.add_argument("--data-dir", default=os.environ.get("GOLD_DATA_DIR", ""))
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    sections = args.sections.split(",")
    ds = gdata.load_dataset("mnist", args.data_dir or None, train_per_class=args.per_class, test_per_class=1,
                            strict_counts=False)
    out = {"setting": vars(args), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}

    if "steps" in sections:
        out["steps"] = {}
        for ipc in (int(i) for i in args.ipcs.split(",")):
            for name in args.methods.split(","):
                batch = args.kip_batch_real if name == "kip" else args.batch_real
                cfg = config_for(name, ipc, args.width, batch)
                if name == "kip":
                    cfg.kernel_chunk = args.kip_chunk
                real = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, batch)
                reps = 1 if ipc >= 10 and name in ("kip", "dc") else args.reps
                res = time_step(cfg, real, reps)
                res["batch_real"] = batch
                out["steps"][f"{name}_ipc{ipc}"] = res
                print(f"{name} ipc {ipc}: {res['seconds_per_step']:.3f} s/step (compile "
                      f"{res['compile_seconds']:.1f} s, batch_real {batch}, load {os.getloadavg()[0]:.1f})",
                      flush=True)

    if "kip_memory" in sections:
        base = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 1)
        out["kip_memory"] = {}
        for batch in (int(b) for b in args.kip_batches.split(",")):
            row = {f"chunk_{c}": kip_temp_bytes(base, args.width, batch, c) / 2**20 for c in (0, 10)}
            out["kip_memory"][batch] = row
            print(f"kip ipc 1, {batch} real/class: temp {row['chunk_0']:.1f} MiB (whole kernel), "
                  f"{row['chunk_10']:.1f} MiB (kernel_chunk 10)", flush=True)

    out["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
