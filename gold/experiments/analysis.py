"""Utility resolution and subset measures shared by the sweep and the stratification.

* :func:`experiment_utility`: compute (or load) the utility an experiment selects with
  ONCE, save it under ``<workdir>/utility/`` and return its path, so every point of
  the experiment reuses the same file instead of recomputing it.
* :func:`analysis_features` and :func:`subset_measures`: the diversity (intra / inter
  class variance, paper Fig. 6) and outlier count (Fig. 8) of the samples a point
  kept, using ``gold.utility.diversity`` on GAP features of a trained classifier.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np

from gold import rng
from gold import selection as gsel
from gold.selection import coreset as gcore
from gold.utility import Utility, count_outliers, diversity, load_utility, outlier_mask, save_utility

UTILITY_DIR = "utility"
FEATURE_MODES: tuple[str, ...] = ("auto", "utility", "none")


def selection_key(seed: int) -> jax.Array:
    """The key ``gold.distill.loop`` gives the selection stage of a run with ``seed``
    (``gold.rng``'s ``selection`` stream): a utility computed here equals the one a
    single distillation run with the same seed would compute on the fly."""
    return rng.seed_stream(seed, "selection")


def min_per_class(config: Any) -> int:
    """Samples a class must keep: IPC with real init, else 1 (``loop.select_real``)."""
    return int(config.ipc) if config.get("init", "noise") == "real" else 1


def experiment_utility(config: Any, dataset: Any, workdir: str, *, max_ratio: float = 1.0,
                       log: Callable[[str], None] = print) -> tuple[Optional[Utility], Callable[[float], str]]:
    """The utility of ``config.selection`` and, per ratio, the file a point should use.

    Args:
      config: experiment config (``selection.indicator``, ``selection.utility_path``,
        ``selection.utility`` settings, ``seed``, ``ipc``, ``init``).
      dataset: the loaded :class:`gold.data.Dataset`.
      workdir: experiment folder; files go to ``<workdir>/utility/``.
      max_ratio: the largest kept ratio the experiment asks for (nested coreset orders
        are computed up to it).

    Returns:
      (utility or None for ``random``, ``path_for(ratio) -> utility_path`` ('' for random)).

    Raises:
      ValueError: ``indicator='none'`` (nothing to select with), unknown indicator.
    """
    sel = config.selection
    indicator = str(sel.indicator)
    if indicator not in gsel.SELECTION_INDICATORS:
        raise ValueError(f"unknown selection indicator {indicator!r}; valid: "
                         f"{', '.join(gsel.SELECTION_INDICATORS)}")
    if indicator == "none":
        raise ValueError("this experiment needs a selection policy: set selection.indicator to "
                         "'random' or a utility indicator (e.g. 'loss')")
    if indicator == "random":
        return None, lambda ratio: ""
    udir = os.path.join(workdir, UTILITY_DIR)
    os.makedirs(udir, exist_ok=True)
    key = selection_key(config.seed)
    mpc = min_per_class(config)
    if indicator in gcore.METHODS and not sel.get("utility_path", ""):
        inputs_path = os.path.join(udir, "classifier_outputs.npz")
        if os.path.exists(inputs_path):
            with np.load(inputs_path) as f:
                inputs = gcore.CoresetInputs(*(f[k] for k in gcore.CoresetInputs._fields))
        else:
            log(f"training the classifier for the {indicator} coreset ...")
            inputs = gcore.train_classifier_outputs(dataset, sel.get("utility"),
                                                     rng.substream(key, "selection.policy"))
            np.savez(inputs_path, **inputs._asdict())

        def coreset_path(ratio: float) -> str:
            r = ratio if indicator not in gcore.NESTED else max_ratio
            path = os.path.join(udir, f"utility_{indicator}_{r:g}.npz")
            if not os.path.exists(path):
                u = gcore.coreset_utility(indicator, dataset, sel.get("utility"), key, ratio=r,
                                          min_per_class=mpc, inputs=inputs)
                save_utility(path, u)
            return path

        first = coreset_path(max_ratio)
        return load_utility(first), coreset_path
    cfg = sel
    u = gsel.selection_utility(cfg, dataset, key, workdir=udir)
    path = sel.get("utility_path", "") or os.path.join(udir, f"utility_{indicator}.npz")
    if not os.path.exists(path):
        save_utility(path, u)
    return u, lambda ratio: path


def analysis_features(config: Any, dataset: Any, utility: Optional[Utility], workdir: str,
                      mode: str = "auto", log: Callable[[str], None] = print) -> Optional[np.ndarray]:
    """GAP features ``[N, F]`` for diversity / outliers, or None.

    ``mode``: ``auto`` = the utility's saved ``features`` (loss-family utilities save
    those of their first trial's network), else train one classifier with the
    ``selection.utility`` settings (cached in ``<workdir>/utility/features.npy``);
    ``utility`` = only the utility's features; ``none`` = skip.
    """
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown analysis.features {mode!r}; valid: {', '.join(FEATURE_MODES)}")
    if mode == "none":
        return None
    if utility is not None and "features" in utility.extras:
        return np.asarray(utility.extras["features"], np.float32)
    if mode == "utility":
        return None
    path = os.path.join(workdir, UTILITY_DIR, "features.npy")
    if os.path.exists(path):
        return np.load(path)
    from gold.utility import gap_features
    from gold.utility import pipeline as upipe
    from gold.utility.loss import train_trials

    log("training one classifier for the diversity / outlier features ...")
    cfg = config.selection.get("utility")
    settings = upipe.resolve_settings(dataset.name, cfg)
    model = upipe.classifier(dataset, cfg)
    key = rng.substream(selection_key(config.seed), "selection.features")
    stats = train_trials(model, dataset.x_train, np.asarray(dataset.y_train, np.int32), key,
                         upipe.train_settings(settings, trials=1), log=None, keep_first=True)
    feats = gap_features(model, stats.variables, dataset.x_train)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, feats)
    return feats


def subset_measures(features: Optional[np.ndarray], labels: np.ndarray, num_classes: int,
                    indices: Optional[np.ndarray], outliers: Optional[np.ndarray]) -> dict:
    """``diversity``, ``intra``, ``inter`` (``gold.utility.diversity``) and ``outliers``
    (members flagged by the full-data ``outlier_mask``) of a kept subset; None values
    when features or indices are missing or the subset has a single class."""
    out = {"diversity": None, "intra": None, "inter": None, "outliers": None}
    if features is None or indices is None:
        return out
    try:
        d = diversity(features, labels, indices)
        out.update(diversity=d.diversity, intra=d.intra, inter=d.inter)
    except ValueError:
        pass
    if outliers is not None:
        out["outliers"] = count_outliers(outliers, indices)
    return out


def full_outliers(features: Optional[np.ndarray], labels: np.ndarray, num_classes: int,
                  num_std: float = 2.0) -> Optional[np.ndarray]:
    """Full-data outlier mask (``gold.utility.outlier_mask``) or None without features."""
    return None if features is None else outlier_mask(features, labels, num_classes, num_std)


__all__ = ["FEATURE_MODES", "UTILITY_DIR", "analysis_features", "experiment_utility",
           "full_outliers", "min_per_class", "selection_key", "subset_measures"]
