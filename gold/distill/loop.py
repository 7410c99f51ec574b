"""The one run loop of every distillation algorithm (``launch/distill.py``).

``run(config, workdir)`` reads top to bottom:

1. **Workdir**: refuse to resume a workdir whose ``config.json`` differs from
   ``config`` (beyond harmless fields: :data:`HARMLESS_FIELDS`).
2. **Data and selection**: load ``config.data``, select the real samples the run may
   see (``gold.selection.select_from_config``; at least ``ipc`` per class with real
   init), save their ids (``selection.npz``) and build :class:`RealData`.
3. **Algorithm**: ``gold.distill.get_algorithm(config.algorithm).make(config, real)``.
4. **Resume**: restore the newest orbax checkpoint (state, RNG key data, iteration,
   elapsed seconds) when there is one.
5. **Steps**: ``state, metrics = step(state, fold_in(key, iteration), real)`` under
   ``jax.jit(donate_argnums=0)``; a non-finite loss or synthetic set stops the run with
   ``FloatingPointError`` naming the iteration (the last good checkpoint stays);
   one log line + a ``metrics.csv`` row every ``log_every`` iterations; evaluation
   every ``eval_every`` iterations; a checkpoint every ``checkpoint_every``.
6. **Final evaluation and artifacts**: ``result.json``, ``synthetic.npz`` (self-
   describing, :func:`gold.distill.load_synthetic`), ``synthetic.png``.

Because every step's randomness is ``fold_in(key, iteration)`` and the state is
checkpointed completely, a run killed at any point and restarted produces the same
synthetic set as an uninterrupted run (bit-exact on CPU).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import selection as gsel
from gold import workdir as gwork
from gold.checkpoint import Checkpointer
from gold.distill import artifacts
from gold.distill import common
from gold.evaluate import evaluate_synthetic

# Algorithm name -> module implementing ``make(config, real) -> Algorithm``.
ALGORITHMS: dict[str, str] = {
    "dc": "gold.distill.dc",
    "dsa": "gold.distill.dc",  # DC with Siamese augmentation (a switch, not a copy)
    "dm": "gold.distill.dm",
    "mtt": "gold.distill.mtt",
}
# Planned (DESIGN.md naming); listed so the error says they are known but not built yet.
PLANNED: tuple[str, ...] = ("kip", "frepo", "rfad", "idc", "cafe", "idm", "linba", "haba")

# Config fields that may change between a run and its resumption (they do not change
# the synthetic set): where the data is read from, logging / checkpoint cadence and the
# evaluation settings.
HARMLESS_FIELDS: tuple[str, ...] = (
    "data.dir", "eval_every", "checkpoint_every", "log_every", "eval", "workdir")

CHECKPOINT_DIR = "checkpoints"
EVAL_COLUMNS = ("eval_accuracy_mean", "eval_accuracy_std")


# ------------------------------------------------------------------- registry
def get_algorithm(name: str):
    """The module implementing algorithm ``name`` (``make(config, real)``).

    Raises:
      ValueError: unknown name (lists the valid ones) or a planned, not yet built one.
    """
    key = str(name).lower()
    if key not in ALGORITHMS:
        if key in PLANNED:
            raise ValueError(f"algorithm {name!r} is planned but not implemented yet; "
                             f"available: {', '.join(sorted(ALGORITHMS))}")
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    return importlib.import_module(ALGORITHMS[key])


# -------------------------------------------------------------------- config check
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _harmless(field: str) -> bool:
    return any(field == h or field.startswith(h + ".") for h in HARMLESS_FIELDS)


def config_differences(old: dict, new: dict) -> list[str]:
    """``field: old -> new`` for every significant field that differs."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for f in sorted(set(a) | set(b)):
        if _harmless(f):
            continue
        if a.get(f, "<absent>") != b.get(f, "<absent>"):
            diffs.append(f"{f}: {a.get(f, '<absent>')!r} -> {b.get(f, '<absent>')!r}")
    return diffs


def check_resumable(workdir: str, config: Any) -> None:
    """Raise ValueError when ``workdir`` holds a run with a different config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    old = gwork.read_json(path)
    new = json.loads(json.dumps(gwork.to_jsonable(config)))
    diffs = config_differences(old, new)
    if diffs:
        raise ValueError(
            f"workdir {workdir} holds a run with a different config; refusing to resume it. "
            f"Use a new --workdir (or delete this one). Differences: " + "; ".join(diffs))


# ------------------------------------------------------------------------ data
def load_data(data_cfg: Any) -> gdata.Dataset:
    """``config.data`` as a Dataset; optional ``train_per_class`` / ``test_per_class``
    keep the first n samples per class (tiny CPU runs and tests)."""
    train_pc = int(data_cfg.get("train_per_class", 0) or 0)
    test_pc = int(data_cfg.get("test_per_class", 0) or 0)
    if not train_pc and not test_pc:
        return config_utils.load_data(data_cfg)
    return gdata.load_dataset(
        data_cfg.name, data_cfg.get("dir") or None, zca=bool(data_cfg.get("zca", False)),
        train_per_class=train_pc or None, test_per_class=test_pc or None, strict_counts=False)


def select_real(config: Any, ds: gdata.Dataset, key: jax.Array, workdir: str) -> np.ndarray:
    """Indices (into ``ds``) of the real samples the run may use; at least ``ipc`` per
    class with real init (DESIGN.md)."""
    min_per_class = int(config.ipc) if config.get("init", "noise") == "real" else 1
    return gsel.select_from_config(config.selection, ds, jax.random.fold_in(key, 1),
                                   min_per_class=min_per_class, workdir=workdir)


# ------------------------------------------------------------------ metrics.csv
def _truncate_metrics(path: str, last_step: int) -> None:
    """Drop rows after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= last_step]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(keep)


# ---------------------------------------------------------------------- run
def run(config: Any, workdir: str) -> dict:
    """Distil ``config.data`` with ``config.algorithm``; write the artifacts; return
    ``result.json``'s content.

    Result keys: ``accuracy_mean``, ``accuracy_std`` (percent over ``eval.num_models``
    networks), ``accuracies``, ``num_real`` (kept real samples), ``seconds`` (wall time
    including earlier interrupted attempts), ``distill_seconds``, ``eval_seconds``,
    ``algorithm``, ``dataset``, ``ipc``, ``iterations``, ``final_loss``.

    Raises:
      ValueError: bad config (unknown algorithm, ratio out of range, IPC larger than a
        kept class with real init, a utility file of another dataset, a workdir holding
        a different config).
      FloatingPointError: a non-finite loss or synthetic image (names the iteration).
    """
    start = time.time()
    algo_mod = get_algorithm(config.algorithm)  # fail fast on a bad name
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_resumable(workdir, config)
    iterations = int(config.iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")

    # --- data and selection ------------------------------------------------------
    key = jax.random.key(int(config.seed))
    ds = load_data(config.data)
    kept = select_real(config, ds, key, workdir)
    sel_path = os.path.join(workdir, "selection.npz")
    if os.path.exists(sel_path):
        with np.load(sel_path) as f:
            if not np.array_equal(f["ids"], ds.ids[kept]):
                raise ValueError(f"the selected real samples differ from the ones in {sel_path}; "
                                 f"refusing to resume with different data")
    gwork.prepare_workdir(workdir, config)
    np.savez(sel_path, ids=ds.ids[kept], indices=kept)
    real = common.make_real_data(ds.x_train[kept], ds.y_train[kept], ds.num_classes,
                                 int(config.batch_real))
    x_test, y_test = ds.x_test, ds.y_test
    max_test = int(config.eval.get("max_test", 0) or 0)
    if max_test > 0:
        x_test, y_test = x_test[:max_test], y_test[:max_test]
    protocol = config_utils.eval_protocol(config)

    # --- algorithm ----------------------------------------------------------------
    algo = algo_mod.make(config, real)
    print(f"{algo.name} on {ds.name}: ipc={config.ipc} num_real={real.num_real} "
          f"real batch/class={real.batch} iterations={iterations} settings={algo.settings}",
          flush=True)
    k_init, k_steps, k_eval = (jax.random.fold_in(key, i) for i in (2, 3, 4))
    state = algo.init(k_init, real)

    # --- resume -------------------------------------------------------------------
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR))
    key_data = np.asarray(jax.random.key_data(k_steps))
    it0, elapsed0 = 0, 0.0
    latest = ckpt.latest_step()
    if latest is not None:
        like = {"state": state, "key": key_data, "iteration": np.int64(0), "elapsed": np.float64(0)}
        restored = ckpt.restore(latest, like)
        if not np.array_equal(np.asarray(restored["key"]), key_data):
            raise ValueError(f"checkpoint in {workdir} was written with another RNG key; "
                             f"use a new workdir")
        state = jax.tree.map(jnp.asarray, restored["state"])
        it0, elapsed0 = int(restored["iteration"]), float(restored["elapsed"])
        print(f"resumed from checkpoint at iteration {it0}", flush=True)
    metrics_path = os.path.join(workdir, "metrics.csv")
    _truncate_metrics(metrics_path, it0)
    writer: list = []  # the MetricsWriter, created once the metric names are known

    def log(step: int, names: tuple = (), **values: float) -> None:
        if not writer:
            if not os.path.exists(metrics_path):  # fix every column now (eval rows too)
                with open(metrics_path, "w", encoding="utf-8") as f:
                    f.write(",".join(["step", *names, *EVAL_COLUMNS]) + "\n")
            writer.append(gwork.MetricsWriter(workdir))
        writer[0].write(step, **values)

    def save(it: int, st) -> None:
        ckpt.save(it, {"state": st, "key": key_data, "iteration": np.int64(it),
                       "elapsed": np.float64(elapsed0 + time.time() - start)})

    def evaluate(st) -> Any:
        syn = algo.synthetic(st)
        lr = None if syn.lr is None else float(syn.lr)
        return evaluate_synthetic(k_eval, syn.x, syn.y, x_test, y_test, ds.num_classes, protocol, lr=lr)

    # --- steps --------------------------------------------------------------------
    def checked_step(st, k, real_):
        st, m = algo.step(st, k, real_)
        m = dict(m)
        m["finite"] = jnp.logical_and(jnp.all(jnp.isfinite(m["loss"])), common.tree_all_finite(st.params))
        return st, m

    step_fn = jax.jit(checked_step, donate_argnums=0)
    log_every = max(1, int(config.get("log_every", 10)))
    eval_every = int(config.get("eval_every", 0) or 0)
    ckpt_every = int(config.get("checkpoint_every", 0) or 0)
    distill_start, eval_seconds = time.time(), 0.0
    running: dict[str, list[float]] = {}
    last_loss = float("nan")
    for it in range(it0, iterations):
        state, m = step_fn(state, jax.random.fold_in(k_steps, it), real)
        if not bool(m.pop("finite")):
            raise FloatingPointError(
                f"non-finite loss or synthetic data at iteration {it + 1} of {algo.name}; "
                f"stopped. The last good checkpoint (iteration {ckpt.latest_step()}) is kept in "
                f"{os.path.join(workdir, CHECKPOINT_DIR)}; lower lr_img or check the data")
        for name, value in m.items():
            running.setdefault(name, []).append(float(value))
        last_loss = float(m["loss"])
        done = it + 1
        if done % log_every == 0 or done == iterations:
            row = {n: float(np.mean(v)) for n, v in running.items()}
            row["seconds_per_iteration"] = (time.time() - distill_start - eval_seconds) / (done - it0)
            log(done, tuple(row), **row)
            running = {}
        if eval_every and done % eval_every == 0 and done < iterations:
            res = evaluate(state)
            eval_seconds += res.seconds
            log(done, eval_accuracy_mean=res.mean, eval_accuracy_std=res.std)
        if (ckpt_every and done % ckpt_every == 0) or done == iterations:
            save(done, state)
    distill_seconds = time.time() - distill_start - eval_seconds

    # --- final evaluation and artifacts ---------------------------------------------
    res = evaluate(state)
    eval_seconds += res.seconds
    syn = algo.synthetic(state)
    lr = None if syn.lr is None else float(syn.lr)
    total = elapsed0 + time.time() - start
    result = {
        "accuracy_mean": res.mean,
        "accuracy_std": res.std,
        "accuracies": [float(a) for a in res.accuracies],
        "num_real": real.num_real,
        "seconds": total,
        "distill_seconds": distill_seconds,
        "eval_seconds": eval_seconds,
        "algorithm": algo.name,
        "dataset": ds.name,
        "ipc": int(config.ipc),
        "iterations": iterations,
        "final_loss": last_loss,
        "real_batch_per_class": real.batch,
        "num_test": int(len(y_test)),
    }
    if lr is not None:
        result["learned_lr"] = lr
    log(iterations, eval_accuracy_mean=res.mean, eval_accuracy_std=res.std)
    meta = {"num_real": real.num_real, "iterations": iterations, "seconds": total,
            "settings": algo.settings, "seed": int(config.seed),
            "selection": gwork.to_jsonable(config.selection)}
    npz_path = os.path.join(workdir, "synthetic.npz")
    artifacts.save_synthetic(npz_path, x=np.asarray(syn.x), y=np.asarray(syn.y), lr=lr, dataset=ds,
                             ipc=int(config.ipc), algorithm=algo.name, protocol=protocol, meta=meta)
    artifacts.save_png(os.path.join(workdir, "synthetic.png"), artifacts.load_synthetic(npz_path))
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    ckpt.close()
    print(f"{algo.name} {ds.name} ipc={config.ipc}: accuracy {res.mean:.2f} +- {res.std:.2f} "
          f"(num_real={real.num_real}, {total:.1f}s)", flush=True)
    return result


__all__ = ["ALGORITHMS", "HARMLESS_FIELDS", "PLANNED", "check_resumable", "config_differences",
           "get_algorithm", "load_data", "run", "select_real"]
