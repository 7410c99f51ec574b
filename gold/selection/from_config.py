"""``select_from_config``: the selection stage of every launcher (DESIGN.md CLI contract).

Config fields (``config.selection``):

* ``indicator``: ``none`` (keep everything) | ``random`` | a utility indicator (``loss``,
  ``el2n``, ``forgetting``, ``density``, ``cluster``, ``init_distance``) |
  ``monte_carlo`` (file only) | ``file`` (any score file) | a coreset baseline
  (``craig``, ``gradmatch``, ``glister``, ``herding``, ``kmeans``;
  :mod:`gold.selection.coreset`, scores for the budget of ``ratio``, cached as
  ``utility_<method>_<ratio>.npz``);
* ``ratio``: kept fraction per class, in (0, 1]; 1 keeps everything (unless a stratum is
  asked for);
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

Keys: the policy uses ``fold_in(key, 0)``; an on-the-fly indicator ``fold_in(key, 1)``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np

from gold.selection.coreset import METHODS as CORESET_METHODS
from gold.selection.coreset import coreset_utility
from gold.selection.policies import select
from gold.selection.scores import load_scores
from gold.utility import Utility, check_utility, compute_utility, load_utility, save_utility
from gold.utility.defaults import INDICATORS, LOSS_FAMILY
from gold.utility.pipeline import scores_from_record

SELECTION_INDICATORS: tuple[str, ...] = ("none", "random", *INDICATORS, "monte_carlo", "file",
                                          *CORESET_METHODS)


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
                            jax.random.fold_in(key, 1), ratio=ratio)
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
    u = compute_utility(indicator, dataset, _get(selection_cfg, "utility"), jax.random.fold_in(key, 1))
    if cache:
        save_utility(cache, u)
    return u


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

    Raises:
      ValueError: unknown indicator, ratio outside (0, 1], impossible request (see
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
        return np.arange(n, dtype=np.int64)
    if ratio == 1.0 and not stratum:
        return np.arange(n, dtype=np.int64)
    k_policy = jax.random.fold_in(key, 0)
    if indicator == "random":
        if stratum:  # random strata: the paper's "Random" row of Table 12
            scores = np.asarray(jax.random.uniform(jax.random.fold_in(key, 2), (n,)))
            return select(None, labels, num_classes, policy="stratify", scores=scores,
                          stratum=stratum, num_strata=num_strata, min_per_class=min_per_class)
        return select(k_policy, labels, num_classes, policy="random", ratio=ratio,
                      min_per_class=min_per_class)
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
    return select(k_policy, labels, num_classes, policy=policy, ratio=ratio, scores=u.scores,
                  min_per_class=min_per_class, features=features,
                  num_clusters=int(_get(selection_cfg, "num_clusters", 0)))


__all__ = ["SELECTION_INDICATORS", "select_from_config", "selection_utility"]
