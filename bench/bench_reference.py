"""gold against the reference's OWN code (VICO-UoE/DatasetCondensation), interleaved in one run.

Nothing of the reference enters gold: point ``--reference-dir`` at a checkout of
https://github.com/VICO-UoE/DatasetCondensation (``git clone`` it yourself) and
install a CPU torch into the bench environment (``pip install torch==2.13.0+cpu``).
This script imports the reference's ``networks.ConvNet``, ``utils.match_loss``,
``utils.DiffAugment``, ``utils.epoch`` and ``utils.evaluate_synset`` at bench time
(``torchvision`` is stubbed when absent: the reference only needs it for dataset
downloads and image saving) and drives them exactly as ``main.py`` / ``main_DM.py``
do, one iteration at a time. The gold side runs the same workload through its public
API (``registry.build`` + ``engine.advance``; ``evaluate.evaluate_synthetic``).

Usage::

    python bench/bench_reference.py --reference-dir=/path/to/DatasetCondensation \
        --sections=dc1,dc10,dsa1,dm1,dm10,eval_mnist,eval_dsa --reps=3
    python bench/bench_reference.py --reference-dir=... --sections=run_dc,run_dsa,run_dm  # whole runs
    python bench/bench_reference.py --reference-dir=... --sections=parity  # same numbers?

Sections (MNIST, ConvNetD3 width ``--width`` (128), ``--batch-real`` (256) real images
per class, noise init as the reference's default):

* ``dc1`` / ``dc10``: one DC iteration at IPC 1 (1 outer x 1 inner loop) / IPC 10
  (10 outer x (10 class matchings + image step) + 9 x 50 network epochs);
* ``dsa1``: one DSA iteration at IPC 1 (the digit strategy without flip on both sides);
* ``dm1`` / ``dm10``: one DM iteration (DSA on, as ``main_DM.py`` runs);
* ``eval_mnist``: one evaluation network, the DC MNIST protocol (1000 epochs of
  crop/scale/rotate augmentation on IPC-1 images, then the 10k test set); gold trains
  K=1 and K=``--eval-models`` networks (one program: ``gold.evaluate.train_networks``;
  the K-network time includes its one compile), the reference K=1 (it is sequential:
  K networks cost K times one);
* ``eval_dsa``: the same under the DSA evaluation protocol;
* ``run_dc`` / ``run_dsa`` / ``run_dm``: a whole run at IPC ``--run-ipc`` (1) with
  ``--run-batch-real`` (64) real images per class:
  ``--run-iterations`` (200) iterations of the method, then ``--eval-models`` (5)
  evaluation networks under the method's protocol (DC: the DC MNIST protocol, noise
  init, ``main.py``; DSA: ``main.py --method DSA``, DSA evaluation, noise init; DM:
  ``main_DM.py``, real init, lr 1.0, DSA evaluation). The reference's loop runs
  in-process (distillation and evaluation timed apart), gold's ``launch/distill.py``
  (``configs/{dc,dsa,dm}.py:mnist``) in a subprocess, so its wall time includes start-up
  and compilation, as a user sees it. Both accuracies (mean +- std over the networks)
  and their difference are reported: "equal accuracy" is a difference within 1 point
  (with 5 networks each, the standard error of a difference is ~0.4-0.7 points).
  ``--eval-epochs`` shortens the evaluation on both sides for a quick check of the
  harness (e.g. ``--run-iterations=2 --eval-models=1 --eval-epochs=20 --width=16``).
* ``parity``: the same numbers? The reference's ``ConvNet`` (float64, width 16) with
  its weights copied into gold's ConvNet: logits, embeddings, the DC matching loss of
  one class (``utils.match_loss``) and its gradient w.r.t. the synthetic images, and
  the DM loss; relative differences.

Each rep runs the reference then gold (then the reference ...), so both see the same
machine state; the report gives medians, the ratio gold / reference, the CPU model,
``torch.get_num_threads()``, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SECTIONS = ("dc1", "dc10", "dsa1", "dm1", "dm10", "eval_mnist", "eval_dsa", "run_dc", "run_dsa", "run_dm",
            "parity")
RUN_CONFIGS = {"DC": "configs/dc.py:mnist", "DSA": "configs/dsa.py:mnist", "DM": "configs/dm.py:mnist"}
DIGIT_DSA = "color_crop_cutout_scale_rotate"  # gold's DSA strategy for digits (no flip)


# ---------------------------------------------------------------- the reference
def import_reference(reference_dir: str) -> types.SimpleNamespace:
    """Import the reference's ``utils`` and ``networks`` from ``reference_dir``.

    ``torchvision`` (dataset downloads, ``save_image``) is replaced by an empty stub when
    it is not installed; ``scipy.ndimage.interpolation`` (removed in new SciPy) by
    ``scipy.ndimage``. Neither is on a timed path of the MNIST workloads here.
    """
    if not os.path.isfile(os.path.join(reference_dir, "utils.py")):
        raise SystemExit(f"--reference-dir={reference_dir!r} has no utils.py: clone "
                         "https://github.com/VICO-UoE/DatasetCondensation there")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchvision")
        stub.datasets = types.ModuleType("torchvision.datasets")
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.utils = types.ModuleType("torchvision.utils")
        stub.utils.save_image = lambda *a, **k: None
        for name, mod in (("torchvision", stub), ("torchvision.datasets", stub.datasets),
                          ("torchvision.transforms", stub.transforms), ("torchvision.utils", stub.utils)):
            sys.modules[name] = mod
    try:
        import scipy.ndimage.interpolation  # noqa: F401
    except ImportError:
        import scipy.ndimage
        sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
    # Two textual shims for current torch, the only changes made to the reference's
    # source (same values, same work): the Siamese copies ``t[:] = t[0]`` of DiffAugment
    # overlap when the batch has one image (IPC 1) and torch >= 2 refuses them, so they
    # become ``t[:] = t[0].clone()``; a one-channel image after ``grid_sample`` has
    # strides that ``Tensor.view`` rejects in ``ConvNet.forward`` / ``embed``, so
    # ``out.view(out.size(0), -1)`` becomes ``out.reshape(out.size(0), -1)``.
    shims = {"networks": [(r"out\.view\(out\.size\(0\), -1\)", "out.reshape(out.size(0), -1)")],
             "utils": [(r"(\w+)\[:\] = \1\[0\]$", r"\1[:] = \1[0].clone()")]}
    modules = {}
    for name in ("networks", "utils"):  # utils imports networks
        path = os.path.join(reference_dir, f"{name}.py")
        with open(path) as f:
            source = f.read()
        for pattern, replacement in shims[name]:
            source = re.sub(pattern, replacement, source, flags=re.M)
        module = types.ModuleType(name)
        module.__file__ = path
        sys.modules[name] = module
        exec(compile(source, path, "exec"), module.__dict__)
        modules[name] = module
    return types.SimpleNamespace(**modules)


def reference_args(ref, *, ipc: int, method: str, batch_real: int, dsa_strategy: str, epochs: int,
                   aug: str) -> types.SimpleNamespace:
    """The ``args`` namespace ``main.py`` builds (only the fields the functions read)."""
    outer, inner = ref.utils.get_loops(ipc)
    args = types.SimpleNamespace(
        method=method, ipc=ipc, device="cpu", dis_metric="ours", lr_img=0.1, lr_net=0.01,
        batch_real=batch_real, batch_train=256, outer_loop=outer, inner_loop=inner,
        dsa=(method in ("DSA", "DM")),  # main_DM.py: DSA on unless the strategy is 'none'
        dsa_strategy=dsa_strategy, dsa_param=ref.utils.ParamDiffAug(),
        epoch_eval_train=epochs, dc_aug_param=None)
    if aug == "dc_mnist":
        args.dc_aug_param = ref.utils.get_daparam("MNIST", "ConvNet", "ConvNet", ipc)
    return args


def reference_convnet(ref, width: int):
    """The reference ConvNet for MNIST (28x28x1) at ``width``."""
    torch = _torch()
    torch.random.manual_seed(int(time.time() * 1000) % 100000)
    return ref.networks.ConvNet(channel=1, num_classes=10, net_width=width, net_depth=3, net_act="relu",
                                net_norm="instancenorm", net_pooling="avgpooling", im_size=(28, 28))


def nchw(x: np.ndarray):
    """``[N, H, W, C]`` -> a torch ``[N, C, H, W]`` tensor with canonical strides (a
    plain transpose of a 1-channel array has strides torch reads as channels-last)."""
    out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
    out[...] = np.transpose(x, (0, 3, 1, 2))
    return _torch().from_numpy(out)


def _torch():
    import torch
    return torch


class ReferenceRun:
    """The reference's distillation state on MNIST: real images by class and the
    synthetic images with their SGD(momentum 0.5) optimiser, as ``main.py`` holds them
    (``init='real'``: random real images of each class, as ``main_DM.py``'s default)."""

    def __init__(self, ref, x_real: np.ndarray, y_real: np.ndarray, args, width: int, lr_img: float,
                 init: str = "noise"):
        torch = _torch()
        self.ref, self.args, self.width = ref, args, width
        self.images = nchw(x_real)
        self.by_class = [np.flatnonzero(y_real == c) for c in range(10)]
        self.image_syn = torch.randn((10 * args.ipc, 1, 28, 28), requires_grad=True)
        if init == "real":
            for c in range(10):
                self.image_syn.data[c * args.ipc:(c + 1) * args.ipc] = self.get_images(c, args.ipc).detach().data
        self.label_syn = torch.repeat_interleave(torch.arange(10), args.ipc)
        self.opt_img = torch.optim.SGD([self.image_syn], lr=lr_img, momentum=0.5)
        self.criterion = torch.nn.CrossEntropyLoss()

    def get_images(self, c: int, n: int):
        return self.images[np.random.permutation(self.by_class[c])[:n]]

    def dc_iteration(self) -> float:
        """One iteration of ``main.py``'s training loop (DC or DSA by ``args.method``)."""
        torch, a, u = _torch(), self.args, self.ref.utils
        net = reference_convnet(self.ref, self.width)
        net.train()
        params = list(net.parameters())
        opt_net = torch.optim.SGD(net.parameters(), lr=a.lr_net)
        total = 0.0
        for ol in range(a.outer_loop):
            loss = torch.tensor(0.0)
            for c in range(10):
                img_real = self.get_images(c, a.batch_real)
                img_syn = self.image_syn[c * a.ipc:(c + 1) * a.ipc]
                lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long)
                lab_syn = torch.full((a.ipc,), c, dtype=torch.long)
                if a.dsa:
                    seed = int(time.time() * 1000) % 100000
                    img_real = u.DiffAugment(img_real, a.dsa_strategy, seed=seed, param=a.dsa_param)
                    img_syn = u.DiffAugment(img_syn, a.dsa_strategy, seed=seed, param=a.dsa_param)
                gw_real = torch.autograd.grad(self.criterion(net(img_real), lab_real), params)
                gw_real = [g.detach().clone() for g in gw_real]
                gw_syn = torch.autograd.grad(self.criterion(net(img_syn), lab_syn), params, create_graph=True)
                loss = loss + u.match_loss(gw_syn, gw_real, a)
            self.opt_img.zero_grad()
            loss.backward()
            self.opt_img.step()
            total += loss.item()
            if ol == a.outer_loop - 1:
                break
            loader = torch.utils.data.DataLoader(
                u.TensorDataset(self.image_syn.detach().clone(), self.label_syn.clone()),
                batch_size=a.batch_train, shuffle=True, num_workers=0)
            for _ in range(a.inner_loop):
                u.epoch("train", loader, net, opt_net, self.criterion, a, aug=a.dsa)
        return total

    def dm_iteration(self) -> float:
        """One iteration of ``main_DM.py``'s loop (InstanceNorm branch, DSA on)."""
        torch, a, u = _torch(), self.args, self.ref.utils
        net = reference_convnet(self.ref, self.width)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0)
        for c in range(10):
            img_real = self.get_images(c, a.batch_real)
            img_syn = self.image_syn[c * a.ipc:(c + 1) * a.ipc]
            seed = int(time.time() * 1000) % 100000
            img_real = u.DiffAugment(img_real, a.dsa_strategy, seed=seed, param=a.dsa_param)
            img_syn = u.DiffAugment(img_syn, a.dsa_strategy, seed=seed, param=a.dsa_param)
            out_real = net.embed(img_real).detach()
            out_syn = net.embed(img_syn)
            loss = loss + torch.sum((out_real.mean(0) - out_syn.mean(0)) ** 2)
        self.opt_img.zero_grad()
        loss.backward()
        self.opt_img.step()
        return loss.item()

    def evaluate(self, x_test: np.ndarray, y_test: np.ndarray) -> float:
        """``evaluate_synset`` on one fresh network; test accuracy in [0, 1]."""
        torch, u = _torch(), self.ref.utils
        test = torch.utils.data.DataLoader(
            u.TensorDataset(nchw(x_test), torch.tensor(y_test)),
            batch_size=256, shuffle=False, num_workers=0)
        net = reference_convnet(self.ref, self.width)
        _, _, acc = u.evaluate_synset(0, net, self.image_syn.detach().clone(), self.label_syn.clone(), test,
                                      self.args)
        return float(acc)


# ---------------------------------------------------------------------- gold side
def gold_stepper(algorithm: str, ipc: int, width: int, batch_real: int, x, y) -> tuple[Callable[[], None], float]:
    """A function running one gold iteration (compiled ahead) and its compile seconds."""
    import importlib

    import jax

    from gold import rng
    from gold.distill import common, engine, registry

    cfg = importlib.import_module(f"gold.configs.{algorithm}").get_config("mnist")
    cfg.model.width, cfg.batch_real, cfg.ipc, cfg.init = width, batch_real, ipc, "noise"
    real = common.make_real_data(x, y, 10, batch_real)
    algo = registry.build(cfg, real)
    root = rng.root(0)
    steps = rng.stream(root, "steps")
    box = {"state": algo.init(rng.stream(root, "init"), real)}
    run = jax.jit(lambda st, stop: engine.advance(algo, st, steps, real, stop), donate_argnums=0)
    t0 = time.perf_counter()
    box["state"], prog = run(box["state"], box["state"].iteration + 1)
    jax.block_until_ready(prog.metrics)
    compile_s = time.perf_counter() - t0

    def one() -> None:
        box["state"], p = run(box["state"], box["state"].iteration + 1)
        jax.block_until_ready(p.metrics)

    return one, compile_s


def gold_evaluator(protocol_kwargs: dict, x_syn, y_syn, x_test, y_test, num_models: int) -> Callable[[], float]:
    import jax

    from gold.evaluate import EvalProtocol, evaluate_synthetic

    protocol = EvalProtocol(num_models=num_models, **protocol_kwargs)

    def one() -> float:
        return evaluate_synthetic(jax.random.key(int(time.time())), x_syn, y_syn, x_test, y_test, 10,
                                  protocol).mean

    return one


# --------------------------------------------------------------------- reporting
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(ref_fn, gold_fn, reps: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Alternate reference and gold ``reps`` times (after one untimed warm-up of each)."""
    if warmup:
        ref_fn()
        gold_fn()
    r, g = [], []
    for _ in range(reps):
        r.append(timed(ref_fn))
        g.append(timed(gold_fn))
    return r, g


def row(name: str, r: list[float], g: list[float], **extra) -> dict:
    out = {"section": name, "reference_s": float(np.median(r)), "gold_s": float(np.median(g)),
           "ratio": float(np.median(g) / np.median(r)), "reference_all": r, "gold_all": g}
    out.update(extra)
    print(f"{name:12s} reference {out['reference_s']:8.3f} s   gold {out['gold_s']:8.3f} s   "
          f"gold/reference {out['ratio']:.2f}x  {extra if extra else ''}", flush=True)
    return out


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", required=True, help="checkout of VICO-UoE/DatasetCondensation")
    p.add_argument("--sections", default="dc1,dc10,dsa1,dm1,dm10,eval_mnist,eval_dsa")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-real", type=int, default=256, help="real images per class of the step sections")
    p.add_argument("--run-batch-real", type=int, default=64,
                   help="real images per class of the whole runs (64: the setting of issue 20's table)")
    p.add_argument("--eval-models", type=int, default=5)
    p.add_argument("--run-iterations", type=int, default=200)
    p.add_argument("--run-ipc", type=int, default=1, help="images per class of the whole runs")
    p.add_argument("--eval-epochs", type=int, default=0,
                   help="evaluation epochs of the whole runs (0 = the protocol's 1000); a quick check only")
    p.add_argument("--data-dir", default=os.environ.get("GOLD_DATA_DIR", ""))
    p.add_argument("--json", default="")
    args = p.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; valid: {list(SECTIONS)}")

    torch = _torch()
    ref = import_reference(os.path.abspath(args.reference_dir))
    from gold import data as gdata

    ds = gdata.load_dataset("mnist", args.data_dir or None)
    x, y = np.asarray(ds.x_train, np.float32), np.asarray(ds.y_train)
    x_test, y_test = np.asarray(ds.x_test, np.float32), np.asarray(ds.y_test)
    header = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_before": os.getloadavg()[0], "width": args.width,
              "batch_real": args.batch_real}
    print(json.dumps(header), flush=True)
    rows = []
    for name in sections:
        if name in ("dc1", "dc10", "dsa1", "dm1", "dm10"):
            ipc = 10 if name.endswith("10") else 1
            method = {"dc": "DC", "ds": "DSA", "dm": "DM"}[name[:2]]
            a = reference_args(ref, ipc=ipc, method=method, batch_real=args.batch_real,
                               dsa_strategy=DIGIT_DSA, epochs=300, aug="none")
            lr_img = 1.0 if method == "DM" else 0.1
            rr = ReferenceRun(ref, x, y, a, args.width, lr_img)
            ref_fn = rr.dm_iteration if method == "DM" else rr.dc_iteration
            gold_fn, compile_s = gold_stepper(method.lower(), ipc, args.width, args.batch_real, x, y)
            reps = 1 if name in ("dc10",) else args.reps
            r, g = interleaved(ref_fn, gold_fn, reps, warmup=name != "dc10")
            rows.append(row(name, r, g, gold_compile_s=round(compile_s, 2)))
        elif name in ("eval_mnist", "eval_dsa"):
            aug = "dc_mnist" if name == "eval_mnist" else "dsa"
            a = reference_args(ref, ipc=1, method="DSA" if aug == "dsa" else "DC", batch_real=args.batch_real,
                               dsa_strategy=DIGIT_DSA, epochs=1000, aug=aug)
            rr = ReferenceRun(ref, x, y, a, args.width, 0.1)
            x_syn = np.transpose(rr.image_syn.detach().numpy(), (0, 2, 3, 1))
            y_syn = rr.label_syn.numpy().astype(np.int32)
            kw = {"epochs": 1000, "augment": aug, "dsa_strategy": DIGIT_DSA,
                  "model_overrides": (("width", args.width),)}
            g1 = gold_evaluator(kw, x_syn, y_syn, x_test, y_test, 1)
            gk = gold_evaluator(kw, x_syn, y_syn, x_test, y_test, args.eval_models)
            ref_fn = lambda: rr.evaluate(x_test, y_test)  # noqa: E731
            r, g = interleaved(ref_fn, g1, args.reps, warmup=False)
            gk_times = [timed(gk) for _ in range(max(1, args.reps // 2))]
            rows.append(row(name, r, g, gold_k_models=args.eval_models,
                            gold_k_s=float(np.median(gk_times)),
                            ratio_k_vs_sequential=float(np.median(gk_times) / (args.eval_models * np.median(r)))))
        elif name in ("run_dc", "run_dsa", "run_dm"):
            rows.append(whole_run(ref, x, y, x_test, y_test, args, name[4:].upper()))
        elif name == "parity":
            rows.append(parity(ref, x, y))
    header["load_after"] = os.getloadavg()[0]
    print(json.dumps({"load_after": header["load_after"]}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=2)


def whole_run(ref, x, y, x_test, y_test, args, method: str) -> dict:
    """Reference: ``run_iterations`` iterations of ``method`` (DC / DSA / DM) at IPC
    ``run_ipc`` + ``eval_models`` sequential evaluations under the method's protocol.
    Gold: ``launch/distill.py`` with the same setting, in a subprocess."""
    epochs = args.eval_epochs or 1000  # every protocol here trains 1000 (+1) epochs
    aug = "dc_mnist" if method == "DC" else "dsa"
    a = reference_args(ref, ipc=args.run_ipc, method=method, batch_real=args.run_batch_real, dsa_strategy=DIGIT_DSA,
                       epochs=epochs, aug=aug)
    init = "real" if method == "DM" else "noise"  # main_DM.py / main.py defaults
    rr = ReferenceRun(ref, x, y, a, args.width, 1.0 if method == "DM" else 0.1, init=init)
    step = rr.dm_iteration if method == "DM" else rr.dc_iteration

    t0 = time.perf_counter()
    for _ in range(args.run_iterations):
        step()
    ref_distill_s = time.perf_counter() - t0
    ref_acc = [rr.evaluate(x_test, y_test) for _ in range(args.eval_models)]
    ref_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as wd:
        cmd = [sys.executable, os.path.join(ROOT, "launch", "distill.py"), f"--config={RUN_CONFIGS[method]}",
               f"--workdir={wd}", f"--config.iterations={args.run_iterations}", f"--config.init={init}",
               f"--config.ipc={args.run_ipc}", f"--config.model.width={args.width}",
               f"--config.batch_real={args.run_batch_real}", f"--config.eval.num_models={args.eval_models}",
               "--config.eval_every=0"]
        if args.eval_epochs:
            cmd.append(f"--config.eval.epochs={args.eval_epochs}")
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        gold_s = time.perf_counter() - t0
        with open(os.path.join(wd, "result.json")) as f:
            res = json.load(f)
    ref_mean = 100 * float(np.mean(ref_acc))
    diff = res["accuracy_mean"] - ref_mean
    out = row(f"run_{method.lower()}", [ref_s], [gold_s], ipc=args.run_ipc, iterations=args.run_iterations,
              eval_models=args.eval_models, eval_epochs=epochs,
              reference_acc=round(ref_mean, 2), reference_std=round(100 * float(np.std(ref_acc)), 2),
              gold_acc=round(res["accuracy_mean"], 2), gold_std=round(res["accuracy_std"], 2),
              acc_diff=round(diff, 2), equal_accuracy=bool(abs(diff) <= 1.0),
              reference_distill_s=round(ref_distill_s, 1), reference_eval_s=round(ref_s - ref_distill_s, 1),
              gold_distill_s=round(res["distill_seconds"], 1), gold_eval_s=round(res["eval_seconds"], 1))
    print(f"  accuracy: reference {ref_mean:.2f} +- {100 * np.std(ref_acc):.2f}, gold {res['accuracy_mean']:.2f} "
          f"+- {res['accuracy_std']:.2f}, gold - reference {diff:+.2f} points "
          f"({'within' if abs(diff) <= 1 else 'NOT within'} 1 point)", flush=True)
    return out


def flax_params_from_reference(net) -> dict:
    """The reference ConvNet's parameters as a gold ConvNet parameter tree: conv
    (O,I,H,W) -> (H,W,I,O); GroupNorm(C, C) weight / bias -> InstanceNorm scale / bias;
    Linear (O, C*H*W) in the NCHW flatten order -> (H*W*C, O) in gold's NHWC order."""
    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    convs = [k for k in sd if k.startswith("features") and k.endswith("weight") and sd[k].ndim == 4]
    norms = [k for k in sd if k.startswith("features") and k.endswith("weight") and sd[k].ndim == 1]
    p = {}
    for i, (kc, kn) in enumerate(zip(convs, norms)):
        p[f"conv_{i}"] = {"kernel": sd[kc].transpose(2, 3, 1, 0), "bias": sd[kc.replace("weight", "bias")]}
        p[f"norms_{i}"] = {"scale": sd[kn], "bias": sd[kn.replace("weight", "bias")]}
    w = sd["classifier.weight"]
    c = sd[convs[-1]].shape[0]
    hw = int(round((w.shape[1] // c) ** 0.5))
    p["head"] = {"kernel": w.reshape(w.shape[0], c, hw, hw).transpose(0, 2, 3, 1).reshape(w.shape[0], -1).T,
                 "bias": sd["classifier.bias"]}
    return p


def parity(ref, x, y, width: int = 16) -> dict:
    """gold vs the reference's own ConvNet / ``match_loss`` on identical weights, float64:
    logits and embeddings, the DC loss of one class and its gradient w.r.t. the
    synthetic images, the DM loss (relative differences)."""
    import jax
    import jax.numpy as jnp

    from gold import models
    from gold import nn as gnn
    from gold.distill import matching

    torch = _torch()
    torch.manual_seed(0)
    net = ref.networks.ConvNet(channel=1, num_classes=10, net_width=width, net_depth=3, net_act="relu",
                               net_norm="instancenorm", net_pooling="avgpooling", im_size=(28, 28)).double()
    c = 3
    xr = x[y == c][:64].astype(np.float64)
    xs = np.random.default_rng(0).normal(size=(2, 28, 28, 1))
    tr, ts = nchw(xr).double(), nchw(xs).double().requires_grad_(True)
    params = list(net.parameters())
    crit = torch.nn.CrossEntropyLoss()
    gr = [g.detach() for g in torch.autograd.grad(crit(net(tr), torch.full((len(tr),), c)), params)]
    gs = torch.autograd.grad(crit(net(ts), torch.full((len(ts),), c)), params, create_graph=True)
    loss = ref.utils.match_loss(gs, gr, types.SimpleNamespace(dis_metric="ours", device="cpu"))
    gx_t = torch.autograd.grad(loss, ts)[0].numpy().transpose(0, 2, 3, 1)
    loss_t = loss.item()  # the reference accumulates it in a float32 tensor
    with torch.no_grad():
        logits_t, emb_t = net(tr).numpy(), net.embed(tr).numpy()
        dm_t = float(torch.sum((net.embed(tr).mean(0) - net.embed(ts.detach()).mean(0)) ** 2))

    jax.config.update("jax_enable_x64", True)
    try:
        model = models.get_model("convnet", 10, (28, 28, 1), width=width)
        p = jax.tree.map(jnp.asarray, flax_params_from_reference(net))
        xr_j, xs_j = jnp.asarray(xr), jnp.asarray(xs)
        logits_j = model.apply({"params": p}, xr_j)
        # gold flattens NHWC, the reference NCHW: compare the sorted-equal feature sets
        emb_j = model.apply({"params": p}, xr_j, method=model.embed)
        emb_j = np.asarray(emb_j).reshape(len(xr), 4, 4, width).transpose(0, 3, 1, 2).reshape(len(xr), -1)
        f = lambda q, xx: jnp.mean(gnn.per_sample_cross_entropy(model.apply({"params": q}, xx),  # noqa: E731
                                                                 jnp.full((len(xx),), c)))
        g_real = jax.grad(f)(p, xr_j)
        loss_j, gx_j = jax.value_and_grad(
            lambda xx: matching.gradient_distance(g_real, jax.grad(f)(p, xx), "ours"))(xs_j)
        emb = lambda xx: model.apply({"params": p}, xx, method=model.embed)  # noqa: E731
        dm_j = float(jnp.sum((emb(xr_j).mean(0) - emb(xs_j).mean(0)) ** 2))
    finally:
        jax.config.update("jax_enable_x64", False)

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))

    out = {"section": "parity", "width": width, "logits_rel_diff": rel(logits_j, logits_t),
           "embedding_rel_diff": rel(emb_j, emb_t), "dc_loss_reference": float(loss_t),
           "dc_loss_gold": float(loss_j), "dc_loss_rel_diff": rel(loss_j, float(loss_t)),
           "dc_image_grad_rel_diff": rel(gx_j, gx_t), "dm_loss_rel_diff": rel(dm_j, dm_t)}
    print("parity (float64, width %d): " % width + ", ".join(
        f"{k} {v:.1e}" for k, v in out.items() if k.endswith("rel_diff")), flush=True)
    return out


if __name__ == "__main__":
    main()
