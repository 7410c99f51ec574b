"""Per-iteration cost of the run loop's step runner, interleaved in one process.

(a) ``engine.advance`` over a chunk of ``--chunk`` iterations (one jitted
``while_loop``, one host sync per chunk: what ``gold.distill.loop`` runs) against
(b) a Python loop of one jitted step per iteration with a host sync per step (the
previous loop's NaN check). Same algorithm, same keys, real MNIST.

  python bench/bench_engine.py --algorithm=dc --width=128 --batch_real=64 --reps=3
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from gold import data as gdata  # noqa: E402
from gold import rng  # noqa: E402
from gold.distill import common, engine, registry  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--algorithm", default="dc")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch_real", type=int, default=64)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data_dir", default=os.environ.get("GOLD_DATA_DIR", ""))
    args = p.parse_args()
    import importlib

    cfg = importlib.import_module(f"gold.configs.{args.algorithm}").get_config("mnist")
    cfg.model.width, cfg.batch_real = args.width, args.batch_real
    ds = gdata.load_dataset("mnist", args.data_dir or None, train_per_class=500, test_per_class=1,
                            strict_counts=False)
    real = common.make_real_data(ds.x_train, ds.y_train, 10, args.batch_real)
    algo = registry.build(cfg, real)
    root = rng.root(0)
    steps = rng.stream(root, "steps")
    state = algo.init(rng.stream(root, "init"), real)
    advance = jax.jit(lambda st, stop: engine.advance(algo, st, steps, real, stop), donate_argnums=0)

    def checked(st, key):
        st, m = algo.step(st, key, real)
        st = st.replace(iteration=st.iteration + 1)
        return st, m, engine.healthy(algo, st, m["loss"], float("inf"))[0]

    step = jax.jit(checked, donate_argnums=0)
    # compile both
    state, _ = advance(state, np.int32(int(state.iteration) + 1))
    state, _, _ = step(state, rng.step_key(steps, int(state.iteration)))
    t_chunk, t_step = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        state, prog = advance(state, np.int32(int(state.iteration) + args.chunk))
        assert bool(jax.device_get(prog.healthy))
        t_chunk.append((time.perf_counter() - t) / args.chunk)
        t = time.perf_counter()
        for _ in range(args.chunk):
            state, m, ok = step(state, rng.step_key(steps, int(state.iteration)))
            assert bool(ok)  # host sync every step
        t_step.append((time.perf_counter() - t) / args.chunk)
    a, b = float(np.median(t_chunk)), float(np.median(t_step))
    print(f"{args.algorithm} width {args.width} batch_real {args.batch_real}: advance chunk of "
          f"{args.chunk} {a:.3f} s/it, jitted step + sync {b:.3f} s/it, ratio {a / b:.3f}; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
