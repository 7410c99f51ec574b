"""MTT benchmarks: expert throughput (vmapped vs sequential) and MTT-step memory vs syn_steps.

Run (CPU-sized defaults, ~10 min on 2 busy cores):
  python bench/bench_mtt.py --sections=experts,memory
GPU / paper-sized (CIFAR-10 shapes, ConvNetD3 width 128, IPC 10):
  python bench/bench_mtt.py --sections=experts,memory --shape=32,32,3 --width=128 \
      --num_images=10000 --experts=10 --epochs=2 --ipc=10 --run_memory

Sections:
* ``experts``: K experts x E epochs on N random images (expert training costs do not
  depend on the pixel values) with DSA, SGD lr 0.01, batch 256, via
  ``gold.distill.buffer.ExpertRun``: all K in one vmapped program vs one compiled
  expert called K times. Reports compile seconds and steady-state expert-epochs per
  hour (a second call with new keys, so no compilation is timed).
* ``memory``: one MTT step's gradient (w.r.t. the synthetic images and the lr) for
  syn_steps in --syn_steps, with and without remat (``jax.checkpoint`` per unrolled
  step). Reports XLA's compiled memory analysis (temp bytes = the peak scratch of the
  program; argument / output bytes); with ``--run_memory`` each setting also runs in a
  fresh subprocess that reports seconds per step and the measured peak (GPU:
  ``memory_stats()['peak_bytes_in_use']``; CPU: peak RSS of the process).

Output: one JSON object per measurement on stdout (and appended to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gold import models as gmodels  # noqa: E402
from gold.distill import buffer as gbuf  # noqa: E402
from gold.distill import mtt  # noqa: E402
from gold.distill.unroll import flat_apply_fn  # noqa: E402


def emit(record: dict, out: str | None) -> None:
    """Print one JSON record (and append it to ``out``)."""
    record = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), **record}
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def bench_experts(args) -> None:
    """Vmapped vs sequential expert training throughput."""
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.num_images, *shape)).astype(np.float32)
    y = (np.arange(args.num_images) % 10).astype(np.int32)
    model = gmodels.get_model("convnet", 10, shape, width=args.width, depth=args.depth)
    run = gbuf.ExpertRun(model, x, y, epochs=args.epochs, lr=0.01, batch_size=256)
    k, e = args.experts, args.epochs
    results = {}
    for mode in ("vmapped", "sequential"):
        fn = run.trajectories if mode == "vmapped" else run.trajectories_sequential
        t0 = time.perf_counter()
        jax.block_until_ready(fn(gbuf.expert_keys(0, 0, k)))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(fn(gbuf.expert_keys(0, k, 2 * k)))
        steady = time.perf_counter() - t0
        results[mode] = steady
        emit({"bench": "experts", "mode": mode, "experts": k, "epochs": e, "num_images": args.num_images,
              "shape": list(shape), "width": args.width, "depth": args.depth,
              "first_call_seconds": round(first, 2), "compile_seconds_est": round(first - steady, 2),
              "steady_seconds": round(steady, 2),
              "expert_epochs_per_hour": round(3600.0 * k * e / steady, 1)}, args.out)
    emit({"bench": "experts", "speedup_vmapped_over_sequential":
          round(results["sequential"] / results["vmapped"], 2)}, args.out)


def _step_fn(args, syn_steps: int, remat: bool):
    """(jitted grad of one MTT step w.r.t. images and lr, its example arguments)."""
    shape = tuple(args.shape)
    model = gmodels.get_model("convnet", 10, shape, width=args.width, depth=args.depth)
    apply, p = flat_apply_fn(model, shape)
    m = 10 * args.ipc
    x = jax.random.normal(jax.random.key(0), (m, *shape))
    y = jnp.repeat(jnp.arange(10), args.ipc)
    theta = 0.01 * jax.random.normal(jax.random.key(1), (p,))
    idx = mtt.minibatch_indices(jax.random.key(2), m, m, syn_steps)
    keys = jax.random.split(jax.random.key(3), syn_steps)

    def loss(x, lr):
        end, _ = mtt.student_end(apply, x, y, lr, theta, idx, keys,
                                 dsa_strategy=args.dsa_strategy, remat=remat)
        return mtt.matching_loss(end, theta, theta + 0.01)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (x, jnp.float32(0.01)), p


def memory_one(args, syn_steps: int, remat: bool) -> dict:
    """Compile (and with --run_memory run) one setting; returns its record."""
    fn, fargs, p = _step_fn(args, syn_steps, remat)
    t0 = time.perf_counter()
    compiled = fn.lower(*fargs).compile()
    compile_s = time.perf_counter() - t0
    rec = {"bench": "memory", "syn_steps": syn_steps, "remat": remat, "ipc": args.ipc,
           "shape": list(args.shape), "width": args.width, "depth": args.depth, "num_params": p,
           "dsa": args.dsa_strategy, "compile_seconds": round(compile_s, 2)}
    ma = compiled.memory_analysis()
    if ma is not None:
        rec.update(temp_mib=round(ma.temp_size_in_bytes / 2**20, 1),
                   argument_mib=round(ma.argument_size_in_bytes / 2**20, 1),
                   output_mib=round(ma.output_size_in_bytes / 2**20, 1))
    if args.run_memory:
        jax.block_until_ready(compiled(*fargs))
        t0 = time.perf_counter()
        for _ in range(args.reps):
            jax.block_until_ready(compiled(*fargs))
        rec["seconds_per_step"] = round((time.perf_counter() - t0) / args.reps, 4)
        stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
        if stats and "peak_bytes_in_use" in stats:
            rec["peak_device_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
        else:
            rec["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return rec


def bench_memory(args) -> None:
    """Memory of one MTT step vs syn_steps, with and without remat."""
    for remat in (True, False):
        for steps in args.syn_steps:
            if args.run_memory:  # a fresh process per setting: clean peak statistics
                cmd = [sys.executable, os.path.abspath(__file__), "--_one", f"{steps},{int(remat)}",
                       *sys.argv[1:]]
                out = subprocess.run(cmd, capture_output=True, text=True)
                lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
                if out.returncode != 0 or not lines:
                    emit({"bench": "memory", "syn_steps": steps, "remat": remat,
                          "error": out.stderr.strip().splitlines()[-1:] or ["failed"]}, args.out)
                    continue
                rec = json.loads(lines[-1])
                emit({k: v for k, v in rec.items() if k not in ("device", "backend")}, args.out)
            else:
                emit(memory_one(args, steps, remat), args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="experts,memory")
    parser.add_argument("--shape", type=lambda s: [int(v) for v in s.split(",")], default=[28, 28, 1])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--num_images", type=int, default=2048)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--syn_steps", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10, 20, 40, 80])
    parser.add_argument("--dsa_strategy", default="color_crop_cutout_scale_rotate",
                        help="no flip by default: the default shape is MNIST's (digits)")
    parser.add_argument("--run_memory", action="store_true", help="also run each setting (subprocess)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        steps, remat = args._one.split(",")
        args.out = None
        emit(memory_one(args, int(steps), bool(int(remat))), None)
        return
    sections = args.sections.split(",")
    if "experts" in sections:
        bench_experts(args)
    if "memory" in sections:
        bench_memory(args)


if __name__ == "__main__":
    main()
