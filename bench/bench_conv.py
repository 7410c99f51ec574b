"""Benchmark the convolution paths of gold.models on the CPU (one run prints everything).

Usage::

    python bench/bench_conv.py                # all sections (several minutes on 2 cores)
    python bench/bench_conv.py --quick        # fewer repetitions, no flag sweep
    python bench/bench_conv.py --sections layer,step --reps 5

Sections (all timings: median of ``--reps`` runs after 2 warm-up calls, jitted,
``block_until_ready``; milliseconds):

* env:    versions, load average, matmul roof (2048^2 ``jnp.dot``).
* layer:  one 128->128 3x3 SAME conv on 256x16x16: forward, input grad, weight grad,
          fwd+bwd, for XLA (NHWC and NCHW), the shifted-matmul custom vjp, and bf16.
* step:   ConvNetD3 (W128, 32x32x3, B=256, 10 classes) cross-entropy gradient w.r.t.
          the parameters, xla vs shifted conv; instance-norm as the manual two-pass
          ``InstanceNorm`` vs Flax ``GroupNorm(group_size=1)``; 2x2 pooling as reshape vs
          ``reduce_window``.
* dc:     DC gradient matching, grad w.r.t. 10 synthetic images of the 1-cos matching
          loss against a 256-image real batch (grad-of-grad through every conv).
* vmap:   K=4 ConvNetD3 gradients (B=64 each) vmapped over networks vs a Python loop.
* flags:  the layer + step sections re-run in subprocesses under XLA_FLAGS variants.
* torch:  the same layer and ConvNetD3 B=256 gradient in PyTorch (if importable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402

import gold.models.convnet as convnet_mod  # noqa: E402
from gold.models import conv2d, get_model  # noqa: E402

FLAG_SETS = [
    "",
    "--xla_cpu_use_thunk_runtime=false",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_enable_fast_math=true",
]


def timeit(fn: Callable, *args: Any, reps: int = 5, warmup: int = 2) -> float:
    """Median wall time in ms of ``fn(*args)`` (jitted by the caller) after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def compare(results: dict, cases: dict[str, tuple[Callable, tuple]], reps: int,
            warmup: int = 2, notes: dict[str, str] | None = None,
            base: Callable[[str], str] | None = None) -> None:
    """Time several jitted cases *interleaved* (round-robin, rotating order).

    Interleaving makes the ratios robust to load that drifts during the run (this
    machine is shared). Prints the median ms of each case and its ratio to its base
    case: ``base(name)`` if given and a known case, else the first case.
    """
    names = list(cases)
    for name in names:
        fn, args = cases[name]
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, args = cases[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    med = {n: float(np.median(times[n]) * 1e3) for n in names}
    for name in names:
        ref = base(name) if base is not None else names[0]
        ref = ref if ref in med else names[0]
        note = (notes or {}).get(name, "")
        emit(results, name, med[name], f"x{med[name] / med[ref]:.2f} vs '{ref}' {note}".rstrip())


def emit(results: dict, key: str, ms: float, note: str = "") -> None:
    """Record and print one timing (ms)."""
    results[key] = ms
    print(f"  {key:<48s} {ms:9.1f} ms {note}", flush=True)


def section_env(results: dict, reps: int) -> None:
    print(f"== env: jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{len(os.sched_getaffinity(0))} cpus usable, load avg {os.getloadavg()[0]:.2f}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048))
    ms = timeit(jax.jit(jnp.dot), a, a, reps=reps)
    emit(results, "matmul 2048^3", ms, f"({2 * 2048 ** 3 / ms / 1e6:.0f} GFLOP/s)")


def section_layer(results: dict, reps: int) -> None:
    print("== layer: 128->128 3x3 SAME conv, x 256x16x16x128")
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(ks[0], (256, 16, 16, 128))
    w = 0.03 * jax.random.normal(ks[1], (3, 3, 128, 128))
    dy = jax.random.normal(ks[2], (256, 16, 16, 128))
    flop = 2 * 256 * 16 * 16 * 128 * 128 * 9

    def vjps(impl, dtype=jnp.float32):
        f = lambda x, w: conv2d(x, w, "SAME", impl)
        fwd = jax.jit(lambda x, w: f(x.astype(dtype), w.astype(dtype)))

        def both(x, w, dy):
            _, vjp = jax.vjp(f, x.astype(dtype), w.astype(dtype))
            return vjp(dy.astype(dtype))

        dx = jax.jit(lambda x, w, dy: both(x, w, dy)[0])
        dw = jax.jit(lambda x, w, dy: both(x, w, dy)[1])
        return fwd, dx, dw, jax.jit(both)

    cases: dict[str, tuple[Callable, tuple]] = {}
    for part, idx in (("forward", 0), ("input grad", 1), ("weight grad", 2),
                      ("fwd+bwd (dx, dw)", 3)):
        for impl in ("xla", "shifted"):
            fn = vjps(impl)[idx]
            cases[f"layer {impl} {part}"] = (fn, (x, w) if idx == 0 else (x, w, dy))
    # NCHW layout, plain XLA.
    xc, dyc = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(dy, (0, 3, 1, 2))
    wc = jnp.transpose(w, (3, 2, 0, 1))
    f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                  dimension_numbers=("NCHW", "OIHW", "NCHW"))
    if not LITE:
        cases["layer xla NCHW fwd+bwd (dx, dw)"] = (
            jax.jit(lambda x, w, dy: jax.vjp(f, x, w)[1](dy)), (xc, wc, dyc))
        for impl in ("xla", "shifted"):
            cases[f"layer {impl} bf16 fwd+bwd (dx, dw)"] = (vjps(impl, jnp.bfloat16)[3],
                                                            (x, w, dy))
    else:
        cases = {k: v for k, v in cases.items() if "fwd+bwd" in k}
    compare(results, cases, reps, notes={"layer xla forward": f"({flop / 1e9:.1f} GFLOP)"},
            base=lambda n: n.replace("shifted", "xla").replace(" NCHW", "").replace(
                " bf16", ""))


def _ce_grad_fn(model, x, y):
    def loss(params):
        logits = model.apply({"params": params}, x)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
            logits, y[:, None], 1)[:, 0])

    return jax.jit(jax.grad(loss))


def section_step(results: dict, reps: int) -> None:
    print("== step: ConvNetD3 W128 32x32x3, B=256, grad of mean CE w.r.t. params")
    shape = (32, 32, 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (256, *shape))
    y = jnp.arange(256) % 10
    params = get_model("convnet", 10, shape).init(jax.random.PRNGKey(0), x[:1])["params"]
    cases: dict[str, tuple[Callable, tuple]] = {}
    for impl in ("xla", "shifted"):
        model = get_model("convnet", 10, shape, conv_impl=impl)
        cases[f"convnetd3 {impl} param grad"] = (_ce_grad_fn(model, x, y), (params,))
    if LITE:
        compare(results, cases, reps)
        return
    # Norm / pooling formulations (monkeypatched module-level helpers at build time).
    orig_norm, orig_pool = convnet_mod.make_norm, convnet_mod.pool2x2
    try:
        convnet_mod.make_norm = lambda kind: nn.GroupNorm(num_groups=None, group_size=1,
                                                           epsilon=1e-5)
        model = get_model("convnet", 10, shape, conv_impl="shifted")
        fn = _ce_grad_fn(model, x, y)
        jax.block_until_ready(fn(params))  # trace while patched
        cases["convnetd3 shifted, flax GroupNorm(size 1)"] = (fn, (params,))
        convnet_mod.make_norm = orig_norm
        convnet_mod.pool2x2 = lambda h, kind: nn.avg_pool(h, (2, 2), strides=(2, 2))
        model = get_model("convnet", 10, shape, conv_impl="shifted")
        fn = _ce_grad_fn(model, x, y)
        jax.block_until_ready(fn(params))
        cases["convnetd3 shifted, reduce_window avg pool"] = (fn, (params,))
    finally:
        convnet_mod.make_norm, convnet_mod.pool2x2 = orig_norm, orig_pool
    for impl in ("xla", "shifted"):
        model = get_model("convnet", 10, shape, conv_impl=impl)
        cases[f"convnetd3 {impl} forward"] = (
            jax.jit(lambda p, x, model=model: model.apply({"params": p}, x)), (params, x))
    compare(results, cases, reps)


def section_dc(results: dict, reps: int) -> None:
    print("== dc: grad w.r.t. 10 synthetic images of the DC matching loss (real batch 256)")
    shape = (32, 32, 3)
    ks = jax.random.split(jax.random.PRNGKey(2), 3)
    x_real = jax.random.normal(ks[0], (256, *shape))
    x_syn = jax.random.normal(ks[1], (10, *shape))
    y_real, y_syn = jnp.zeros(256, jnp.int32), jnp.zeros(10, jnp.int32)
    params = get_model("convnet", 10, shape).init(ks[2], x_syn[:1])["params"]
    cases: dict[str, tuple[Callable, tuple]] = {}
    for impl in ("xla", "shifted"):
        model = get_model("convnet", 10, shape, conv_impl=impl)

        def ce(p, x, y, model=model):
            logits = model.apply({"params": p}, x)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
                logits, y[:, None], 1)[:, 0])

        def matching(xs, params, x_real, model=model, ce=ce):
            g_real = jax.lax.stop_gradient(jax.grad(ce)(params, x_real, y_real))
            g_syn = jax.grad(ce)(params, xs, y_syn)

            def dist(a, b):
                if a.ndim == 1:
                    return 0.0
                a, b = a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]).T
                cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1)
                                            * jnp.linalg.norm(b, axis=-1) + 1e-6)
                return jnp.sum(1.0 - cos)

            return sum(jax.tree.leaves(jax.tree.map(dist, g_real, g_syn)))

        cases[f"dc matching image-grad {impl}"] = (jax.jit(jax.grad(matching)),
                                                   (x_syn, params, x_real))
    compare(results, cases, reps)


def section_vmap(results: dict, reps: int) -> None:
    print("== vmap: K=4 ConvNetD3 param grads, B=64 each")
    shape, k, b = (32, 32, 3), 4, 64
    x = jax.random.normal(jax.random.PRNGKey(3), (k, b, *shape))
    y = jnp.arange(k * b).reshape(k, b) % 10
    model0 = get_model("convnet", 10, shape)
    params = jax.jit(jax.vmap(lambda key: model0.init(key, x[0, :1])["params"]))(
        jax.random.split(jax.random.PRNGKey(0), k))
    cases: dict[str, tuple[Callable, tuple]] = {}
    for impl in ("xla", "shifted"):
        model = get_model("convnet", 10, shape, conv_impl=impl)

        def grad1(p, x, y, model=model):
            def loss(p):
                logits = model.apply({"params": p}, x)
                return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
                    logits, y[:, None], 1)[:, 0])
            return jax.grad(loss)(p)

        vm = jax.jit(jax.vmap(grad1))
        loop = jax.jit(lambda p, x, y, g=grad1: [g(jax.tree.map(lambda a: a[i], p), x[i], y[i])
                                                 for i in range(k)])
        mapped = jax.jit(lambda p, x, y, g=grad1: jax.lax.map(lambda a: g(*a), (p, x, y)))
        cases[f"K=4 {impl} vmap"] = (vm, (params, x, y))
        cases[f"K=4 {impl} python loop in jit"] = (loop, (params, x, y))
        cases[f"K=4 {impl} lax.map"] = (mapped, (params, x, y))
    compare(results, cases, reps)


def section_flags(results: dict, reps: int) -> None:
    print("== flags: layer + step sections under XLA_FLAGS variants (subprocesses)")
    for flags in FLAG_SETS:
        env = dict(os.environ, XLA_FLAGS=flags)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--lite", "--reps",
               str(reps), "--sections", "env,layer,step"]
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            print(f"  [{flags or 'default'}] timed out")
            continue
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("JSON ")]
        if out.returncode != 0 or not line:
            err = (out.stderr.strip().splitlines() or ["?"])[-1][:160]
            print(f"  [{flags or 'default'}] failed (rc {out.returncode}): {err}")
            continue
        sub = json.loads(line[-1][5:])
        keys = ["matmul 2048^3", "layer xla fwd+bwd (dx, dw)", "layer shifted fwd+bwd (dx, dw)",
                "convnetd3 xla param grad", "convnetd3 shifted param grad"]
        summary = ", ".join(f"{k.split(' (')[0]} {sub.get(k, float('nan')):.0f}" for k in keys)
        print(f"  [{flags or 'default'}] {summary}", flush=True)
        for k in keys:
            results[f"flags[{flags or 'default'}] {k}"] = sub.get(k)


def section_torch(results: dict, reps: int) -> None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("== torch: not importable, skipped")
        return
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"== torch {torch.__version__} ({torch.get_num_threads()} threads), interleaved "
          "with the same JAX computations")

    torch.manual_seed(0)
    xt = torch.randn(256, 128, 16, 16, requires_grad=True)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    ones = torch.ones(256, 128, 16, 16)

    def layer():
        xt.grad = None
        conv.zero_grad()
        conv(xt).backward(ones)
        return 0

    net = torch.nn.Sequential(
        *[m for c in (3, 128, 128) for m in (
            torch.nn.Conv2d(c, 128, 3, padding=1), torch.nn.GroupNorm(128, 128, affine=True),
            torch.nn.ReLU(inplace=True), torch.nn.AvgPool2d(2, 2))],
        torch.nn.Flatten(), torch.nn.Linear(2048, 10))
    xb = torch.randn(256, 3, 32, 32)
    yb = torch.arange(256) % 10

    def step():
        net.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        return 0

    def fwd():
        with torch.no_grad():
            net(xb)
        return 0

    # The JAX counterparts, interleaved with the torch calls for a fair ratio.
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(ks[0], (256, 16, 16, 128))
    w = 0.03 * jax.random.normal(ks[1], (3, 3, 128, 128))
    dy = jnp.ones((256, 16, 16, 128))
    jl = jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: conv2d(x, w, "SAME", "shifted"),
                                          x, w)[1](dy))
    shape = (32, 32, 3)
    xj = jax.random.normal(ks[2], (256, *shape))
    yj = jnp.arange(256) % 10
    model = get_model("convnet", 10, shape, conv_impl="shifted")
    params = model.init(jax.random.PRNGKey(0), xj[:1])["params"]
    cases = {"torch layer fwd+bwd (dx, dw)": (layer, ()),
             "jax shifted layer fwd+bwd (dx, dw)": (jl, (x, w, dy)),
             "torch convnetd3 param grad (B=256)": (step, ()),
             "jax shifted convnetd3 param grad (B=256)": (_ce_grad_fn(model, xj, yj), (params,)),
             "torch convnetd3 forward (B=256)": (fwd, ())}
    compare(results, cases, reps, base=lambda n: n.replace("jax shifted", "torch"))


LITE = False  # set by --lite: only the xla-vs-shifted fwd+bwd / param-grad cases

SECTIONS = {"env": section_env, "layer": section_layer, "step": section_step,
            "dc": section_dc, "vmap": section_vmap, "flags": section_flags,
            "torch": section_torch}


def main(argv: list[str] | None = None) -> dict:
    """Run the selected sections; returns {name: ms}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="env,layer,step,dc,vmap,torch,flags")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="reps 3, no flags/vmap sections")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lite", action="store_true",
                    help="layer/step: only xla vs shifted fwd+bwd and param grad")
    args = ap.parse_args(argv)
    global LITE
    LITE = args.lite
    sections = [s for s in args.sections.split(",") if s]
    reps = args.reps
    if args.quick:
        reps = 3
        sections = [s for s in sections if s not in ("flags", "vmap")]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; valid: {list(SECTIONS)}")
    results: dict = {}
    for s in sections:
        SECTIONS[s](results, reps)
    if args.child:
        print("JSON " + json.dumps(results))
    else:
        print(f"== done (load avg now {os.getloadavg()[0]:.2f})")
    return results


if __name__ == "__main__":
    main()
