"""Expert trajectories for trajectory matching (MTT): train, store, resume, load.

An *expert* is a network trained on the (selected) real data with plain SGD (ref
``buffer.py``: lr_teacher 0.01, momentum 0, weight decay 0, batch 256, DSA with
per-sample parameters). Its flattened parameters (``jax.flatten_util.ravel_pytree``
order) are recorded before training (epoch 0) and after every epoch: a trajectory
``[E + 1, P]``.

Many experts train in ONE compiled program: ``vmap`` over experts of a ``lax.scan``
over epochs of :func:`gold.nn.train_epoch`, collecting the flat parameters after each
epoch (on accelerators; on CPU a loop over experts of the same compiled expert is
faster, see :func:`use_vmap`). Experts are trained in chunks of ``experts_per_chunk``
(bounds memory) and each chunk is written as soon as it is done, so a crash loses at
most one chunk and a rerun trains only the missing chunks. Expert ``i`` always uses the
key ``fold_in(key, i)`` (``key = fold_in(PRNGKey(seed), 7)``), whatever the chunking or the interruptions, so a
resumed buffer equals an uninterrupted one.

Layout of a buffer directory (``launch/buffer.py --workdir``)::

    manifest.json        what the buffer is (dataset, model, selection, epochs, lr, zca,
                         dtype, ...) and which chunks are done (FORMAT_VERSION 1)
    experts_00000.npz    params [c, E+1, P] (float32, or bfloat16 stored as uint16),
                         epoch_loss [c, E], test_accuracy [c] (percent), expert_ids [c]
    experts_00001.npz    ...
    selection.npz        ids / indices / labels of the kept real samples and their
                         fingerprints (see :func:`selection_fingerprint`)
    config.json, result.json, metrics.csv

The selection is part of the buffer's identity: distillation (``gold.distill.mtt``)
refuses a buffer trained on other real samples than the ones it sees, unless told
otherwise (``allow_buffer_mismatch``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from gold import augment as gaug
from gold import config_utils
from gold import nn as gnn
from gold import progress
from gold import rng
from gold import selection as gsel
from gold import workdir as gwork
from gold.distill.unroll import flatten_params

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SELECTION_FILE = "selection.npz"
DTYPES = ("float32", "bfloat16")
_FINGERPRINT_SEED = 20240917


class BufferError(ValueError):
    """A missing, partial or incompatible expert buffer (the message says what to do)."""


def resume_command(buffer_dir: str, dataset: str = "<dataset>") -> str:
    """The command that trains (or resumes training) the buffer in ``buffer_dir``."""
    return (f"python launch/buffer.py --config=configs/buffer.py:{dataset} "
            f"--workdir={buffer_dir} [same --config.* overrides as before]")


# ----------------------------------------------------------------------- training
class ExpertRun:
    """A compiled expert trainer for one model / data / optimiser setting.

    ``trajectories(keys)`` trains ``len(keys)`` experts in one vmapped program;
    ``trajectories_sequential(keys)`` trains them one after another with the same
    per-expert computation (the baseline of bench/bench_mtt.py and of the equality
    test).
    """

    def __init__(self, model: nn.Module, x: jax.Array, y: jax.Array, *, epochs: int,
                 lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 batch_size: int = 256, dsa_strategy: str = gaug.DEFAULT_STRATEGY,
                 x_test: Optional[jax.Array] = None, y_test: Optional[jax.Array] = None,
                 test_batch_size: int = 1000):
        """Args:
          model: the expert architecture (no ``batch_stats``: a trajectory is params only).
          x, y: training images ``[N, H, W, C]`` (or clips ``[N, T, H, W, C]``, without DSA)
            and int labels ``[N]``.
          epochs: E; trajectories have E + 1 snapshots.
          lr, momentum, weight_decay: PyTorch-style SGD (ref: 0.01, 0, 0).
          batch_size: minibatch (ref 256).
          dsa_strategy: DSA op-groups with per-sample parameters ('none': no augmentation;
            ValueError on clips otherwise).
          x_test, y_test: optional test split; each expert's final test accuracy is
            reported when given.
        """
        self.model = model
        self.x, self.y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.tx = gnn.sgd(float(lr), float(momentum), float(weight_decay))
        self.input_shape = tuple(self.x.shape[1:])
        gaug.require_images(dsa_strategy, self.input_shape)  # clips: dsa_strategy='none'
        self.augment = gaug.get_augment("dsa", dsa_strategy)  # per-sample DSA, or None
        probe = jax.eval_shape(lambda: gnn.init_variables(model, jax.random.key(0), self.input_shape))
        if set(probe) != {"params"}:
            raise BufferError(f"experts must have parameters only (no {sorted(set(probe) - {'params'})}); "
                              f"use a model without BatchNorm (e.g. model.norm='instancenorm')")
        self.num_params = int(sum(int(np.prod(s.shape)) for s in jax.tree.leaves(probe["params"])))
        self.x_test = None if x_test is None else jnp.asarray(x_test)
        self.y_test = None if y_test is None else jnp.asarray(y_test, jnp.int32)
        self.test_batch_size = int(test_batch_size)
        self._vmapped = jax.jit(jax.vmap(self._one))
        self._single = jax.jit(self._one)

    def _one(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One expert: (trajectory [E+1, P], epoch loss [E], test accuracy in % (NaN if no test))."""
        variables = gnn.init_variables(self.model, jax.random.fold_in(key, 0), self.input_shape)
        state = gnn.TrainState(variables, self.tx.init(variables["params"]))

        def run_epoch(st, k):
            st, loss, _ = gnn.train_epoch(self.model, self.tx, st, self.x, self.y, k,
                                          batch_size=self.batch_size, augment=self.augment)
            return st, (flatten_params(st.variables["params"])[0], loss)

        epoch_keys = jax.random.split(jax.random.fold_in(key, 1), self.epochs)
        state, (flats, losses) = jax.lax.scan(run_epoch, state, epoch_keys)
        traj = jnp.concatenate([flatten_params(variables["params"])[0][None], flats])
        if self.x_test is None:
            acc = jnp.float32(jnp.nan)
        else:
            stacked = jax.tree.map(lambda a: a[None], state.variables)
            acc = 100.0 * gnn.accuracy_many(self.model, stacked, self.x_test, self.y_test,
                                            self.test_batch_size)[0]
        return traj, losses, acc

    def trajectories(self, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Train ``K = len(keys)`` experts at once.

        Returns:
          trajectories float32 ``[K, E+1, P]``, epoch losses ``[K, E]``, final test
          accuracies ``[K]`` in percent (NaN without a test split).
        """
        return self._vmapped(keys)

    def trajectories_sequential(self, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Same result as :meth:`trajectories`, one expert at a time (one compiled expert)."""
        outs = [self._single(keys[i]) for i in range(keys.shape[0])]
        return tuple(jnp.stack([o[j] for o in outs]) for j in range(3))


EXPERT_MODES: tuple[str, ...] = ("auto", "vmap", "sequential")


def use_vmap(mode: str) -> bool:
    """Whether a chunk's experts train as one vmapped program.

    ``auto``: vmapped on accelerators, sequential on CPU, where a vmapped chunk was
    measured slower than a loop (the cores are already saturated by one expert, and
    convolutions with K different kernels run as a loop anyway; bench/bench_mtt.py).
    """
    if mode not in EXPERT_MODES:
        raise ValueError(f"unknown expert_mode {mode!r}; valid: {EXPERT_MODES}")
    if mode == "auto":
        return jax.default_backend() != "cpu"
    return mode == "vmap"


def expert_keys(seed: int, start: int, stop: int) -> jax.Array:
    """Keys of experts ``start .. stop-1``: ``fold_in(experts stream of seed, i)``."""
    base = rng.seed_stream(seed, "experts")
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, stop, dtype=jnp.uint32))


# -------------------------------------------------------------------- selection id
def indices_sha256(ids: np.ndarray) -> str:
    """sha256 hex of the sorted int64 ids of the kept samples."""
    return hashlib.sha256(np.sort(np.asarray(ids, np.int64)).tobytes()).hexdigest()


def selection_fingerprint(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Order-free fingerprint of a set of images: float64 ``[N]``.

    Each image is projected on one fixed random direction (a function of the image
    shape only); the projections are sorted within each class and concatenated in
    class order. Two sets of (model-space) images have equal fingerprints, up to
    float rounding, iff they hold the same images per class. The distillation only sees
    the selected images (not their ids), so this is how it checks that a buffer was
    trained on the same real samples.
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    y = np.asarray(y).reshape(-1)
    r = np.random.default_rng(_FINGERPRINT_SEED).standard_normal(x.shape[1]).astype(np.float32)
    r /= np.sqrt(np.float32(x.shape[1]))
    proj = np.concatenate([x[i:i + 8192] @ r for i in range(0, len(x), 8192)]) if len(x) else np.zeros(0)
    proj = proj.astype(np.float64)
    return np.concatenate([np.sort(proj[y == c]) for c in range(num_classes)])


def fingerprints_match(a: np.ndarray, b: np.ndarray, counts_a, counts_b) -> bool:
    """True when two :func:`selection_fingerprint` vectors describe the same images."""
    if list(map(int, counts_a)) != list(map(int, counts_b)) or a.shape != b.shape:
        return False
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-4))


# ----------------------------------------------------------------------- storage
def _encode(params: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.asarray(params, np.float32)
    return np.asarray(params, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def _decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return stored
    return stored.view(ml_dtypes.bfloat16)


def save_selection(buffer_dir: str, ids: np.ndarray, indices: np.ndarray, x: np.ndarray,
                   y: np.ndarray, num_classes: int) -> None:
    """Write ``selection.npz``: ids / indices / labels of the kept samples, their
    :func:`selection_fingerprint` and the kept count per class."""
    y = np.asarray(y)
    tmp = os.path.join(buffer_dir, SELECTION_FILE + ".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids, np.int64), indices=np.asarray(indices, np.int64), labels=y,
             fingerprint=selection_fingerprint(x, y, num_classes),
             class_counts=np.bincount(y, minlength=num_classes))
    os.replace(tmp, os.path.join(buffer_dir, SELECTION_FILE))


def chunk_file(i: int) -> str:
    """File name of chunk ``i``."""
    return f"experts_{i:05d}.npz"


def chunk_bounds(i: int, experts_per_chunk: int, num_experts: int) -> tuple[int, int]:
    """Experts ``[start, stop)`` of chunk ``i``."""
    start = i * experts_per_chunk
    return start, min(start + experts_per_chunk, num_experts)


def num_chunks(num_experts: int, experts_per_chunk: int) -> int:
    """Chunks of a buffer of ``num_experts``."""
    return -(-num_experts // experts_per_chunk)


def write_chunk(buffer_dir: str, i: int, params: np.ndarray, epoch_loss: np.ndarray,
                test_accuracy: np.ndarray, expert_ids: np.ndarray, dtype: str) -> str:
    """Write chunk ``i`` atomically (tmp file + rename); returns its path."""
    path = os.path.join(buffer_dir, chunk_file(i))
    tmp = path + ".tmp.npz"
    np.savez(tmp, params=_encode(params, dtype), epoch_loss=np.asarray(epoch_loss, np.float32),
             test_accuracy=np.asarray(test_accuracy, np.float32),
             expert_ids=np.asarray(expert_ids, np.int64))
    os.replace(tmp, path)
    return path


def read_manifest(buffer_dir: str, dataset: str = "<dataset>") -> dict:
    """The buffer's ``manifest.json``.

    Raises:
      BufferError: no buffer there (the message gives the command that trains one).
    """
    path = os.path.join(buffer_dir, MANIFEST)
    if not buffer_dir or not os.path.exists(path):
        raise BufferError(f"no expert buffer at {buffer_dir!r} (missing {MANIFEST}); train it with\n  "
                          + resume_command(buffer_dir or "<buffer_dir>", dataset))
    manifest = gwork.read_json(path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BufferError(f"{path} has buffer format {manifest.get('format_version')}; "
                          f"expected {FORMAT_VERSION}")
    return manifest


def experts_done(manifest: dict) -> int:
    """Number of experts whose chunk is written."""
    return int(sum(c["stop"] - c["start"] for c in manifest["chunks"].values()))


@dataclasses.dataclass(frozen=True)
class ExpertBuffer:
    """Loaded trajectories.

    Attributes:
      params: ``[K, S, P]`` flat parameters of K experts at epochs ``0 .. S-1``, in the
        stored dtype (float32, or ml_dtypes.bfloat16).
      manifest: the buffer's manifest.
      fingerprint, class_counts: the selection fingerprint of the buffer's real data
        (:func:`selection_fingerprint`) and kept samples per class.
    """

    params: np.ndarray
    manifest: dict
    fingerprint: np.ndarray
    class_counts: np.ndarray


def load_buffer(buffer_dir: str, *, num_snapshots: Optional[int] = None, max_experts: int = 0,
                dataset: str = "<dataset>") -> ExpertBuffer:
    """Read a complete buffer (or its first ``max_experts`` experts).

    Args:
      buffer_dir: the buffer's directory.
      num_snapshots: keep epochs ``0 .. num_snapshots-1`` only (MTT needs
        ``max_start_epoch + expert_epochs``); default all ``E + 1``.
      max_experts: > 0 reads only the first ``max_experts`` experts (these must be done:
        usable while the rest still trains); 0 = all, and the buffer must be complete.
      dataset: dataset name for the error messages' commands.

    Raises:
      BufferError: missing, partial (says how to resume), too few epochs, missing shard.
    """
    manifest = read_manifest(buffer_dir, dataset)
    dataset = manifest.get("dataset", dataset)
    total = int(manifest["num_experts"])
    per_chunk = int(manifest["experts_per_chunk"])
    done = sorted(int(i) for i in manifest["chunks"])
    want = total if max_experts <= 0 else min(int(max_experts), total)
    needed = list(range(num_chunks(want, per_chunk)))
    missing = [i for i in needed if i not in done]
    if missing:
        have = experts_done(manifest)
        raise BufferError(
            f"expert buffer at {buffer_dir} is partial: {have} of {total} experts trained "
            f"(chunks {missing} of {per_chunk} experts missing"
            + ("" if max_experts <= 0 else f"; {want} asked for with max_experts") + "). "
            f"Resume training it with\n  {resume_command(buffer_dir, dataset)}\n"
            f"or use the experts done so far with max_experts <= {_contiguous_done(manifest)}")
    epochs = int(manifest["epochs"])
    snaps = epochs + 1 if num_snapshots is None else int(num_snapshots)
    if snaps > epochs + 1:
        raise BufferError(f"{snaps} snapshots (epochs 0..{snaps - 1}) asked for but the buffer at "
                          f"{buffer_dir} stores epochs 0..{epochs}")
    parts = []
    for i in needed:
        path = os.path.join(buffer_dir, chunk_file(i))
        if not os.path.exists(path):
            raise BufferError(f"{path} is listed in the manifest but missing; delete its entry "
                              f"or retrain with\n  {resume_command(buffer_dir, dataset)}")
        with np.load(path) as f:
            parts.append(_decode(f["params"][:, :snaps], manifest["dtype"]))
    params = np.concatenate(parts)[:want]
    sel_path = os.path.join(buffer_dir, SELECTION_FILE)
    with np.load(sel_path) as f:
        fingerprint, counts = np.asarray(f["fingerprint"]), np.asarray(f["class_counts"])
    return ExpertBuffer(params, manifest, fingerprint, counts)


def _contiguous_done(manifest: dict) -> int:
    per_chunk, total = int(manifest["experts_per_chunk"]), int(manifest["num_experts"])
    n, i = 0, 0
    while str(i) in manifest["chunks"]:
        n = chunk_bounds(i, per_chunk, total)[1]
        i += 1
    return n


# ---------------------------------------------------------------- identity checks
# Manifest fields that define a buffer: a rerun in the same directory must agree on all.
IDENTITY_FIELDS: tuple[str, ...] = (
    "dataset", "data_subset", "zca", "model", "num_params", "input_shape", "num_classes",
    "epochs", "lr", "momentum", "weight_decay", "batch_size", "dsa_strategy", "seed", "dtype",
    "experts_per_chunk", "selection")


def check_compatible(manifest: dict, *, buffer_dir: str, dataset: str, zca: bool, model: dict,
                     num_params: int, snapshots_needed: int,
                     train_per_class: Optional[int] = None) -> None:
    """Raise :class:`BufferError` unless the buffer fits a distillation.

    Args:
      manifest: the buffer's manifest.
      dataset, zca, model (``{'name', 'overrides'}``), num_params: what the
        distillation uses.
      snapshots_needed: ``max_start_epoch + expert_epochs`` (the largest target epoch
        is ``max_start_epoch - 1 + expert_epochs``).
      train_per_class: ``data.train_per_class`` of a tiny run (0 = all; None = unchecked).
    """
    problems = []
    if manifest["dataset"] != dataset:
        problems.append(f"dataset {manifest['dataset']!r} (distillation: {dataset!r})")
    if bool(manifest["zca"]) != bool(zca):
        problems.append(f"zca={manifest['zca']} (distillation: data.zca={zca})")
    if manifest["model"] != model:
        problems.append(f"model {manifest['model']} (distillation: {model})")
    elif int(manifest["num_params"]) != int(num_params):
        problems.append(f"{manifest['num_params']} parameters (distillation's model: {num_params})")
    stored = int((manifest.get("data_subset") or {}).get("train_per_class", 0))
    if train_per_class is not None and stored != int(train_per_class):
        problems.append(f"data.train_per_class={stored} (distillation: {train_per_class})")
    if problems:
        raise BufferError(f"the expert buffer at {buffer_dir} does not fit this distillation: "
                          + "; ".join(problems) + ". Point buffer_dir at a buffer trained with the "
                          "same dataset / model / zca, or train one with\n  "
                          + resume_command("<new_dir>", dataset))
    epochs = int(manifest["epochs"])
    if snapshots_needed - 1 > epochs:
        raise BufferError(
            f"max_start_epoch + expert_epochs = {snapshots_needed} needs expert epochs up to "
            f"{snapshots_needed - 1} but the buffer at {buffer_dir} stores epochs 0..{epochs}; "
            f"lower max_start_epoch / expert_epochs or train experts for more epochs")


# --------------------------------------------------------------------------- run
def _model_identity(model_cfg: Any) -> dict:
    return {"name": str(model_cfg.name),
            "overrides": {k: v for k, v in sorted(config_utils.model_overrides(model_cfg).items())}}


def _selection_record(config: Any, ds: Any, kept: np.ndarray) -> dict:
    sel = config.selection
    return {
        "indicator": str(sel.get("indicator", "none")),
        "ratio": float(sel.get("ratio", 1.0)),
        "utility_path": str(sel.get("utility_path", "") or ""),
        "stratum": int(sel.get("stratum", 0) or 0),
        "num_strata": int(sel.get("num_strata", 10) or 10),
        "policy": str(sel.get("policy", "greedy") or "greedy"),
        "min_per_class": int(config.get("min_per_class", 1)),
        "num_kept": int(len(kept)),
        "indices_sha256": indices_sha256(ds.ids[kept]),
    }


def select_kept(config: Any, ds: Any, workdir: Optional[str]) -> np.ndarray:
    """The kept training indices: ``select_from_config`` with the ``selection`` stream of
    ``seed``, the same key as the distillation loop (``gold.distill.loop.select_real``)."""
    key = rng.seed_stream(config.seed, "selection")
    return gsel.select_from_config(config.selection, ds, key,
                                   min_per_class=int(config.get("min_per_class", 1)), workdir=workdir)


def run(config: Any, workdir: str) -> dict:
    """Train (or finish training) the expert buffer of ``config`` in ``workdir``.

    Config fields (``configs/buffer.py``): ``data.*``, ``model.*``, ``seed``,
    ``selection.*``, ``min_per_class``, ``num_experts``, ``epochs``, ``lr``,
    ``momentum``, ``weight_decay``, ``batch_size``, ``dsa_strategy``,
    ``experts_per_chunk``, ``expert_mode`` (:func:`use_vmap`), ``dtype``,
    ``test_batch_size``, ``max_test``.

    A rerun in the same ``workdir`` trains only the chunks that are not written yet;
    ``num_experts`` may grow between runs (more chunks), nothing else may change.

    Returns:
      ``result.json``'s content: ``num_experts``, ``epochs``, ``num_params``,
      ``num_real``, ``test_accuracy_mean`` / ``_std`` (final expert accuracies, percent),
      ``chunks_trained`` (this call), ``expert_epochs_per_hour`` (this call),
      ``seconds`` (this call), ``buffer_dir``.

    Raises:
      BufferError: the directory holds a buffer with other settings; a BN model.
      ValueError: bad config values.
    """
    from gold.distill.loop import load_data  # the distillation's loader (tiny subsets too)

    start = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    num_experts, epochs = int(config.num_experts), int(config.epochs)
    per_chunk, dtype = int(config.experts_per_chunk), str(config.dtype)
    if num_experts < 1 or epochs < 1 or per_chunk < 1:
        raise ValueError(f"num_experts, epochs and experts_per_chunk must be >= 1, got "
                         f"{num_experts}, {epochs}, {per_chunk}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {DTYPES}")
    strategy = str(config.dsa_strategy)
    gaug.parse_strategy(strategy)
    vmapped = use_vmap(str(config.get("expert_mode", "auto")))

    # --- data and selection ------------------------------------------------------
    ds = load_data(config.data)
    kept = select_kept(config, ds, workdir)
    x, y = ds.x_train[kept], ds.y_train[kept]
    x_test, y_test = ds.x_test, ds.y_test
    max_test = int(config.get("max_test", 0) or 0)
    if max_test > 0:
        x_test, y_test = x_test[:max_test], y_test[:max_test]
    model = config_utils.build_model(config.model, ds.num_classes, ds.x_train.shape[1:])
    trainer = ExpertRun(model, x, y, epochs=epochs, lr=float(config.lr), momentum=float(config.momentum),
                        weight_decay=float(config.weight_decay), batch_size=int(config.batch_size),
                        dsa_strategy=strategy, x_test=x_test, y_test=y_test,
                        test_batch_size=int(config.get("test_batch_size", 1000)))

    identity = {
        "dataset": ds.name,
        "data_subset": {"train_per_class": int(config.data.get("train_per_class", 0) or 0),
                        "test_per_class": int(config.data.get("test_per_class", 0) or 0)},
        "zca": bool(config.data.get("zca", False)),
        "model": _model_identity(config.model),
        "num_params": trainer.num_params,
        "input_shape": list(ds.x_train.shape[1:]),
        "num_classes": int(ds.num_classes),
        "epochs": epochs, "lr": float(config.lr), "momentum": float(config.momentum),
        "weight_decay": float(config.weight_decay), "batch_size": int(config.batch_size),
        "dsa_strategy": strategy, "seed": int(config.seed), "dtype": dtype,
        "experts_per_chunk": per_chunk,
        "selection": _selection_record(config, ds, kept),
    }

    # --- manifest: new, or resume a compatible one ---------------------------------
    manifest_path = os.path.join(workdir, MANIFEST)
    if os.path.exists(manifest_path):
        manifest = read_manifest(workdir, ds.name)
        diffs = [f"{f}: {manifest.get(f)!r} -> {identity[f]!r}" for f in IDENTITY_FIELDS
                 if gwork.to_jsonable(manifest.get(f)) != gwork.to_jsonable(identity[f])]
        if diffs:
            raise BufferError(f"{workdir} holds an expert buffer with other settings; refusing to "
                              f"mix them. Use a new --workdir. Differences: " + "; ".join(diffs))
        manifest["num_experts"] = max(num_experts, int(manifest["num_experts"]))
        print(f"resuming buffer in {workdir}: {experts_done(manifest)} experts done", flush=True)
    else:
        manifest = {"format_version": FORMAT_VERSION, **identity, "num_experts": num_experts,
                    "chunks": {}, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    total = int(manifest["num_experts"])
    gwork.prepare_workdir(workdir, config)
    save_selection(workdir, ds.ids[kept], kept, x, y, ds.num_classes)
    manifest["num_experts_done"] = experts_done(manifest)
    manifest["complete"] = manifest["num_experts_done"] >= total
    gwork.write_json(manifest_path, manifest)

    # --- train the missing chunks ----------------------------------------------------
    metrics = gwork.MetricsWriter(workdir)
    trained, experts_trained, train_seconds = 0, 0, 0.0
    bar = progress.bar(total, "buffer experts", initial=experts_done(manifest))
    for i in range(num_chunks(total, per_chunk)):
        if str(i) in manifest["chunks"] and os.path.exists(os.path.join(workdir, chunk_file(i))):
            continue
        lo, hi = chunk_bounds(i, per_chunk, total)
        t0 = time.time()
        train = trainer.trajectories if vmapped else trainer.trajectories_sequential
        traj, losses, acc = jax.device_get(train(expert_keys(int(config.seed), lo, hi)))
        if not np.all(np.isfinite(traj)):
            raise FloatingPointError(f"non-finite expert parameters in chunk {i}; lower config.lr")
        seconds = time.time() - t0
        write_chunk(workdir, i, traj, losses, acc, np.arange(lo, hi), dtype)
        manifest["chunks"][str(i)] = {"file": chunk_file(i), "start": lo, "stop": hi,
                                      "seconds": seconds, "test_accuracy": [float(a) for a in acc],
                                      "final_train_loss": [float(l) for l in losses[:, -1]]}
        manifest["num_experts_done"] = experts_done(manifest)
        manifest["complete"] = manifest["num_experts_done"] >= total
        gwork.write_json(manifest_path, manifest)
        trained += 1
        experts_trained += hi - lo
        train_seconds += seconds
        metrics.write(hi, chunk=i, seconds=seconds, test_accuracy=float(np.mean(acc)),
                      final_train_loss=float(np.mean(losses[:, -1])))
        bar.update(hi - lo)
    bar.close()
    metrics.close()

    accs = [a for c in manifest["chunks"].values() for a in c["test_accuracy"]]
    result = {
        "buffer_dir": workdir,
        "num_experts": int(manifest["num_experts_done"]),
        "epochs": epochs,
        "num_params": trainer.num_params,
        "num_real": int(len(kept)),
        "test_accuracy_mean": float(np.mean(accs)) if accs else float("nan"),
        "test_accuracy_std": float(np.std(accs)) if accs else float("nan"),
        "chunks_trained": trained,
        "experts_trained": experts_trained,
        "expert_epochs_per_hour": (3600.0 * experts_trained * epochs / train_seconds
                                   if train_seconds > 0 else None),
        "seconds": time.time() - start,
    }
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    return result


__all__ = [
    "BufferError", "EXPERT_MODES", "ExpertBuffer", "ExpertRun", "FORMAT_VERSION", "IDENTITY_FIELDS",
    "MANIFEST",
    "check_compatible", "chunk_bounds", "chunk_file", "expert_keys", "experts_done",
    "fingerprints_match", "indices_sha256", "load_buffer", "num_chunks", "read_manifest",
    "resume_command", "run", "save_selection", "select_kept", "selection_fingerprint",
    "use_vmap", "write_chunk",
]
