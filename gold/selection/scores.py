"""Per-sample scores from a file: our ``utility.npz`` or the official GoldFromOres JSON.

Official format (public repository ``silicx/GoldFromOres-BiLP``, ``drop_utils/drop.py`` and
``drop_utils/resource/*.json``): one JSON file per dataset and indicator, named
``{DATASET}_{Indicator}.json`` (e.g. ``MNIST_LossConverge.json``,
``CIFAR10_LossInit.json``, ``CIFAR100_MonteCarlo.json``), holding a flat JSON list of N
floats in the dataset's official train order (e.g. the converged loss of each sample).
The polarity is NOT in the file: it is the suffix of the official ``drop_criterion``
string ``{Indicator}_{large|small}``, and it names the values that are DROPPED
(README: "LossConverge_large: Drop samples with large loss value after convergence";
the code negates the values for ``large`` and drops the left end of the ascending sort).
Their recommended criteria are ``LossConverge_large``, ``LossInit_large`` and
``MonteCarlo_small``.

So here, for a JSON list of values ``v``:

* criterion / file-name suffix ``_large`` (drop large, keep small): utility = ``-v``;
* criterion / file-name suffix ``_small`` (drop small, keep large): utility = ``+v``;
* or say it directly with ``keep='small'`` (utility ``-v``) / ``keep='large'`` (``+v``).

A JSON file without any polarity is refused (the sign decides everything).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from gold.utility.artifact import EXPECTED, Utility, UtilityFileError, check_utility, load_utility

# Dataset prefixes used by the official JSON file names -> our dataset names.
_OFFICIAL_NAMES = {"mnist": "mnist", "cifar10": "cifar10", "cifar100": "cifar100",
                   "svhn": "svhn", "tinyimagenet": "tinyimagenet"}


def json_polarity(path: str, criterion: Optional[str] = None, keep: Optional[str] = None) -> float:
    """Sign ``+1`` / ``-1`` such that utility = sign * value for an official JSON file.

    Args:
      path: the JSON file (its stem may end in ``_large`` / ``_small``).
      criterion: official drop criterion, e.g. ``'LossConverge_large'`` (suffix = what is
        dropped).
      keep: ``'small'`` or ``'large'``: which values to keep (overrides the others).

    Raises:
      ValueError: no polarity given, or an unknown one.
    """
    if keep is not None:
        if keep not in ("small", "large"):
            raise ValueError(f"keep must be 'small' or 'large', got {keep!r}")
        return -1.0 if keep == "small" else 1.0
    for source in (criterion, os.path.splitext(os.path.basename(path))[0]):
        if source:
            suffix = source.rsplit("_", 1)[-1].lower()
            if suffix == "large":
                return -1.0  # drop large values -> keep small -> utility = -value
            if suffix == "small":
                return 1.0
            if source is criterion:
                raise ValueError(f"drop criterion {criterion!r} must end in _large or _small")
    raise ValueError(
        f"{path}: the polarity of an official score file is not in the file; pass the official "
        "drop criterion (e.g. 'LossConverge_large' = drop large values) or keep='small'/'large'")


def load_json_scores(path: str, *, criterion: Optional[str] = None,
                     keep: Optional[str] = None) -> tuple[np.ndarray, str]:
    """Utility float32 ``[N]`` from an official flat-list JSON file, and the dataset its
    name announces (``''`` if none)."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UtilityFileError(f"{path}: not valid JSON ({type(e).__name__}: {e}); expected "
                               f"{EXPECTED}") from e
    if isinstance(values, dict) and "scores" in values:
        values = values["scores"]
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) or v is None for v in values):
        raise UtilityFileError(f"{path}: expected a flat JSON list of per-sample numbers")
    arr = np.asarray([np.nan if v is None else v for v in values], np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: {int(np.sum(~np.isfinite(arr)))} NaN/inf/null scores")
    sign = json_polarity(path, criterion, keep)
    prefix = os.path.basename(path).split("_", 1)[0].lower()
    return (sign * arr).astype(np.float32), _OFFICIAL_NAMES.get(prefix, "")


def load_scores(path: str, *, dataset_name: str = "", labels: Optional[np.ndarray] = None,
                criterion: Optional[str] = None, keep: Optional[str] = None) -> Utility:
    """Load per-sample utility from ``path`` and check it belongs to this dataset.

    Args:
      path: ``utility.npz`` (or its directory) written by :func:`gold.utility.save_utility`,
        or an official GoldFromOres ``.json`` list (see module docstring for polarity).
      dataset_name: the dataset the scores will be applied to.
      labels: int ``[N]`` its training labels (length and order checks).
      criterion, keep: polarity of a JSON file.

    Returns:
      :class:`gold.utility.Utility` (indicator ``'file'`` for JSON imports).

    Raises:
      ValueError: wrong length, another dataset, another label order, NaN scores, missing
        polarity. FileNotFoundError: no such file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no score file at {path}")
    if path.endswith(".json"):
        scores, announced = load_json_scores(path, criterion=criterion, keep=keep)
        n = len(scores)
        if announced and dataset_name and announced != dataset_name.lower():
            raise ValueError(
                f"{path} holds {announced} scores (official train order); they cannot be "
                f"applied to dataset {dataset_name!r}")
        u = Utility(scores, np.full(n, -1, np.int32), np.arange(n, dtype=np.int64), "file",
                    announced, {"source": os.path.abspath(path), "criterion": criterion,
                                "keep": keep})
    else:
        u = load_utility(path)
    if labels is not None:
        check_utility(u, dataset_name, labels, source=path)
    return u


__all__ = ["json_polarity", "load_json_scores", "load_scores"]
