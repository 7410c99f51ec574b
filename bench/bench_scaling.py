"""Step time of DC and DM, and K-model evaluation time, against the number of devices.

    python bench/bench_scaling.py --devices=1,2,4 --dataset=mnist --width=32 --steps=5

Each device count runs in its own process with ``XLA_FLAGS=--xla_force_host_platform_
device_count=N`` (CPU) or, with ``--real``, on the first N real devices. The steps run
as the run loop runs them (``gold.parallel.replicated_program`` under ``jax.jit`` with
the mesh's shardings): the per-class loop of DC / DM split along ``class``, the
evaluation's K networks along ``model``.

* strong scaling: K = ``--classes`` classes (default 8, so 1, 2, 4 divide it) on 1..N
  devices;
* weak scaling: ``--per_device`` classes per device (K = per_device x N), and as many
  evaluation networks as devices.

On forced CPU devices all "devices" share the same cores: the curve measures the
overhead of the split (shard_map, all-gathers, smaller per-device programs), not a
speed-up. Prints one JSON line per (mode, devices, what) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, sys, time
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from gold import data as gdata, evaluate as gev, parallel, rng
from gold.configs import dc as dc_config, dm as dm_config
from gold.distill import common, registry

a = json.loads(sys.argv[2])
n = a["n"]
devices = jax.devices()[:n]
ds = gdata.load_dataset(a["dataset"], train_per_class=a["train_per_class"], test_per_class=a["test_per_class"],
                        strict_counts=False)


def timed(fn, *args, steps):
    out = fn(*args)                      # compile + first run
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


for mode in a["modes"]:
    k = a["classes"] if mode == "strong" else a["per_device"] * n
    keep = ds.y_train < k
    real = common.make_real_data(ds.x_train[keep], ds.y_train[keep], k, a["batch_real"])
    mesh = parallel.make_mesh({"class": n, "data": 1, "model": 1}, devices=devices)
    for name, mod in (("dc", dc_config), ("dm", dm_config)):
        cfg = mod.get_config(a["dataset"])
        cfg.model.width, cfg.batch_real, cfg.ipc = a["width"], a["batch_real"], a["ipc"]
        algo = registry.build(cfg, real)
        state = algo.init(rng.stream(rng.root(0), "init"), real)
        key = rng.step_key(rng.stream(rng.root(0), "steps"), 0)
        rep = parallel.replicated(mesh)
        step = jax.jit(parallel.replicated_program(algo.step, mesh, 3), in_shardings=(rep,) * 3,
                       out_shardings=rep)
        args = parallel.replicate((state, key, real), mesh)
        sec = timed(step, *args, steps=a["steps"])
        print("ROW " + json.dumps({"mode": mode, "devices": n, "what": f"{name} step", "classes": k,
                                   "seconds": sec}), flush=True)
    models = a["models"] if mode == "strong" else n
    protocol = gev.EvalProtocol(model="convnet", model_overrides=(("width", a["width"]),),
                                num_models=models, epochs=a["eval_epochs"], batch_size=256)
    x = np.asarray(ds.x_train[: k * a["ipc"] * 10])
    y = np.asarray(ds.y_train[: k * a["ipc"] * 10]) % k
    emesh = gev.evaluation_mesh(models, {"model": n, "data": 1, "class": 1}, devices=devices)
    keys = jax.random.split(jax.random.key(0), models)
    xt, yt = ds.x_test[: a["test_per_class"] * 10], ds.y_test[: a["test_per_class"] * 10] % k
    sec = timed(lambda: gev.train_and_test_on(emesh, protocol, k, keys, x, y, xt, yt, np.float32(0.01)),
                steps=max(1, a["steps"] // 2))
    print("ROW " + json.dumps({"mode": mode, "devices": n, "what": f"eval {models} models",
                               "classes": k, "seconds": sec}), flush=True)
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--modes", default="strong,weak")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--batch_real", type=int, default=64)
    p.add_argument("--classes", type=int, default=8, help="strong scaling: classes (divisible by every N)")
    p.add_argument("--per_device", type=int, default=2, help="weak scaling: classes per device")
    p.add_argument("--models", type=int, default=4, help="strong scaling: evaluation networks")
    p.add_argument("--eval_epochs", type=int, default=20)
    p.add_argument("--train_per_class", type=int, default=200)
    p.add_argument("--test_per_class", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="timed calls after the compiling one (median)")
    p.add_argument("--real", action="store_true", help="use the first N real devices, no forced CPU devices")
    args = p.parse_args()
    rows = []
    for n in [int(v) for v in args.devices.split(",")]:
        env = dict(os.environ)
        if not args.real:
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        payload = {**vars(args), "n": n, "modes": args.modes.split(",")}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", CHILD, ROOT, json.dumps(payload)], env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{n} devices failed:\n{proc.stderr[-4000:]}")
        for line in proc.stdout.splitlines():
            if line.startswith("ROW "):
                rows.append(json.loads(line[4:]))
                print(line[4:], flush=True)
        print(f"# {n} devices: {time.time() - t0:.0f}s wall", flush=True)
    print("\n| mode | what | classes | devices | seconds | x 1-device |\n|---|---|---|---|---|---|")
    base = {(r["mode"], r["what"].split()[0]): r["seconds"] for r in rows if r["devices"] == 1}
    for r in rows:
        ratio = r["seconds"] / base.get((r["mode"], r["what"].split()[0]), float("nan"))
        print(f"| {r['mode']} | {r['what']} | {r['classes']} | {r['devices']} | {r['seconds']:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
