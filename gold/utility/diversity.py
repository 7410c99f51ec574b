"""Population-level measures of a subset (paper 4.4 / supp. 9, Fig. 6 and 8).

The paper measures "diversity" as "the quotient of intraclass variance and interclass
variance" (larger = more diverse) and counts "outliers" without defining them. The
precise definitions used here, on features ``f`` (e.g. GAP features of the trained
classifier, :func:`gold.utility.features.gap_features`):

* **intra-class variance** of a subset ``S``: the mean over classes present in ``S`` of
  ``mean_{i in S_c} ||f_i - mu_c||^2``, with ``mu_c`` the centroid of ``S_c``
  (total variance: summed over feature dimensions);
* **inter-class variance**: ``mean_c ||mu_c - mu||^2`` with ``mu`` the mean of the class
  centroids (classes weighted equally, so class imbalance of ``S`` does not matter);
* **diversity** = intra / inter (dimensionless; invariant to scaling the features).
  Needs at least two classes with samples.
* **outliers**: a sample is an outlier when its distance to its class centroid exceeds
  ``mean + num_std * std`` of the distances in its class, all computed on the FULL
  dataset (default ``num_std = 2``). The reference (centroids and thresholds) is fixed
  once, so the count of a subset is the number of its members flagged in the full data
  and shrinks monotonically as samples are pruned (Fig. 8 plots it against the kept
  ratio).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


class DiversityStats(NamedTuple):
    """``intra`` and ``inter`` class variance and ``diversity = intra / inter``."""

    intra: float
    inter: float
    diversity: float


def _subset(features: np.ndarray, labels: np.ndarray, indices: Optional[np.ndarray]):
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if indices is not None:
        idx = np.asarray(indices, np.int64)
        f, y = f[idx], y[idx]
    return f, y


def diversity(features: np.ndarray, labels: np.ndarray,
              indices: Optional[np.ndarray] = None) -> DiversityStats:
    """Intra-/inter-class variance and their quotient for the subset ``indices``.

    Args:
      features: float ``[N, F]``; labels: int ``[N]``.
      indices: int ``[M]`` subset (None = all samples).

    Raises:
      ValueError: fewer than two classes present in the subset.
    """
    f, y = _subset(features, labels, indices)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"diversity needs samples of at least two classes, got {len(classes)}")
    cents, intra = [], []
    for c in classes:
        fc = f[y == c]
        mu = fc.mean(0)
        cents.append(mu)
        intra.append(np.mean(np.sum((fc - mu) ** 2, -1)))
    cents = np.stack(cents)
    inter = float(np.mean(np.sum((cents - cents.mean(0)) ** 2, -1)))
    intra_v = float(np.mean(intra))
    return DiversityStats(intra_v, inter, intra_v / inter if inter > 0 else float("inf"))


def outlier_mask(features: np.ndarray, labels: np.ndarray, num_classes: int,
                 num_std: float = 2.0) -> np.ndarray:
    """bool ``[N]``: distance to the class centroid > mean + ``num_std`` * std of the
    class's distances (full-dataset reference)."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    out = np.zeros(len(y), bool)
    for c in range(num_classes):
        m = y == c
        if not m.any():
            continue
        d = np.linalg.norm(f[m] - f[m].mean(0), axis=-1)
        out[m] = d > d.mean() + num_std * d.std()
    return out


def count_outliers(mask: np.ndarray, indices: Optional[np.ndarray] = None) -> int:
    """Number of outliers (``outlier_mask`` True) among ``indices`` (None = all)."""
    mask = np.asarray(mask, bool)
    return int(mask.sum() if indices is None else mask[np.asarray(indices, np.int64)].sum())


__all__ = ["DiversityStats", "count_outliers", "diversity", "outlier_mask"]
