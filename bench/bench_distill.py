"""Benchmark one DC step (IPC 1 and IPC 10) and one DM step: JAX vs PyTorch, same CPU.

Usage::

    python bench/bench_distill.py                   # everything (~10 min on 2 cores)
    python bench/bench_distill.py --sections dc1,dm --reps 3
    python bench/bench_distill.py --json /tmp/bench_distill.json

Setting (the paper's DC network): ConvNetD3 width 128 (instance norm, avg pool), real MNIST
(28x28x1, padded to 32x32 inside the net as in the reference), 10 classes x 256 real
images per class per matching step (``--batch-real``), noise-initialised synthetic images.

Sections (seconds per step; JAX: compiled ahead, median of ``--reps`` executions;
PyTorch: median of ``--reps`` after one warm-up step, ``torch.get_num_threads()`` threads):

* dc1:  DC IPC 1, (outer, inner) = (1, 1): 10 per-class matchings + 1 image update.
* dc10: DC IPC 10, (10, 50): 10 x (10 matchings + image update) + 9 x 50 network
        steps on the 100 synthetic images (one reference iteration; reps forced to 1).
* dm:   DM IPC 1 without augmentation (the PyTorch step has none): 10 per-class mean
        embeddings of 256 real + 1 synthetic image through a fresh net, 1 image update.
        The JAX DM step with DSA is timed too (``dm_dsa``).
* variants: DC IPC 1 with XLA's own convolution (``conv_impl='xla'``) instead of the
        shifted-matmul weight gradient, and with the class loop unrolled.

* parity: the same DC matching loss of one class and its gradient w.r.t. the
        synthetic images, JAX (gold) vs the PyTorch reference formulas, on identical
        weights (copied from a PyTorch ConvNet) in float64: relative differences.

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
for p in (ROOT, os.path.join(ROOT, "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import jax  # noqa: E402

from gold.configs import dc as dc_config  # noqa: E402
from gold.configs import dm as dm_config  # noqa: E402
from gold import data as gdata  # noqa: E402
from gold.distill import common, registry  # noqa: E402

SECTIONS = ("parity", "dc1", "dc10", "dm", "variants", "torch")


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


class TorchStep:
    """The PyTorch reference step (bench/torch_reference.py); ``once()`` times one call."""

    def __init__(self, kind: str, x, y, ipc: int, outer=1, inner=1, width=128, batch_real=256):
        import torch
        import torch_reference as tr

        torch.manual_seed(0)
        np.random.seed(0)
        self.threads = torch.get_num_threads()
        if kind == "dc":
            self.obj = tr.TorchDC(x, y, 10, ipc, outer, inner, batch_real=batch_real, width=width)
        else:
            self.obj = tr.TorchDM(x, y, 10, ipc, batch_real=batch_real, width=width)

    def once(self) -> float:
        t = time.perf_counter()
        self.obj.step()
        return time.perf_counter() - t


def compare(jax_step: JaxStep, torch_step, reps: int, warmup: bool = True) -> tuple[dict, dict]:
    """Alternate JAX and PyTorch calls (so both see the same machine load); medians."""
    if warmup:
        jax_step.once()
        if torch_step is not None:
            torch_step.once()
    tj, tt = [], []
    for _ in range(reps):
        tj.append(jax_step.once())
        if torch_step is not None:
            tt.append(torch_step.once())
    rj = {"compile_s": jax_step.compile_s, "step_s": float(np.median(tj)), "all_s": tj}
    rt = None if torch_step is None else {"step_s": float(np.median(tt)), "all_s": tt,
                                          "threads": torch_step.threads}
    return rj, rt


def parity(x, y) -> dict:
    """gold's DC class loss / image gradient vs the PyTorch reference, float64."""
    import jax.numpy as jnp
    import torch
    import torch_reference as tr
    from gold import models
    from gold import nn as gnn
    from gold.distill import matching

    jax.config.update("jax_enable_x64", True)
    try:
        torch.manual_seed(0)
        net = tr.ConvNet(1, 10, 16, 3, (28, 28)).double()
        c = 3
        xr = x[y == c][:64].astype(np.float64)
        xs = np.random.default_rng(0).normal(size=(2, 28, 28, 1))
        loss_t, gx_t = tr.dc_class_loss_and_image_grad(net, xr, xs, c)
        model = models.get_model("convnet", 10, (28, 28, 1), width=16)
        p = jax.tree.map(jnp.asarray, tr.flax_params_from_torch(net))
        f = lambda q, xx: jnp.mean(gnn.per_sample_cross_entropy(model.apply({"params": q}, xx),
                                                                 jnp.full((len(xx),), c)))
        g_real = jax.grad(f)(p, jnp.asarray(xr))
        loss_j, gx_j = jax.value_and_grad(
            lambda xx: matching.gradient_distance(g_real, jax.grad(f)(p, xx), "ours"))(jnp.asarray(xs))
    finally:
        jax.config.update("jax_enable_x64", False)
    return {"loss_torch": loss_t, "loss_jax": float(loss_j),
            "loss_rel_diff": abs(loss_t - float(loss_j)) / abs(loss_t),
            "grad_rel_diff": float(np.abs(np.asarray(gx_j) - gx_t).max() / np.abs(gx_t).max())}


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
    if "parity" in sections:
        res = parity(x, y)
        out["parity"] = res
        print(f"parity (float64, width 16): loss {res['loss_jax']:.12g} vs torch {res['loss_torch']:.12g}, "
              f"rel diff {res['loss_rel_diff']:.1e}; image-gradient rel diff {res['grad_rel_diff']:.1e}",
              flush=True)
    use_torch = "torch" in sections

    def pair(name_j, cfg, torch_args, reps, warmup=True):
        js = JaxStep(cfg, x, y)
        ts = TorchStep(*torch_args) if use_torch and torch_args else None
        rj, rt = compare(js, ts, reps, warmup)
        record(f"jax_{name_j}", rj)
        if rt is not None:
            record(f"torch_{name_j}", rt)

    if "dc1" in sections:
        pair("dc_ipc1", dc_cfg(1, w, b), ("dc", x, y, 1, 1, 1, w, b), args.reps)
    if "variants" in sections:
        pair("dc_ipc1_xla_conv", dc_cfg(1, w, b, **{"model.conv_impl": "xla"}), None, args.reps)
        pair("dc_ipc1_unrolled", dc_cfg(1, w, b, class_loop="unroll"), None, args.reps)
    if "dm" in sections:
        pair("dm_ipc1", dm_cfg(w, "none", b), ("dm", x, y, 1, 1, 1, w, b), args.reps)
        pair("dm_ipc1_dsa", dm_cfg(w, dm_config.get_config("mnist").dsa_strategy, b), None, args.reps)
    if "dc10" in sections:  # one reference iteration each, no warm-up (minutes per call)
        pair("dc_ipc10", dc_cfg(10, w, b), ("dc", x, y, 10, 10, 50, w, b), 1, warmup=False)
    out["load_end"] = os.getloadavg()[0]
    print("\nratios JAX / PyTorch (goal <= 0.8):")
    for name in ("dc_ipc1", "dc_ipc10", "dm_ipc1"):
        if f"jax_{name}" in out and f"torch_{name}" in out:
            r = out[f"jax_{name}"]["step_s"] / out[f"torch_{name}"]["step_s"]
            out[f"ratio_{name}"] = r
            print(f"  {name:10s} {out[f'jax_{name}']['step_s']:7.2f} s vs {out[f'torch_{name}']['step_s']:7.2f} s"
                  f"  -> {r:.2f}x")
    print(f"load average start {out['load_start']:.1f}, end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
