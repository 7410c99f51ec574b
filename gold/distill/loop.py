"""The one run loop of every distillation algorithm (``launch/distill.py``).

``run(config, workdir)`` reads top to bottom:

1. **Workdir**: refuse to resume a workdir whose ``config.json`` differs from
   ``config`` (beyond harmless fields: :data:`HARMLESS_FIELDS`; ``iterations`` may
   grow: the run continues from its last checkpoint).
2. **Data and selection**: load ``config.data``, select the real samples the run may
   see (``gold.selection.select_from_config`` with the ``selection`` stream; at least
   ``ipc`` per class with real init), save their ids (``selection.npz``) and build
   :class:`RealData`.
3. **Algorithm**: ``gold.distill.registry.build(config, real)``.
4. **Resume**: restore the newest orbax checkpoint (state, RNG key data, iteration,
   elapsed seconds) when there is one.
5. **Steps** in chunks that end at the next log / evaluation / checkpoint iteration:
   ``gold.distill.engine.advance`` runs a chunk in one jitted ``while_loop`` and the
   host looks at its metrics once per chunk (no sync per step). An unhealthy step
   (non-finite loss or parameters, or synthetic pixels beyond ``max_abs_ratio`` times
   the largest real pixel) stops the run with ``FloatingPointError`` naming the
   iteration; the last good checkpoint stays.
6. **Final evaluation and artifacts**: ``result.json``, ``synthetic.npz`` (self-
   describing, :func:`gold.distill.load_synthetic`), ``synthetic.png``.

On several devices (``config.mesh``, :mod:`gold.parallel`) the jitted chunk
(:func:`chunk_program`) takes explicit ``in_shardings`` / ``out_shardings`` on the run's
mesh (state and real data replicated) and runs as one program per device
(``parallel.replicated_program``): the per-class loop of DC / DSA / DM is split along
the ``class`` axis (:func:`step_mesh`), everything else is computed on every device;
the evaluation splits its K networks along the ``model`` axis; one device runs the
plain program. Every log line carries the devices' memory (``device_memory_mb``,
:func:`gold.parallel.device_memory`). On several hosts
(``gold.parallel.initialize_distributed``) every process runs the same program and only
process 0 writes the workdir's files (orbax coordinates the checkpoints).

Randomness comes from named streams of ``gold.rng`` and step ``i`` uses
``step_key(steps, i)``; the state is checkpointed completely, so a run killed at any
point and restarted produces the same synthetic set as an uninterrupted run
(bit-exact on CPU).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Optional

import jax
import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import parallel
from gold import progress
from gold import rng
from gold import selection as gsel
from gold import workdir as gwork
from gold.checkpoint import Checkpointer
from gold.distill import artifacts
from gold.distill import common
from gold.distill import engine
from gold.distill import registry
from gold.evaluate import evaluate_synthetic, evaluation_mesh

# Config fields that may change between a run and its resumption (they do not change
# the synthetic set): where the data is read from, logging / checkpoint cadence, the
# evaluation settings, the number of iterations (a longer run continues) and the device
# layout (``mesh``: the same numbers within float32 rounding on any number of devices).
HARMLESS_FIELDS: tuple[str, ...] = (
    "data.dir", "eval_every", "checkpoint_every", "log_every", "eval", "workdir", "iterations", "mesh")

CHECKPOINT_DIR = "checkpoints"
EVAL_COLUMNS = ("eval_accuracy_mean", "eval_accuracy_std")
DEFAULT_MAX_ABS_RATIO = 1000.0


def check_resumable(workdir: str, config: Any) -> None:
    """Raise ValueError when ``workdir`` holds a run with a different config (beyond
    :data:`HARMLESS_FIELDS`)."""
    gwork.check_resumable(workdir, config, HARMLESS_FIELDS)


def finished_result(workdir: str, config: Any) -> Optional[dict]:
    """The stored ``result.json`` when ``workdir`` finished a run of exactly ``config``
    (harmless fields included: a changed evaluation or a longer run recomputes; only
    the device layout ``mesh`` may differ)."""
    path = os.path.join(workdir, "result.json")
    if not os.path.exists(path) or gwork.config_differences(
            gwork.read_json(os.path.join(workdir, "config.json")), config, ("mesh",)):
        return None
    return gwork.read_json(path)


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


def select_real(config: Any, ds: gdata.Dataset, root: jax.Array, workdir: str) -> np.ndarray:
    """Indices (into ``ds``) of the real samples the run may use, from the run's
    ``selection`` stream; at least the synthetic set's real images per class with
    real init."""
    min_per_class = 1
    if config.get("init", "noise") == "real":
        min_per_class = registry.read_settings(config).real_images_per_class()
    return gsel.select_from_config(config.selection, ds, rng.stream(root, "selection"),
                                   min_per_class=min_per_class, workdir=workdir)


# ---------------------------------------------------------------------- run
def step_mesh(config: Any, num_classes: int) -> jax.sharding.Mesh:
    """The mesh of the steps: algorithms that match every class separately
    (``common.ClassMatchingSettings``: DC, DSA, DM) prefer the ``class`` axis (a size
    dividing ``num_classes``), the others replicate along ``data``.

    Raises:
      ValueError: an explicit ``mesh.class > 1`` for an algorithm without a per-class
        loop, or an impossible layout.
    """
    if isinstance(registry.read_settings(config), common.ClassMatchingSettings):
        return parallel.mesh_from_config(config, prefer="class", divides={"class": int(num_classes)})
    requested = int((config.get("mesh") or {}).get("class", 0) or 0)
    if requested > 1:
        raise ValueError(f"mesh.class={requested}: {config.algorithm} has no per-class loop to split "
                         f"(only DC / DSA / DM-style class matching does); leave mesh.class 0")
    return parallel.mesh_from_config(config, prefer="data")


def chunk_end(done: int, iterations: int, *cadences: int) -> int:
    """The next iteration after ``done`` at which the loop must look (a multiple of a
    non-zero cadence, or ``iterations``)."""
    ends = [iterations] + [(done // c + 1) * c for c in cadences if c > 0]
    return min(e for e in ends if e > done)


def chunk_program(algo: common.Algorithm, mesh: Optional[jax.sharding.Mesh], state: common.DistillState,
                  steps_key: jax.Array, real: common.RealData, max_abs: float = float("inf"),
                  ) -> tuple[Any, common.DistillState, jax.Array, common.RealData]:
    """The loop's single jit site: ``engine.advance`` of ``algo`` compiled for ``mesh``,
    and its arguments placed there.

    A trivial mesh (None, one device) gives the plain jitted program. Otherwise the
    program takes explicit ``in_shardings`` / ``out_shardings`` on ``mesh`` (state, key
    and real data replicated; nothing is copied per device by hand) and runs as one
    program per device (``parallel.replicated_program``): the per-class loop of DC / DSA
    / DM is split along ``class``, everything else is computed on every device.

    Args:
      algo: the algorithm.
      mesh: the steps' mesh (:func:`step_mesh`) or None.
      state: the state to continue from (donated at the first call).
      steps_key: the run's ``steps`` stream.
      real: the selected real data (``[N, H, W, C]`` images, ``[N]`` labels).
      max_abs: bound on the decoded pixels (``engine.advance``).

    Returns:
      ``(advance, state, steps_key, real)``, the last three placed on ``mesh``;
      ``advance(state, steps_key, real, stop)`` (``stop``: int32) returns ``(state,
      engine.Progress)`` after the steps up to ``stop``.
    """
    step_fn = functools.partial(engine.advance, algo, max_abs=max_abs)
    if parallel.is_trivial(mesh):
        return jax.jit(step_fn, donate_argnums=0), state, steps_key, real
    on_mesh = parallel.replicated(mesh)
    state, steps_key = parallel.replicate(state, mesh), parallel.replicate(steps_key, mesh)
    real = parallel.place_real(real, mesh)
    advance = jax.jit(parallel.replicated_program(step_fn, mesh, 4),
                      in_shardings=(on_mesh, on_mesh, parallel.shardings_of(real), on_mesh),
                      out_shardings=on_mesh, donate_argnums=0)
    return advance, state, steps_key, real


def run(config: Any, workdir: str, dataset: Optional[gdata.Dataset] = None) -> dict:
    """Distil ``config.data`` with ``config.algorithm``; write the artifacts; return
    ``result.json``'s content. ``dataset``: the data to distil instead of loading
    ``config.data`` (``gold.distill.class_split`` passes one class group's samples).

    Result keys: ``accuracy_mean``, ``accuracy_std`` (percent over ``eval.num_models``
    networks), ``accuracies``, ``num_real`` (kept real samples), ``seconds`` (wall time
    including earlier interrupted attempts), ``distill_seconds``, ``eval_seconds``,
    ``algorithm``, ``dataset``, ``ipc``, ``iterations``, ``final_loss``, ``selection``
    (requested and effective kept ratio, kept samples per class).

    Raises:
      ValueError: bad config (unknown algorithm, ratio out of range, IPC larger than a
        kept class with real init, a utility file of another dataset, a workdir holding
        a different config, fewer iterations than the checkpoint holds).
      FloatingPointError: a non-finite or exploding step (names the iteration).
    """
    start = time.time()
    registry.read_settings(config)  # fail fast on a bad name or setting
    if int(config.get("class_groups", 0) or 0):
        raise ValueError(f"class_groups={config.class_groups} is a class-split run: "
                         f"gold.distill.class_split.run (launch/distill.py dispatches it)")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_resumable(workdir, config)
    finished = finished_result(workdir, config)
    if finished is not None:
        print(f"{workdir} holds this finished run; its result is kept", flush=True)
        return finished
    iterations = int(config.iterations)

    # --- data and selection ------------------------------------------------------
    root = rng.root(int(config.seed))
    ds = load_data(config.data) if dataset is None else dataset
    kept = select_real(config, ds, root, workdir)
    sel_path = os.path.join(workdir, "selection.npz")
    if os.path.exists(sel_path):
        with np.load(sel_path) as f:
            if not np.array_equal(f["ids"], ds.ids[kept]):
                raise ValueError(f"the selected real samples differ from the ones in {sel_path}; "
                                 f"refusing to resume with different data")
    main = parallel.is_main_process()  # on several hosts only process 0 writes files
    if main:
        gwork.prepare_workdir(workdir, config)
        np.savez(sel_path, ids=ds.ids[kept], indices=kept)
    real = common.make_real_data(ds.x_train[kept], ds.y_train[kept], ds.num_classes,
                                 int(config.batch_real))
    # what was really kept (min_per_class may raise the ratio): logged and in result.json
    selection = gsel.selection_summary(kept, ds.y_train, ds.num_classes, float(config.selection.ratio))
    x_test, y_test = ds.x_test, ds.y_test
    max_test = int(config.eval.get("max_test", 0) or 0)
    if max_test > 0:
        x_test, y_test = x_test[:max_test], y_test[:max_test]
    protocol = config_utils.eval_protocol(config)
    mesh = step_mesh(config, ds.num_classes)
    eval_mesh = evaluation_mesh(protocol.num_models, config.get("mesh"))  # fails fast on a bad layout
    if not parallel.is_trivial(mesh):
        print(f"mesh: steps {parallel.describe(mesh)}; evaluation {parallel.describe(eval_mesh)}",
              flush=True)

    # --- algorithm ----------------------------------------------------------------
    algo = registry.build(config, real)
    print(f"{algo.name} on {ds.name}: ipc={config.ipc} num_real={real.num_real} "
          f"real batch/class={real.batch} iterations={iterations} settings={algo.settings}",
          flush=True)
    k_steps, k_eval = rng.stream(root, "steps"), rng.stream(root, "eval")
    state = algo.init(rng.stream(root, "init"), real)

    # --- resume -------------------------------------------------------------------
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR))
    key_data = np.asarray(jax.random.key_data(k_steps))
    it0, elapsed0 = 0, 0.0
    latest = ckpt.latest_step()
    if latest is not None:
        if latest > iterations:
            raise ValueError(f"the checkpoint in {workdir} is at iteration {latest}, beyond "
                             f"iterations={iterations}; raise iterations or use a new workdir")
        like = {"state": state, "key": key_data, "iteration": np.int64(0), "elapsed": np.float64(0)}
        restored = ckpt.restore(latest, like)
        if not np.array_equal(np.asarray(restored["key"]), key_data):
            raise ValueError(f"checkpoint in {workdir} was written with another RNG key; "
                             f"use a new workdir")
        state = jax.tree.map(jax.numpy.asarray, restored["state"])
        it0, elapsed0 = int(restored["iteration"]), float(restored["elapsed"])
        print(f"resumed from checkpoint at iteration {it0}", flush=True)
    writer: list = []  # the MetricsWriter, created once the metric names are known

    def log(step: int, names: tuple = (), **values: float) -> None:
        if not main:
            return
        if not writer:  # fix every column now (evaluation rows too)
            writer.append(gwork.MetricsWriter(workdir, resume_step=it0 if latest is not None else None,
                                              fields=[*names, *EVAL_COLUMNS]))
        writer[0].write(step, **values)

    def save(it: int, st) -> None:
        ckpt.save(it, {"state": st, "key": key_data, "iteration": np.int64(it),
                       "elapsed": np.float64(elapsed0 + time.time() - start)})

    def evaluate(st) -> Any:
        syn = algo.synthetic(st)
        lr = None if syn.lr is None else float(syn.lr)
        return evaluate_synthetic(k_eval, syn.x, syn.y, x_test, y_test, ds.num_classes, protocol, lr=lr,
                                  mesh=eval_mesh)

    # --- steps --------------------------------------------------------------------
    max_abs = float(config.get("max_abs_ratio", DEFAULT_MAX_ABS_RATIO)) * float(np.max(np.abs(real.x)))
    advance, state, k_steps, real = chunk_program(algo, mesh, state, k_steps, real, max_abs)
    log_every = max(1, int(config.get("log_every", 10)))
    eval_every = int(config.get("eval_every", 0) or 0)
    ckpt_every = int(config.get("checkpoint_every", 0) or 0)
    distill_start, eval_seconds = time.time(), 0.0
    last_loss = float("nan")
    pending: dict[str, float] = {}
    pending_steps = 0
    done = it0
    bar = progress.bar(iterations, f"{algo.name} iterations", initial=it0)
    while done < iterations:
        stop = chunk_end(done, iterations, log_every, eval_every, ckpt_every)
        state, chunk = advance(state, k_steps, real, np.int32(stop))
        chunk = jax.device_get(chunk)
        if not bool(chunk.healthy):
            bar.close()
            bad = done + int(chunk.steps)
            good = ckpt.latest_step()
            kept_msg = (f"the last good checkpoint (iteration {good}) is kept in "
                        f"{os.path.join(workdir, CHECKPOINT_DIR)}" if good is not None
                        else "no checkpoint was written yet")
            raise FloatingPointError(
                f"{algo.name} became unstable at iteration {bad} (iterations {done + 1}..{bad} of "
                f"this chunk ran): non-finite loss or parameters, or synthetic pixels beyond "
                f"{max_abs:.3g} in absolute value (max_abs_ratio x the largest real pixel; "
                f"now {float(chunk.max_abs):.3g}); stopped, {kept_msg}. Lower the learning "
                f"rates (e.g. lr_img) or check the data")
        steps = int(chunk.steps)
        for n, v in chunk.metrics.items():  # step-weighted means between log lines
            pending[n] = pending.get(n, 0.0) + float(v) * steps
        pending_steps += steps
        done = stop
        last_loss = float(chunk.metrics["loss"])
        bar.update(steps)
        bar.set_postfix({"loss": last_loss})
        if done % log_every == 0 or done == iterations:
            row = {n: v / pending_steps for n, v in pending.items()}
            row["seconds_per_iteration"] = (time.time() - distill_start - eval_seconds) / (done - it0)
            memory = parallel.device_memory()
            row["device_memory_mb"] = max(memory["in_use_mb"])
            if main and not writer:  # once, with the first log line
                print(f"device memory: {parallel.describe_memory(memory)}", flush=True)
            log(done, tuple(row), **row)
            pending, pending_steps = {}, 0
        if eval_every and done % eval_every == 0 and done < iterations:
            res = evaluate(state)
            eval_seconds += res.seconds
            log(done, eval_accuracy_mean=res.mean, eval_accuracy_std=res.std)
        if (ckpt_every and done % ckpt_every == 0) or done == iterations:
            save(done, state)
    bar.close()
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
        "selection": selection,
        "storage_floats": common.storage_floats(state.params),
        "storage_per_class": common.storage_floats(state.params) / ds.num_classes,
    }
    if lr is not None:
        result["learned_lr"] = lr
    log(iterations, eval_accuracy_mean=res.mean, eval_accuracy_std=res.std)
    meta = {"num_real": real.num_real, "iterations": iterations, "seconds": total,
            "settings": algo.settings, "seed": int(config.seed),
            "selection": gwork.to_jsonable(config.selection)}
    npz_path = os.path.join(workdir, "synthetic.npz")
    ckpt.close()
    if writer:
        writer[0].close()
    if not main:
        return result
    artifacts.save_synthetic(npz_path, x=np.asarray(syn.x), y=np.asarray(syn.y), lr=lr, dataset=ds,
                             ipc=int(config.ipc), algorithm=algo.name, protocol=protocol, meta=meta,
                             factors=syn.factors)
    artifacts.save_png(os.path.join(workdir, "synthetic.png"), artifacts.load_synthetic(npz_path))
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    print(f"{algo.name} {ds.name} ipc={config.ipc}: accuracy {res.mean:.2f} +- {res.std:.2f} "
          f"(num_real={real.num_real}, {total:.1f}s)", flush=True)
    return result


__all__ = ["HARMLESS_FIELDS", "check_resumable", "chunk_end", "chunk_program", "finished_result",
           "load_data", "run", "select_real", "step_mesh"]
