"""Compute any indicator on a dataset (:func:`compute_utility`) and the launcher's
library function (:func:`run`, used by ``launch/utility.py``).

Keys derived from the run key ``key = jax.random.key(seed)``: classifier training
``gold.rng`` sub-stream ``utility.trials`` (trial t: ``fold_in(., t)``), K-means
``utility.kmeans`` (class c: ``fold_in(., c)``), default real-init images
``utility.init_images``.

The feature indicators (density, cluster, init_distance) use the GAP features of the
FIRST trial's network, trained with the loss indicator's settings (paper 12.4: "we use
the same parameters for Classification Loss to train the classifier"). Computed on their
own they train only that one network (trial 0 of a T-trial loss run is the same network,
see :mod:`gold.utility.loss`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import jax
import numpy as np

from gold import parallel
from gold import rng
from gold import workdir as gwork
from gold.checkpoint import Checkpointer
from gold.utility import features as gfeat
from gold.utility import loss as gloss
from gold.utility.artifact import Utility, save_utility
from gold.utility.defaults import FEATURE_FAMILY, INDICATORS, LOSS_FAMILY, default_settings

CHECKPOINT_DIR = "checkpoints"
# Fields that may change when a run is resumed (where data is read from, cadence).
HARMLESS_FIELDS: tuple[str, ...] = ("data.dir", "checkpoint_every")


def _get(config: Any, name: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(name, default)
    return config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)


def resolve_settings(dataset_name: str, config: Any = None) -> dict:
    """Paper defaults for ``dataset_name`` overridden by the fields ``config`` sets."""
    settings = default_settings(dataset_name)
    for k, default in list(settings.items()):
        v = _get(config, k)
        if v is None:
            continue
        if isinstance(default, bool):
            settings[k] = bool(v)
        elif isinstance(default, (int, float)):
            settings[k] = type(default)(v)
        else:
            settings[k] = v
    return settings


def check_indicator(indicator: str) -> None:
    """Raise ValueError for an indicator :func:`compute_utility` cannot compute."""
    if indicator == "monte_carlo":
        raise ValueError("the monte_carlo indicator needs distillation runs: compute it with "
                         "gold.experiments and pass its utility.npz as utility_path")
    if indicator not in INDICATORS:
        raise ValueError(f"unknown indicator {indicator!r}; valid: {', '.join(INDICATORS)}")


def train_settings(settings: dict, trials: Optional[int] = None) -> gloss.TrainSettings:
    """:class:`gold.utility.loss.TrainSettings` from a settings dict."""
    return gloss.TrainSettings(
        trials=int(trials if trials is not None else settings["trials"]),
        epochs=int(settings["epochs"]), lr=float(settings["lr"]),
        batch_size=int(settings["batch_size"]), optimizer=str(settings["optimizer"]),
        weight_decay=float(settings["weight_decay"]), momentum=float(settings["momentum"]),
        trials_per_chunk=int(settings["trials_per_chunk"]),
        trial_mode=str(settings["trial_mode"]),
    )


def classifier(dataset: Any, config: Any = None):
    """The classifier of ``config.model`` for ``dataset`` (``gold.config_utils.build_model``;
    the default ConvNet when ``config`` names no model)."""
    import ml_collections

    from gold import config_utils  # local: keeps `gold.utility` importable without data deps

    model_cfg = _get(config, "model") or ml_collections.ConfigDict({"name": "convnet"})
    return config_utils.build_model(model_cfg, dataset.num_classes, tuple(dataset.x_train.shape[1:]))


def _print_log(step: int, scalars: dict) -> None:
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
    print(f"[utility] step {step}: {text}", flush=True)


def scores_from_record(indicator: str, u: Utility, **overrides: Any) -> Utility:
    """Re-derive a loss-family indicator from a saved loss-family utility, no retraining.

    ``u`` must carry the curves (``curve``, ``extras['el2n_curve']``,
    ``extras['forgetting']``). ``overrides`` may set ``sigma``, ``epoch`` (loss) or
    ``el2n_epoch`` (EL2N), e.g. the early-epoch variants of paper Table 9.
    """
    settings = {**u.settings, **overrides}
    if indicator == "loss":
        if u.curve is None:
            raise ValueError("this utility has no loss curve")
        scores = gloss.loss_scores(u.curve, float(settings.get("sigma", 3.0)), int(settings.get("epoch", -1)))
    elif indicator == "el2n":
        scores = gloss.el2n_scores(u.extras["el2n_curve"], int(settings.get("el2n_epoch", 0)))
    elif indicator == "forgetting":
        scores = gloss.forgetting_scores(u.extras["forgetting"])
    else:
        raise ValueError(f"{indicator!r} is not a loss-family indicator {LOSS_FAMILY}")
    return Utility(scores, u.labels, u.ids, indicator, u.dataset, settings, u.seed, u.seconds,
                   u.curve, u.extras)


def compute_utility(
    indicator: str,
    dataset: Any,
    config: Any,
    key: jax.Array,
    *,
    init_indices: Optional[np.ndarray] = None,
    log: Optional[gloss.LogFn] = _print_log,
    checkpointer: Optional[Checkpointer] = None,
    checkpoint_every: int = 1,
) -> Utility:
    """Score every training sample of ``dataset`` with ``indicator`` (higher = more useful).

    Args:
      indicator: one of ``INDICATORS`` (loss, el2n, forgetting, density, cluster,
        init_distance).
      dataset: a :class:`gold.data.Dataset` (uses ``name, x_train, y_train, ids,
        num_classes``).
      config: settings overriding :func:`default_settings` (dict or ConfigDict; fields
        trials, epochs, lr, batch_size, optimizer, sigma, epoch, el2n_epoch, knn_k,
        num_clusters, ipc, ..., and optionally ``model``); None = paper defaults.
      key: PRNG key of the run.
      init_indices: real-init image indices for ``init_distance`` (default: the IPC
        images of :func:`gold.utility.features.default_init_indices` with
        ``utility.init_images``).
      log: per-epoch progress callback ``(step, scalars)``; None = silent.
      checkpointer, checkpoint_every: resumable training of the trials (see
        :func:`gold.utility.loss.train_trials`); None = no checkpoints.

    The returned ``seed`` is ``config.seed`` (metadata; the randomness is ``key``).

    Returns:
      :class:`Utility`; loss-family utilities carry the mean loss curve ``[E, N]`` and
      extras ``el2n_curve``, ``correct_curve`` (``[E, N]``), ``forgetting`` (``[N]``),
      ``train_loss`` (``[T, E]``) and, with ``save_features``, the GAP ``features``
      ``[N, F]`` of trial 0's network; feature indicators carry ``features``.
    """
    check_indicator(indicator)
    start = time.time()
    settings = resolve_settings(dataset.name, config)
    seed = int(_get(config, "seed", 0) or 0)
    model = classifier(dataset, config)
    labels = np.asarray(dataset.y_train, np.int32)
    ids = getattr(dataset, "ids", None)
    ids = np.arange(len(labels), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    num_classes = int(dataset.num_classes)
    # Fail fast on impossible K before any training.
    counts = np.bincount(labels, minlength=num_classes)
    if indicator == "density" and counts.min() <= settings["knn_k"]:
        raise ValueError(f"knn_k={settings['knn_k']} is too large for the smallest class "
                         f"({counts.min()} samples)")
    if indicator == "cluster" and counts.min() < settings["num_clusters"]:
        raise ValueError(f"num_clusters={settings['num_clusters']} is larger than the smallest "
                         f"class ({counts.min()} samples)")

    trials = None if indicator in LOSS_FAMILY else 1
    ts = train_settings(settings, trials)
    settings["trials"] = ts.trials  # feature indicators train trial 0 only
    need_features = indicator in FEATURE_FAMILY or bool(settings["save_features"])
    # the trials of a chunk split along the mesh's model axis (config.mesh; auto: all devices)
    mesh = parallel.mesh_from_config(config if config is not None else {}, prefer="model",
                                     max_size={"model": max(len(c) for c in ts.chunks())})
    stats = gloss.train_trials(model, dataset.x_train, labels, rng.substream(key, "utility.trials"), ts,
                               log=log, keep_first=need_features, checkpointer=checkpointer,
                               checkpoint_every=checkpoint_every, mesh=mesh)
    extras: dict[str, np.ndarray] = {}
    feats = None
    if need_features:
        feats = gfeat.gap_features(model, stats.variables, dataset.x_train)
        if settings["save_features"]:
            extras["features"] = feats
    curve = None
    if indicator in LOSS_FAMILY:
        curve = stats.loss_curve
        extras.update(el2n_curve=stats.el2n_curve, correct_curve=stats.correct_curve,
                      forgetting=stats.forgetting, train_loss=stats.train_loss)
        if indicator == "loss":
            scores = gloss.loss_scores(curve, settings["sigma"], settings["epoch"])
        elif indicator == "el2n":
            scores = gloss.el2n_scores(stats.el2n_curve, settings["el2n_epoch"])
        else:
            scores = gloss.forgetting_scores(stats.forgetting)
    elif indicator == "density":
        scores = gfeat.density_scores(feats, labels, num_classes, int(settings["knn_k"]))
    elif indicator == "cluster":
        scores = gfeat.cluster_scores(feats, labels, num_classes, int(settings["num_clusters"]),
                                      rng.substream(key, "utility.kmeans"), max_iter=int(settings["kmeans_iters"]))
    else:  # init_distance
        if init_indices is None:
            init_indices = gfeat.default_init_indices(rng.substream(key, "utility.init_images"), labels,
                                                      num_classes, int(settings["ipc"]))
        init_indices = np.asarray(init_indices, np.int64)
        extras["init_indices"] = init_indices
        scores = gfeat.init_distance_scores(feats, labels, num_classes, init_indices)
    model_cfg = _get(config, "model")
    if model_cfg is None:
        settings["model"] = {"name": "convnet"}  # ConvNetD3, width 128, instance norm
    else:
        settings["model"] = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    return Utility(scores, labels, ids, indicator, dataset.name, settings, seed,
                   time.time() - start, curve, extras)


def run(config: Any, workdir: str) -> dict:
    """Launcher body: load ``config.data``, compute ``config.indicator``, write artifacts.

    Writes into ``workdir``: ``config.json``, ``metrics.csv`` + TensorBoard events (one
    row per training epoch), ``checkpoints/`` (every ``config.checkpoint_every``
    trial-epochs), ``utility.npz`` + ``utility.json`` and ``result.json``
    (``indicator``, ``dataset``, ``num_samples``, ``seconds``, and for loss-family runs
    the final mean training loss / accuracy).

    Rerunning on the same workdir resumes from the newest checkpoint (same scores as an
    uninterrupted run); a finished workdir returns its stored result.

    Raises:
      ValueError: unknown indicator, or ``workdir`` holds a run with a different config.
    """
    from gold import config_utils

    start = time.time()
    check_indicator(config.indicator)
    workdir, finished = gwork.start_run(workdir, config, HARMLESS_FIELDS)
    if finished is not None:
        return finished
    ds = config_utils.load_data(config.data)
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR))
    resume_step = ckpt.latest_step() or 0
    if resume_step:
        print(f"resuming from the checkpoint at trial-epoch {resume_step}", flush=True)
    metrics = gwork.MetricsWriter(workdir, resume_step=resume_step)

    def log(step: int, scalars: dict) -> None:
        metrics.write(step, **{k: float(v) for k, v in scalars.items()})

    init_indices = None
    path = _get(config, "init_indices_path", "")
    if path:
        init_indices = load_indices(path)
    u = compute_utility(config.indicator, ds, config, jax.random.key(int(config.seed)),
                        init_indices=init_indices, log=log, checkpointer=ckpt,
                        checkpoint_every=int(_get(config, "checkpoint_every", 1) or 0))
    metrics.close()
    ckpt.close()
    npz = save_utility(os.path.join(workdir, "utility.npz"), u)
    result = {
        "indicator": u.indicator,
        "dataset": u.dataset,
        "num_samples": u.num_samples,
        "utility_path": npz,
        "score_min": float(u.scores.min()),
        "score_max": float(u.scores.max()),
        "compute_seconds": float(u.seconds),
        "seconds": time.time() - start,
    }
    if "train_loss" in u.extras:
        result["final_train_loss"] = float(np.mean(u.extras["train_loss"][:, -1]))
        result["final_train_accuracy"] = 100.0 * float(np.mean(u.extras["correct_curve"][-1]))
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    return result


def load_indices(path: str) -> np.ndarray:
    """int64 index array from ``.npy``, ``.npz`` (array ``indices`` or the first one),
    ``.json`` (a flat list) or text (whitespace-separated)."""
    if path.endswith(".npy"):
        return np.load(path).astype(np.int64)
    if path.endswith(".npz"):
        with np.load(path) as f:
            return np.asarray(f["indices"] if "indices" in f.files else f[f.files[0]], np.int64)
    if path.endswith(".json"):
        return np.asarray(gwork.read_json(path), np.int64)
    return np.loadtxt(path, dtype=np.int64).reshape(-1)


__all__ = ["classifier", "check_indicator", "compute_utility", "load_indices",
           "resolve_settings", "run", "scores_from_record", "train_settings"]
