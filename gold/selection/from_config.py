"""``select_from_config``: the selection stage of every launcher.

Config fields (``config.selection``):

* ``indicator``: ``none`` (keep everything) | ``random`` | a utility indicator (``loss``,
  ``el2n``, ``forgetting``, ``density``, ``cluster``, ``init_distance``) |
  ``monte_carlo`` (file only) | ``file`` (any score file) | a coreset baseline
  (``craig``, ``gradmatch``, ``glister``, ``herding``, ``kmeans``;
  :mod:`gold.selection.coreset`, scores for the budget of ``ratio``, cached as
  ``utility_<method>_<ratio>.npz``);
* ``ratio``: kept fraction per class, in (0, 1]; 1 keeps everything (unless a stratum is
  asked for); below 1 it needs an indicator other than ``none`` (an error otherwise, never
  a silent full-data run). Each class keeps ``max(round(ratio * n_c), min_per_class)``:
  when ``min_per_class`` (the IPC of a real initialisation) is the larger, the run keeps
  more than asked and a warning says so (:func:`selection_summary` gives the effective
  ratio for ``result.json``);
* ``utility_path``: a saved ``utility.npz`` (or an official GoldFromOres ``.json``; then
  ``criterion`` such as ``'LossConverge_large'`` or ``keep='small'|'large'`` gives its
  polarity, see :mod:`gold.selection.scores`);
* ``stratum`` / ``num_strata``: stratified analysis (stratum 1 = lowest utility; 0/None =
  off; ``num_strata`` defaults to 10);
* optional ``policy``: ``greedy`` (default) | ``greedy_diverse`` (needs features: the
  ``features`` extra that loss-family utilities save by default), and ``num_clusters``;
* optional ``utility``: settings for computing the indicator on the fly (fields of
  ``configs/utility.py``: trials, epochs, lr, ...); absent = the paper's defaults for the
  dataset, which are slow on a CPU (MNIST: 50 trials x 50 epochs).

Without ``utility_path`` the indicator is computed on the fly and, when ``workdir`` is
given, cached as ``<workdir>/utility_<indicator>.npz`` (reused when present and matching
the dataset; a cached loss / el2n / forgetting run also serves the other two, they come
from the same training curves).

Keys (``gold.rng`` sub-streams): ``selection.policy`` for the policy,
``selection.indicator`` for an on-the-fly indicator, ``selection.random_scores``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np

from gold import rng
from gold.selection.coreset import METHODS as CORESET_METHODS
from gold.selection.coreset import coreset_utility
from gold.selection.policies import keep_count, select
from gold.selection.scores import load_scores
from gold.utility import Utility, check_utility, compute_utility, load_utility, save_utility
from gold.utility.defaults import INDICATORS, LOSS_FAMILY
from gold.utility.pipeline import scores_from_record

SELECTION_INDICATORS: tuple[str, ...] = ("none", "random", *INDICATORS, "monte_carlo", "file",
                                          *CORESET_METHODS)

_LOG = logging.getLogger(__name__)


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value is None else value


def selection_utility(selection_cfg: Any, dataset: Any, key: jax.Array, *,
                      workdir: Optional[str] = None) -> Utility:
    """The utility a selection config refers to: loaded from ``utility_path`` (checked
    against ``dataset``), read from the workdir cache, or computed and cached."""
    indicator = _get(selection_cfg, "indicator", "none")
    labels = np.asarray(dataset.y_train)
    path = _get(selection_cfg, "utility_path", "")
    if path:
        u = load_scores(path, dataset_name=dataset.name, labels=labels,
                        criterion=_get(selection_cfg, "criterion") or None,
                        keep=_get(selection_cfg, "keep") or None)
        if indicator in ("file", u.indicator) or u.indicator == "file":
            return u
        if indicator in LOSS_FAMILY and u.indicator in LOSS_FAMILY and u.curve is not None:
            return scores_from_record(indicator, u)
        raise ValueError(f"selection.indicator is {indicator!r} but {path} holds "
                         f"{u.indicator!r} scores")
    if indicator == "file":
        raise ValueError("selection.indicator='file' needs selection.utility_path")
    if indicator == "monte_carlo":
        raise ValueError("the monte_carlo indicator cannot be computed on the fly; run the "
                         "Monte-Carlo experiment and pass its utility.npz as selection.utility_path")
    if indicator in CORESET_METHODS:  # coreset baselines: scores depend on the budget
        ratio = float(_get(selection_cfg, "ratio", 1.0))
        cache = os.path.join(workdir, f"utility_{indicator}_{ratio:g}.npz") if workdir else None
        if cache and os.path.exists(cache):
            u = load_utility(cache)
            check_utility(u, dataset.name, labels, source=cache)
            return u
        u = coreset_utility(indicator, dataset, _get(selection_cfg, "utility"),
                            rng.substream(key, "selection.indicator"), ratio=ratio)
        if cache:
            save_utility(cache, u)
        return u
    cache = os.path.join(workdir, f"utility_{indicator}.npz") if workdir else None
    if cache and os.path.exists(cache):
        u = load_utility(cache)
        check_utility(u, dataset.name, labels, source=cache)
        if u.indicator == indicator:
            return u
    if workdir and indicator in LOSS_FAMILY:  # another loss-family run has the curves
        for other in LOSS_FAMILY:
            path_o = os.path.join(workdir, f"utility_{other}.npz")
            if other != indicator and os.path.exists(path_o):
                u = load_utility(path_o)
                check_utility(u, dataset.name, labels, source=path_o)
                if u.curve is not None and "el2n_curve" in u.extras:
                    return scores_from_record(indicator, u)
    u = compute_utility(indicator, dataset, _get(selection_cfg, "utility"),
                        rng.substream(key, "selection.indicator"))
    if cache:
        save_utility(cache, u)
    return u


def effective_ratio(kept: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of the training set a selection keeps: ``len(kept) / N``.

    Args:
      kept: int ``[M]`` indices of the kept samples; labels: int ``[N]`` training labels.
    """
    return len(kept) / max(len(labels), 1)


def selection_summary(kept: np.ndarray, labels: np.ndarray, num_classes: int,
                      ratio: float) -> dict:
    """JSON-able facts of a class-wise selection (for ``result.json``).

    Returns:
      ``requested_ratio`` (``ratio``), ``effective_ratio`` (:func:`effective_ratio`),
      ``num_kept``, ``kept_per_class`` (list of K counts) and ``raised_classes``: the
      number of classes that keep more than ``round(ratio * n_c)`` (``min_per_class``,
      e.g. the IPC, asked for more).
    """
    labels = np.asarray(labels)
    per_class = np.bincount(labels[np.asarray(kept, np.int64)], minlength=num_classes)
    sizes = np.bincount(labels, minlength=num_classes)
    asked = np.array([keep_count(int(n), ratio, 0) if n else 0 for n in sizes])
    return {"requested_ratio": float(ratio), "effective_ratio": effective_ratio(kept, labels),
            "num_kept": int(len(kept)), "kept_per_class": [int(c) for c in per_class],
            "raised_classes": int(np.sum(per_class > asked))}


def _warn_if_raised(summary: dict, num_classes: int, min_per_class: int) -> None:
    """One warning line when ``min_per_class`` made the selection keep more than asked."""
    if summary["raised_classes"]:
        _LOG.warning(
            "selection.ratio=%g keeps more than asked: min_per_class=%d (the IPC) raises %d of "
            "%d classes, so %d samples are kept, an effective ratio of %.4g",
            summary["requested_ratio"], min_per_class, summary["raised_classes"], num_classes,
            summary["num_kept"], summary["effective_ratio"])


def select_from_config(selection_cfg: Any, dataset: Any, key: jax.Array, *,
                       min_per_class: int, workdir: Optional[str] = None) -> np.ndarray:
    """Sorted int64 indices of the training samples the run may use.

    Args:
      selection_cfg: ``config.selection`` (see module docstring).
      dataset: :class:`gold.data.Dataset` (``name, y_train, num_classes``, and
        ``x_train`` when an indicator is computed on the fly).
      key: PRNG key of the selection.
      min_per_class: never keep fewer per class (IPC for real initialisation).
      workdir: cache folder for an on-the-fly indicator.

    Logs a warning when ``min_per_class`` makes a class keep more than ``ratio`` asks.

    Raises:
      ValueError: unknown indicator, ratio outside (0, 1], ratio < 1 without an
        indicator, impossible request (see
        :func:`gold.selection.select`), a score file of another dataset.
    """
    indicator = _get(selection_cfg, "indicator", "none")
    if indicator not in SELECTION_INDICATORS:
        raise ValueError(f"unknown selection indicator {indicator!r}; valid: "
                         f"{', '.join(SELECTION_INDICATORS)}")
    ratio = float(_get(selection_cfg, "ratio", 1.0))
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"selection.ratio must be in (0, 1], got {ratio}")
    stratum = int(_get(selection_cfg, "stratum", 0) or 0)
    num_strata = int(_get(selection_cfg, "num_strata", 10) or 10)
    labels = np.asarray(dataset.y_train)
    n, num_classes = len(labels), int(dataset.num_classes)
    if indicator == "none":
        if stratum:
            raise ValueError("selection.stratum needs an indicator (got 'none')")
        if ratio < 1.0:
            raise ValueError(
                f"selection.ratio={ratio:g} with selection.indicator='none' would select nothing: "
                "set selection.indicator to 'random' or a utility indicator (e.g. 'loss', 'el2n', "
                f"'forgetting'; valid: {', '.join(SELECTION_INDICATORS[1:])}), or ratio=1 for the "
                "full data")
        return np.arange(n, dtype=np.int64)
    if ratio == 1.0 and not stratum:
        return np.arange(n, dtype=np.int64)
    k_policy = rng.substream(key, "selection.policy")
    if indicator == "random":
        if stratum:  # random strata: the paper's "Random" row of Table 12
            scores = np.asarray(jax.random.uniform(rng.substream(key, "selection.random_scores"), (n,)))
            return select(None, labels, num_classes, policy="stratify", scores=scores,
                          stratum=stratum, num_strata=num_strata, min_per_class=min_per_class)
        kept = select(k_policy, labels, num_classes, policy="random", ratio=ratio,
                      min_per_class=min_per_class)
        _warn_if_raised(selection_summary(kept, labels, num_classes, ratio), num_classes, min_per_class)
        return kept
    u = selection_utility(selection_cfg, dataset, key, workdir=workdir)
    if stratum:
        return select(None, labels, num_classes, policy="stratify", scores=u.scores,
                      stratum=stratum, num_strata=num_strata, min_per_class=min_per_class)
    policy = _get(selection_cfg, "policy", "greedy")
    if policy not in ("greedy", "greedy_diverse"):
        raise ValueError(f"selection.policy must be 'greedy' or 'greedy_diverse', got {policy!r}")
    features = u.extras.get("features")
    if policy == "greedy_diverse" and features is None:
        raise ValueError("selection.policy='greedy_diverse' needs features: use a utility "
                         "computed with save_features=True")
    kept = select(k_policy, labels, num_classes, policy=policy, ratio=ratio, scores=u.scores,
                  min_per_class=min_per_class, features=features,
                  num_clusters=int(_get(selection_cfg, "num_clusters", 0)))
    _warn_if_raised(selection_summary(kept, labels, num_classes, ratio), num_classes, min_per_class)
    return kept


__all__ = ["SELECTION_INDICATORS", "effective_ratio", "select_from_config", "selection_summary",
           "selection_utility"]
