"""Monte-Carlo utility indicator, made cheap by vmapping many small distillations.

Paper 4.2 b / supp. 7 / 12.4: draw K random subsets of M = ratio * N samples, distil
each with DC at IPC 1, score each run by its test accuracy, and give every sample the
mean score of the runs that contained it (the estimator is
:func:`gold.utility.monte_carlo.mc_scores`; the paper's CIFAR-10 setting took 119 GPU
hours). This module lives in ``experiments`` (not ``utility``) because it runs
distillations, which sit to the right of ``utility`` in the data flow.

**Batching** (``monte_carlo.mode``). Every subset is an index table into ONE pool array
(``RealData(x=pool, index=table_b)``), padded to a common width, so all subsets share
one compiled program. ``vmap``: a chunk of B subsets is one program, the algorithm's pure
``step(state, key, real)`` ``jax.vmap``-ed over the B synthetic states and index tables,
and the B synthetic sets are evaluated by a vmapped copy of the evaluation protocol
(``gold.evaluate``) with one batched test pass. ``hybrid`` (default): the single-subset
step is compiled once and run subset by subset, then the chunk is evaluated in one
vmapped program. ``sequential``: everything one by one. Measured (BENCHMARKS.md): the vmapped DC step is SLOWER per subset than the single step (0.7x on an
H100, 0.25-0.5x on CPU: B per-subset parameter gradients lower to grouped convolutions,
the effect ``gold.distill.common`` notes for vmapping classes), while the vmapped
evaluation is ~2x faster per subset on the H100; hence ``hybrid``.

**Independent trials** (default, ``crn=False``): trial ``i`` is a run of its own with
root key ``fold_in(key, i)`` (the global trial index, so chunking, batching mode and
resumption never change a trial): its own random networks, noise init, real batches
and evaluation networks, as the paper's independent draws. **Common random numbers**
(``crn=True``): every trial uses ``key`` itself, hence the same random program (same
networks at every DC iteration, same noise init, same positions of the real batches in
their different class lists, same evaluation inits); the differences between trial
scores then come from the subsets alone, which lowers the estimator's variance but
scores the subsets under one fixed random program. Each trial distils with the pure
``gold.distill.engine.distill`` (the run loop's step runner).

**Resume.** Trial scores are saved to ``trials.npz`` after every chunk; a rerun with
the same config skips finished chunks (the subsets are redrawn from the seed and checked).

Outputs in the workdir: ``utility.npz`` + ``utility.json`` (``gold.utility`` artifact,
indicator ``monte_carlo``, extras ``visits`` [N], ``subsets`` [K, M], ``trial_scores``
[K]), ``trials.npz``, ``result.json`` (timings, sequential-vs-batched speed, the
split-half convergence curve), ``convergence.csv`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import rng
from gold import workdir as gwork
from gold.distill import common as dcommon
from gold.distill import engine
from gold.experiments import common, plots
from gold.utility import Utility, save_utility
from gold.utility import monte_carlo as mcu

# Dataset -> (subset ratio M/N, trials) of paper supp. 12.4.
PAPER_SETTINGS: dict[str, tuple[float, int]] = {
    "cifar10": (0.05, 1000), "cifar10_jpeg": (0.05, 1000), "cifar100": (0.3, 500),
    "mnist": (0.008, 1000), "svhn": (0.3, 500),
}


MODES: tuple[str, ...] = ("hybrid", "vmap", "sequential")
"""How a chunk of subsets is run (see :class:`MCSettings`)."""


@dataclasses.dataclass(frozen=True)
class MCSettings:
    """Monte-Carlo run settings (``config.monte_carlo``).

    Attributes:
      trials: K subsets.
      subset_ratio: M / N.
      balanced: False = uniform subsets (paper); True = M / C per class.
      chunk: subsets per vmapped program (B).
      crn: common random numbers: every trial shares one key (see module docstring);
        default False (independent trials).
      sequential_check: run the first this many subsets one by one as well (timing
        baseline and a check that the batched scores match).
      convergence: trials per half at which to report the split-half Spearman
        (empty = powers of two).
      mode: how a chunk runs (``MODES``): ``vmap`` = distillation steps AND evaluation
        vmapped over the chunk; ``hybrid`` = one compiled single-subset step run subset by
        subset (no recompilation: all subsets share the table shape), then ONE vmapped
        evaluation of the chunk's synthetic sets; ``sequential`` = both one by one.
    """

    trials: int
    subset_ratio: float
    balanced: bool = False
    chunk: int = 16
    crn: bool = False
    sequential_check: int = 0
    convergence: tuple[int, ...] = ()
    mode: str = "hybrid"

    @classmethod
    def from_config(cls, mc: Any) -> "MCSettings":
        """From ``config.monte_carlo``; validates."""
        s = cls(trials=int(mc.trials), subset_ratio=float(mc.subset_ratio), balanced=bool(mc.balanced),
                chunk=int(mc.chunk), crn=bool(mc.get("crn", False)),
                sequential_check=int(mc.get("sequential_check", 0)),
                convergence=tuple(int(k) for k in (mc.get("convergence") or ())),
                mode=str(mc.get("mode", "hybrid")))
        if s.mode not in MODES:
            raise ValueError(f"unknown monte_carlo.mode {s.mode!r}; valid: {', '.join(MODES)}")
        if s.trials < 2:
            raise ValueError(f"monte_carlo.trials must be >= 2 (two halves), got {s.trials}")
        if s.chunk < 1:
            raise ValueError(f"monte_carlo.chunk must be >= 1, got {s.chunk}")
        if not 0.0 < s.subset_ratio < 1.0:
            raise ValueError(f"monte_carlo.subset_ratio must lie in (0, 1), got {s.subset_ratio}")
        if not 0 <= s.sequential_check <= s.trials:
            raise ValueError(f"monte_carlo.sequential_check must lie in [0, trials], got {s.sequential_check}")
        return s


# --------------------------------------------------------------------- batched real data
def subset_tables(subsets: np.ndarray, labels: np.ndarray, num_classes: int,
                  width: Optional[int] = None) -> gdata.ClassIndex:
    """Stacked class-index tables of B subsets into one pool.

    Args:
      subsets: int ``[B, M]`` pool indices.
      labels: int ``[N]`` pool labels.
      width: table width (default: the largest class count over all subsets).

    Returns:
      ``ClassIndex(table int32 [B, C, W], counts int32 [B, C])``; row c of table b lists
      subset b's pool indices of class c ascending, padded with -1.

    Raises:
      ValueError: a subset without any sample of some class.
    """
    subsets = np.asarray(subsets)
    labels = np.asarray(labels)
    counts = np.stack([np.bincount(labels[s], minlength=num_classes) for s in subsets])
    if counts.min() == 0:
        b, c = (int(v) for v in np.argwhere(counts == 0)[0])
        raise ValueError(f"subset {b} has no sample of class {c}; raise the subset ratio or use "
                         f"monte_carlo.balanced=True")
    w = int(width or counts.max())
    table = np.full((len(subsets), num_classes, w), gdata.sampler.PAD, np.int32)
    for b, s in enumerate(subsets):
        for c in range(num_classes):
            members = np.sort(s[labels[s] == c])
            table[b, c, : len(members)] = members
    return gdata.ClassIndex(jnp.asarray(table), jnp.asarray(counts.astype(np.int32)))


def pool_real(x: np.ndarray, y: np.ndarray, index: gdata.ClassIndex, num_classes: int,
              batch: int) -> dcommon.RealData:
    """``RealData`` over the whole pool with a (possibly stacked) subset index."""
    return dcommon.RealData(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), index,
                            int(num_classes), int(batch))


def real_axes(real: dcommon.RealData) -> dcommon.RealData:
    """``in_axes`` for a stacked :func:`pool_real`: pool shared, index tables mapped."""
    return dcommon.RealData(None, None, gdata.ClassIndex(0, 0), real.num_classes, real.batch)


def trial_keys(key: jax.Array, trials: np.ndarray, crn: bool) -> jax.Array:
    """Root keys ``[B]`` of the given global trial indices: ``fold_in(key, i)``, or
    ``key`` for every trial with common random numbers."""
    if crn:
        return jnp.stack([key] * len(trials))
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(trials, jnp.uint32))


def common_batch(subsets: np.ndarray, labels: np.ndarray, num_classes: int, batch_real: int) -> int:
    """One real batch per class for every subset: the halving rule
    (``gold.data.class_batch_size``) applied to the largest class of any subset, so all
    subsets share the static batch shape."""
    counts = [np.bincount(np.asarray(labels)[s], minlength=num_classes).max() for s in subsets]
    return gdata.class_batch_size(int(batch_real), [int(max(counts))])


# ------------------------------------------------------------------------ the programs
class BatchedDistiller:
    """Compiled distillation + evaluation of subsets of one pool, for one config.

    Trial ``i`` with root key ``k_i`` (:func:`trial_keys`) distils with
    ``engine.distill(algo, k_i, real_i, iterations)`` and evaluates with the networks
    of ``rng.stream(k_i, 'eval')``: the same numbers whichever mode runs it.

    Args:
      config: distillation config (``algorithm``, ``ipc``, ``iterations``, ``init``, ...).
      x, y: the pool ``[N, H, W, C]``, ``[N]``; x_test, y_test: the test data.
      num_classes: C. batch: the common real batch per class.
    """

    def __init__(self, config: Any, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, num_classes: int, batch: int):
        from gold.distill import registry
        from gold.evaluate import train_and_test

        self.num_classes = int(num_classes)
        self.x, self.y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
        x_test, y_test = jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.int32)
        self.batch = int(batch)
        template = pool_real(x, y, gdata.ClassIndex.from_labels(np.asarray(y), num_classes),
                             num_classes, batch)
        self.algo = registry.build(config, template)
        self.iterations = int(config.iterations)
        self.protocol = config_utils.eval_protocol(config)
        lr = jnp.float32(self.protocol.lr)
        train_test = functools.partial(train_and_test, self.protocol, self.num_classes)
        distill = functools.partial(engine.distill, self.algo, iterations=self.iterations)

        def evaluate(key, syn):
            keys = jax.random.split(rng.stream(key, "eval"), self.protocol.num_models)
            return train_test(keys, syn.x, syn.y, x_test, y_test, lr if syn.lr is None else syn.lr)

        def one(key, real):
            syn, progress = distill(key, real)
            return syn, progress.healthy

        ax = real_axes(template)
        self._distill_one = jax.jit(one)
        self._distill_many = jax.jit(jax.vmap(one, in_axes=(0, ax)))
        self._eval_one = jax.jit(evaluate)
        self._eval_many = jax.jit(jax.vmap(evaluate))

    def _real(self, index: gdata.ClassIndex) -> dcommon.RealData:
        return pool_real(self.x, self.y, index, self.num_classes, self.batch)

    @staticmethod
    def _check(healthy: Any) -> None:
        if not np.all(np.asarray(healthy)):
            raise FloatingPointError("a Monte-Carlo trial's distillation became non-finite or "
                                     "exploded; lower the learning rates")

    def run(self, keys: jax.Array, index: gdata.ClassIndex, mode: str) -> tuple[np.ndarray, float]:
        """Distil + evaluate B subsets (trial root keys ``keys [B]``, stacked tables
        ``index``); (accuracies ``[B, K]`` in %, seconds).

        ``mode`` (:data:`MODES`): ``vmap`` distils the B subsets in one vmapped program;
        ``hybrid`` distils them one by one with one compiled program; both evaluate the
        chunk in one vmapped program; ``sequential`` does everything one by one.
        """
        start = time.time()
        b = int(index.counts.shape[0])
        if mode == "vmap":
            syn, ok = self._distill_many(keys, self._real(index))
            self._check(ok)
            acc = self._eval_many(keys, syn)
        else:
            outs = [self._distill_one(keys[i], self._real(_subset_slice(index, i))) for i in range(b)]
            self._check([ok for _, ok in outs])
            if mode == "hybrid":
                syn = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[o[0] for o in outs])
                acc = self._eval_many(keys, syn)
            else:
                acc = jnp.stack([self._eval_one(keys[i], outs[i][0]) for i in range(b)])
        return np.asarray(acc, np.float64) * 100.0, time.time() - start


# ----------------------------------------------------------------------------- driver
def _subset_slice(index: gdata.ClassIndex, i: int) -> gdata.ClassIndex:
    return gdata.ClassIndex(index.table[i], index.counts[i])


def run(config: Any, workdir: str) -> dict:
    """Compute the Monte-Carlo indicator; write artifacts; return ``result.json``'s content.

    Args:
      config: ``configs/monte_carlo.py`` (a DC config + ``monte_carlo.*``).
      workdir: output folder (resumable).

    Raises:
      ValueError: bad settings, a subset missing a class, or a workdir / ``trials.npz``
        of a different run.
    """
    from gold.distill.loop import load_data

    start = time.time()
    s = MCSettings.from_config(config.monte_carlo)
    if config.get("init", "noise") == "real" and int(config.ipc) > 1:
        raise ValueError("real init with ipc > 1 needs ipc samples of each class in every subset; "
                         "the Monte-Carlo indicator uses DC at IPC 1 (paper)")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    common.check_experiment_workdir(workdir, config, ignore=("monte_carlo.sequential_check",
                                                             "monte_carlo.convergence", "monte_carlo.chunk",
                                                             "monte_carlo.mode"))
    gwork.prepare_workdir(workdir, config)
    ds = load_data(config.data)
    labels = np.asarray(ds.y_train, np.int64)
    n, c = len(labels), int(ds.num_classes)
    m = mcu.subset_size(n, s.subset_ratio, c, balanced=s.balanced, ipc=int(config.ipc))
    subset_rng = np.random.default_rng(int(config.seed))
    subsets = mcu.draw_subsets(subset_rng, labels, c, s.trials, m, balanced=s.balanced, min_per_class=1)
    batch = common_batch(subsets, labels, c, int(config.batch_real))
    width = int(max(np.bincount(labels[row], minlength=c).max() for row in subsets))
    x_test, y_test = ds.x_test, ds.y_test
    max_test = int(config.eval.get("max_test", 0) or 0)
    if max_test > 0:
        x_test, y_test = x_test[:max_test], y_test[:max_test]
    dist = BatchedDistiller(config, ds.x_train, labels, x_test, y_test, c, batch)
    k_models = dist.protocol.num_models

    # --- resume ----------------------------------------------------------------------
    trials_path = os.path.join(workdir, "trials.npz")
    acc = np.full((s.trials, k_models), np.nan)
    chunk_seconds: list[float] = []
    if os.path.exists(trials_path):
        with np.load(trials_path) as f:
            if not np.array_equal(f["subsets"], subsets):
                raise ValueError(f"{trials_path} holds other subsets; use a new workdir")
            acc = np.array(f["accuracies"])
            chunk_seconds = list(f["chunk_seconds"])
    key = rng.root(int(config.seed))
    common.log(f"[monte_carlo] {ds.name}: N={n}, {s.trials} subsets of M={m} (ratio {s.subset_ratio}, "
               f"{'balanced' if s.balanced else 'uniform'}), real batch/class {batch}, chunk {s.chunk}, "
               f"{dist.iterations} iterations, {k_models} eval models, crn={s.crn}, mode={s.mode}")

    # --- batched trials ----------------------------------------------------------------
    for lo in range(0, s.trials, s.chunk):
        hi = min(lo + s.chunk, s.trials)
        if np.all(np.isfinite(acc[lo:hi])):
            continue
        rows = subsets[lo:hi]
        if hi - lo < s.chunk:  # pad the last chunk to the compiled shape with repeats
            rows = np.concatenate([rows, subsets[hi - 1: hi].repeat(s.chunk - (hi - lo), 0)])
        index = subset_tables(rows, labels, c, width)
        trials = np.minimum(np.arange(lo, lo + s.chunk), hi - 1)  # padding repeats the last
        a, secs = dist.run(trial_keys(key, trials, s.crn), index, s.mode)
        acc[lo:hi] = a[: hi - lo]
        chunk_seconds.append(secs)
        np.savez(trials_path, subsets=subsets, accuracies=acc, chunk_seconds=np.asarray(chunk_seconds))
        common.log(f"[monte_carlo] trials {lo}-{hi - 1}: accuracy {np.mean(a[: hi - lo]):.2f} "
                   f"(min {np.min(a[: hi - lo].mean(1)):.2f}, max {np.max(a[: hi - lo].mean(1)):.2f}); "
                   f"{secs:.1f}s for {s.chunk} subsets")

    # --- sequential baseline ------------------------------------------------------------
    seq = {}
    if s.sequential_check:
        seq_acc, seq_secs = [], []
        for i in range(s.sequential_check):
            index = subset_tables(subsets[i: i + 1], labels, c, width)
            a, secs = dist.run(trial_keys(key, np.array([i]), s.crn), index, "sequential")
            seq_acc.append(a[0])
            seq_secs.append(secs)
        seq_acc = np.asarray(seq_acc)
        seq = {"sequential_trials": s.sequential_check,
               "sequential_seconds_per_trial": float(np.mean(seq_secs[1:] if len(seq_secs) > 1 else seq_secs)),
               "sequential_first_seconds": float(seq_secs[0]),
               "sequential_max_abs_diff": float(np.max(np.abs(seq_acc - acc[: s.sequential_check])))}
        common.log(f"[monte_carlo] sequential: {seq['sequential_seconds_per_trial']:.2f}s per trial "
                   f"(first incl. compile {seq_secs[0]:.1f}s); max |batched - sequential| accuracy "
                   f"{seq['sequential_max_abs_diff']:.3g}")

    # --- scores, convergence, artifacts ---------------------------------------------------
    trial_scores = acc.mean(axis=1)
    scores, visits = mcu.mc_scores(subsets, trial_scores, n)
    curve = mcu.split_half_convergence(subsets, trial_scores, n, s.convergence or None)
    u = Utility(scores=scores.astype(np.float32), labels=labels.astype(np.int32), ids=ds.ids,
                indicator="monte_carlo", dataset=ds.name,
                settings={**dataclasses.asdict(s), "subset_size": m, "algorithm": str(config.algorithm),
                          "ipc": int(config.ipc), "iterations": dist.iterations,
                          "eval_models": k_models, "max_test": max_test},
                seed=int(config.seed), seconds=float(np.sum(chunk_seconds)),
                extras={"visits": visits, "subsets": subsets, "trial_scores": trial_scores})
    npz = save_utility(os.path.join(workdir, "utility.npz"), u)
    steady = chunk_seconds[1:] if len(chunk_seconds) > 1 else chunk_seconds
    per_trial = float(np.mean(steady) / s.chunk) if steady else float("nan")
    result = {
        "indicator": "monte_carlo",
        "dataset": ds.name,
        "num_samples": n,
        "utility_path": npz,
        "trials": s.trials,
        "subset_size": m,
        "subset_ratio": s.subset_ratio,
        "balanced": s.balanced,
        "crn": s.crn,
        "chunk": s.chunk,
        "mode": s.mode,
        "algorithm": str(config.algorithm),
        "ipc": int(config.ipc),
        "iterations": dist.iterations,
        "eval_models": k_models,
        "num_test": int(len(y_test)),
        "trial_accuracy_mean": float(trial_scores.mean()),
        "trial_accuracy_std": float(trial_scores.std()),
        "visited_fraction": float(np.mean(visits > 0)),
        "mean_visits": float(visits.mean()),
        "seconds_per_trial": per_trial,
        "first_chunk_seconds": float(chunk_seconds[0]) if chunk_seconds else float("nan"),
        "convergence": curve,
        **seq,
        "seconds": time.time() - start,
    }
    if seq and np.isfinite(per_trial) and per_trial > 0:
        result["speedup_vs_sequential"] = seq["sequential_seconds_per_trial"] / per_trial
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    common.write_csv(os.path.join(workdir, "convergence.csv"), curve)
    common.write_text(os.path.join(workdir, "convergence.md"), common.markdown_table(
        curve, ["total_trials", "trials_per_half", "mean_visits", "compared", "spearman"], digits=3))
    plots.plot_convergence(os.path.join(workdir, "convergence.png"), curve,
                           title=f"Monte-Carlo split-half agreement, {ds.name} (M={m})")
    common.log(f"[monte_carlo] done: {per_trial:.2f}s per trial batched"
               + (f", {seq['sequential_seconds_per_trial']:.2f}s sequential" if seq else "")
               + f"; split-half Spearman at {curve[-1]['total_trials']} trials = {curve[-1]['spearman']}")
    return result


__all__ = ["BatchedDistiller", "MCSettings", "MODES", "PAPER_SETTINGS", "common_batch", "pool_real",
           "real_axes", "run", "subset_tables", "trial_keys"]
