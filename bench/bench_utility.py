"""Loss-indicator throughput (T trials in one program vs T sequential trials), and a
small diversity-aware selection experiment.

Run:
  python bench/bench_utility.py --data_dir=$GOLD_DATA_DIR --num=4096 --trials=4 --epochs=3 \
      --width=32 --batch_size=512 --order=vmapped,unrolled,sequential
  python bench/bench_utility.py --task=diverse --utility=/tmp/u/utility.npz \
      --ratios=0.001,0.005,0.02 --seeds=3

Task ``throughput``:
All variants train the same T networks (same keys, same per-sample records) on the
first ``num`` MNIST training images with the loss indicator's training step
(``gold.utility.loss.make_epoch_fn``): ``vmapped`` (``jax.vmap`` over trials, one
program), ``unrolled`` (T independent copies in one program, the CPU default) and
``sequential`` (one single-network program called T times). Reported per variant: the first epoch (includes
compilation) and the steady state (later epochs) in sample-epochs per second, where one
sample-epoch is one sample seen once by one network. Not a test; numbers depend on the
machine and its load (this prints ``os.getloadavg()`` alongside).

Task ``diverse`` (a PROXY, not distillation): for each kept ratio, select MNIST subsets
with ``random``, loss-``greedy`` and ``greedy_diverse`` (the utility file must carry the
GAP ``features`` extra, as loss utilities do by default), report each subset's diversity
and outlier count (:mod:`gold.utility.diversity`) and the test accuracy of ConvNets
(``--proxy_width``) trained from scratch on the subset alone (SGD 0.01, momentum 0.9,
wd 5e-4, ``--steps`` steps of batch 64, lr x0.1 at half), mean +- std over ``--seeds``.
Also prints the diversity of the 10 loss strata (paper Fig. 6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gold import data as gdata  # noqa: E402
from gold import models as gmodels  # noqa: E402
from gold import nn as gnn  # noqa: E402
from gold.utility import loss as gloss  # noqa: E402


def run_vmapped(model, x, y, key, settings, mode="vmap"):
    """All trials in one program; returns (per-epoch seconds, last epoch's losses)."""
    tx = settings.optimizer_fn()
    keys = gloss.trial_keys(key, range(settings.trials))
    states = gloss.init_states(model, tx, keys, tuple(x.shape[1:]))
    ekeys = gloss.epoch_keys(keys, settings.epochs)
    fn = gloss.make_epoch_fn(model, tx, settings.batch_size, vmapped=True, mode=mode)
    times = []
    for e in range(settings.epochs):
        t = time.perf_counter()
        states, loss, rec = fn(states, ekeys[:, e], x, y)
        jax.block_until_ready(rec)
        times.append(time.perf_counter() - t)
    return times, np.asarray(rec.loss)


def run_sequential(model, x, y, key, settings):
    """Trial after trial with the single-network epoch program (compiled once)."""
    tx = settings.optimizer_fn()
    keys = gloss.trial_keys(key, range(settings.trials))
    fn = gloss.make_epoch_fn(model, tx, settings.batch_size, vmapped=False)
    ekeys = gloss.epoch_keys(keys, settings.epochs)
    states = gloss.init_states(model, tx, keys, tuple(x.shape[1:]))
    times = np.zeros(settings.epochs)
    last = []
    for t_idx in range(settings.trials):
        state = jax.tree.map(lambda a: a[t_idx], states)
        for e in range(settings.epochs):
            t = time.perf_counter()
            state, loss, rec = fn(state, ekeys[t_idx, e], x, y)
            jax.block_until_ready(rec)
            times[e] += time.perf_counter() - t
        last.append(np.asarray(rec.loss))
    return list(times), np.stack(last)


def proxy_accuracy(model, x, y, x_test, y_test, key, steps: int, batch: int = 64) -> float:
    """Test accuracy (%) of one network trained from scratch on ``(x, y)`` only."""
    n = len(y)
    b = min(batch, n)
    epochs = max(1, int(np.ceil(steps / gnn.num_batches(n, b))))
    tx = gnn.sgd(gnn.step_decay(0.01, gnn.num_batches(n, b), (epochs // 2,), 0.1), 0.9, 5e-4)
    v = gnn.init_variables(model, jax.random.fold_in(key, 0), x.shape[1:])
    fit = _fit_program(model, tx, epochs, b)
    res = fit(v, jax.numpy.asarray(x), jax.numpy.asarray(y), jax.random.fold_in(key, 1))
    acc = gnn.accuracy_many(model, jax.tree.map(lambda a: a[None], res.variables),
                            jax.numpy.asarray(x_test), jax.numpy.asarray(y_test))
    return 100.0 * float(acc[0])


_FIT_CACHE: dict = {}


def _fit_program(model, tx, epochs, batch):
    key = (model, epochs, batch)
    if key not in _FIT_CACHE:
        _FIT_CACHE[key] = jax.jit(lambda v, x, y, k: gnn.fit(model, tx, v, x, y, k, epochs=epochs,
                                                             batch_size=batch))
    return _FIT_CACHE[key]


def diverse_experiment(args) -> dict:
    """Random vs loss-greedy vs greedy_diverse at small ratios (proxy accuracy)."""
    from gold import selection as gsel
    from gold import utility as gutil

    ds = gdata.load_dataset(args.dataset, args.data_dir or None)
    u = gsel.load_scores(args.utility, dataset_name=ds.name, labels=ds.y_train)
    feats = u.extras["features"]
    outliers = gutil.outlier_mask(feats, ds.y_train, ds.num_classes)
    x_test, y_test = ds.x_test[: args.num_test], ds.y_test[: args.num_test]
    model = gmodels.get_model("convnet", ds.num_classes, ds.x_train.shape[1:], width=args.proxy_width)
    out = {"utility": args.utility, "utility_settings": u.settings, "proxy": vars(args), "rows": [],
           "strata": []}
    for s in range(1, 11):
        idx = gsel.select(None, ds.y_train, ds.num_classes, policy="stratify", scores=u.scores,
                          stratum=s, num_strata=10)
        st = gutil.diversity(feats, ds.y_train, idx)
        out["strata"].append({"stratum": s, "diversity": st.diversity,
                              "outliers": gutil.count_outliers(outliers, idx)})
    print("strata", json.dumps(out["strata"]), flush=True)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        for policy in args.policies.split(","):
            accs, divs, outs = [], [], []
            for seed in range(args.seeds):
                key = jax.random.key(seed)
                if policy == "random" or seed == 0:
                    idx = gsel.select(key, ds.y_train, ds.num_classes,
                                      policy=policy, ratio=ratio, scores=u.scores, features=feats)
                accs.append(proxy_accuracy(model, ds.x_train[idx], ds.y_train[idx], x_test, y_test,
                                           jax.random.fold_in(key, 99), args.steps))
                divs.append(gutil.diversity(feats, ds.y_train, idx).diversity)
                outs.append(gutil.count_outliers(outliers, idx))
            row = {"ratio": ratio, "policy": policy, "num": int(len(idx)),
                   "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
                   "accuracies": accs, "diversity": float(np.mean(divs)),
                   "outliers": float(np.mean(outs))}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="throughput", choices=["throughput", "diverse"])
    p.add_argument("--utility", default="", help="diverse: a loss utility.npz with features")
    p.add_argument("--ratios", default="0.001,0.005,0.02")
    p.add_argument("--policies", default="random,greedy,greedy_diverse")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--proxy_width", type=int, default=32)
    p.add_argument("--num_test", type=int, default=5000)
    p.add_argument("--out", default="")
    p.add_argument("--data_dir", default=os.environ.get("GOLD_DATA_DIR", ""))
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--num", type=int, default=4096)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--order", default="vmapped,unrolled,sequential")
    args = p.parse_args()
    if args.task == "diverse":
        out = diverse_experiment(args)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=1, default=str)
        return

    ds = gdata.load_dataset(args.dataset, args.data_dir or None)
    x, y = ds.x_train[: args.num], ds.y_train[: args.num]
    model = gmodels.get_model("convnet", ds.num_classes, x.shape[1:], width=args.width)
    settings = gloss.TrainSettings(trials=args.trials, epochs=args.epochs, lr=args.lr,
                                   batch_size=args.batch_size, trials_per_chunk=0)
    key = jax.random.key(0)
    out = {"device": str(jax.devices()[0]), "loadavg_before": os.getloadavg(), **vars(args)}
    results = {}
    for name in args.order.split(","):
        if name == "sequential":
            times, last = run_sequential(model, x, y, key, settings)
        else:
            times, last = run_vmapped(model, x, y, key, settings, "vmap" if name == "vmapped" else "unroll")
        per_epoch = args.trials * args.num
        steady = float(np.mean(times[1:])) if len(times) > 1 else float("nan")
        results[name] = last
        out[name] = {
            "first_epoch_s": times[0],
            "steady_epoch_s": steady,
            "steady_sample_epochs_per_s": per_epoch / steady,
            "total_s": float(np.sum(times)),
            "total_sample_epochs_per_s": per_epoch * args.epochs / float(np.sum(times)),
        }
        print(name, json.dumps(out[name]), flush=True)
    for name in ("vmapped", "unrolled"):
        if name in results and "sequential" in results:
            out[f"{name}_max_abs_diff_last_epoch_loss"] = float(
                np.max(np.abs(results[name] - results["sequential"])))
            out[f"{name}_speedup_steady"] = out["sequential"]["steady_epoch_s"] / out[name]["steady_epoch_s"]
            out[f"{name}_speedup_total"] = out["sequential"]["total_s"] / out[name]["total_s"]
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
