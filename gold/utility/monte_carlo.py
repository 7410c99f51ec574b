"""Monte-Carlo utility estimator, pure NumPy part (paper 4.2 b, Eq. 3, supplementary 7).

K random subsets ``X_k`` of size M are drawn from the N training samples, each is
distilled and evaluated, giving a score ``s_k`` (test accuracy). The utility of sample
``i`` is the mean score of the trials that contained it::

    u~(x_i) = (1 / T_i) * sum_{k : i in X_k} s_k,      T_i = #{k : i in X_k}.

Samples never drawn (``T_i = 0``) get the global mean of all scores, i.e. the
estimator's prior: "no evidence" ranks a sample in the middle, not at the top or the
bottom. Their visit count 0 is saved alongside so callers can tell them apart.

Under the additive (mean-field) model ``s_k = sum_{j in X_k} u_j + noise``, Eq. 3 says
``u~(x_i) -> (N - M) / (N - 1) * u_i + (M - 1) N / (N - 1) * mean(u)`` as ``T_i -> inf``:
linear in the planted utility with a positive slope (:func:`eq3_expectation`).

Convergence (:func:`split_half_convergence`): the K trials are split into two disjoint
halves; for growing k the scores from the first k trials of each half are compared by
Spearman rank correlation over the samples visited in both. A converged indicator gives
correlation -> 1; the expected number of visits per sample is ``M k / N``.

This module draws subsets and turns (subsets, scores) into utilities; the distillation
driver that produces the scores lives in :mod:`gold.utility.monte_carlo`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import stats


def subset_size(num_samples: int, ratio: float, num_classes: int, *, balanced: bool,
                ipc: int = 1) -> int:
    """Subset size M for a kept fraction ``ratio`` of ``num_samples``.

    ``M = round(ratio * N)``, at least ``ipc * num_classes`` (a distillation needs IPC
    real images of every class when it initialises from real data) and, for balanced
    subsets, a multiple of ``num_classes``.

    Raises:
      ValueError: ratio outside (0, 1), or M >= N (nothing left to vary).
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"Monte-Carlo subset ratio M/N must lie in (0, 1), got {ratio}")
    m = max(int(round(ratio * num_samples)), ipc * num_classes)
    if balanced:
        m = max(num_classes, (m // num_classes) * num_classes)
    if m >= num_samples:
        raise ValueError(f"subset size M={m} must be smaller than N={num_samples}")
    return m


def draw_subsets(
    rng: np.random.Generator,
    labels: np.ndarray,
    num_classes: int,
    num_trials: int,
    size: int,
    *,
    balanced: bool = False,
    min_per_class: int = 0,
) -> np.ndarray:
    """K random subsets of the training set as sorted index rows.

    Args:
      rng: NumPy generator (the caller derives it from the run seed).
      labels: int ``[N]`` class labels.
      num_classes: C.
      num_trials: K subsets.
      size: M samples per subset.
      balanced: False (paper): uniform draws of M out of N without replacement;
        True: ``M / C`` per class.
      min_per_class: uniform draws are re-drawn (rejection) until every class has at
        least this many samples (1 for DC with real init; 0 = no constraint).

    Returns:
      int32 ``[K, M]``, each row sorted ascending, no repeats within a row.

    Raises:
      ValueError: bad sizes, a class too small for a balanced draw, or a
        ``min_per_class`` that uniform draws practically never meet.
    """
    labels = np.asarray(labels).astype(np.int64)
    n = labels.shape[0]
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    if not 0 < size < n:
        raise ValueError(f"subset size must lie in (0, N={n}), got {size}")
    out = np.empty((num_trials, size), np.int32)
    if balanced:
        if size % num_classes:
            raise ValueError(f"balanced subsets need M divisible by C={num_classes}, got {size}")
        per = size // num_classes
        pools = [np.flatnonzero(labels == c) for c in range(num_classes)]
        small = [c for c, p in enumerate(pools) if len(p) < per]
        if small:
            raise ValueError(f"classes {small} have fewer than {per} samples for a balanced draw")
        for k in range(num_trials):
            rows = [rng.choice(p, per, replace=False) for p in pools]
            out[k] = np.sort(np.concatenate(rows))
        return out
    for k in range(num_trials):
        for _ in range(1000):
            row = rng.choice(n, size, replace=False)
            if min_per_class <= 0 or np.all(
                np.bincount(labels[row], minlength=num_classes) >= min_per_class
            ):
                break
        else:
            raise ValueError(
                f"uniform subsets of size {size} almost never hold {min_per_class} sample(s) "
                f"of each of the {num_classes} classes: raise the ratio or use balanced=True")
        out[k] = np.sort(row)
    return out


def visit_counts(subsets: np.ndarray, num_samples: int) -> np.ndarray:
    """T_i: how many subsets contain sample i, int64 ``[N]``."""
    return np.bincount(np.asarray(subsets).reshape(-1), minlength=num_samples).astype(np.int64)


def mc_scores(
    subsets: np.ndarray, trial_scores: np.ndarray, num_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo utility of every sample (Eq. 3).

    Args:
      subsets: int ``[K, M]`` sample indices per trial (no repeats within a row).
      trial_scores: float ``[K]`` score of each trial (accuracy, any unit).
      num_samples: N.

    Returns:
      (scores float64 ``[N]``: mean trial score over the trials containing the sample,
      the global mean ``mean(trial_scores)`` for samples never drawn;
      counts int64 ``[N]``: T_i).

    Raises:
      ValueError: mismatched shapes, an index out of range, non-finite scores.
    """
    subsets = np.asarray(subsets)
    s = np.asarray(trial_scores, np.float64)
    if subsets.ndim != 2 or s.shape != (subsets.shape[0],):
        raise ValueError(f"subsets must be [K, M] and scores [K]; got {subsets.shape} and {s.shape}")
    if subsets.size and (subsets.min() < 0 or subsets.max() >= num_samples):
        raise ValueError(f"subset indices must lie in [0, {num_samples})")
    if not np.all(np.isfinite(s)):
        raise ValueError("trial scores must be finite")
    counts = visit_counts(subsets, num_samples)
    sums = np.bincount(subsets.reshape(-1), weights=np.repeat(s, subsets.shape[1]),
                       minlength=num_samples)
    prior = float(s.mean()) if s.size else 0.0
    scores = np.where(counts > 0, sums / np.maximum(counts, 1), prior)
    return scores, counts


def eq3_expectation(u: np.ndarray, subset_size: int) -> np.ndarray:
    """Limit of the estimator under ``s = sum of u over the subset`` (Eq. 3 / Eq. 5).

    ``(N - M) / (N - 1) * u_i + (M - 1) * N / (N - 1) * mean(u)``, float64 ``[N]``.
    """
    u = np.asarray(u, np.float64)
    n, m = u.shape[0], int(subset_size)
    return (n - m) / (n - 1) * u + (m - 1) * n / (n - 1) * u.mean()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equal-length vectors (NaN if either is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def split_half_convergence(
    subsets: np.ndarray,
    trial_scores: np.ndarray,
    num_samples: int,
    trial_counts: Optional[Sequence[int]] = None,
) -> list[dict]:
    """Rank agreement of two independent estimates as a function of trials per half.

    Trials ``[0, K/2)`` and ``[K/2, 2 (K/2))`` form two disjoint halves. For each
    ``k`` in ``trial_counts`` (default: powers of two up to K/2, plus K/2) the scores
    from the first ``k`` trials of each half are compared.

    Returns:
      One dict per k: ``trials_per_half`` k, ``total_trials`` 2k, ``spearman`` (over
      the samples visited in both halves; None when undefined: fewer than 3 such
      samples or constant scores),
      ``compared`` (their number), ``mean_visits`` (mean T_i per half, = M k / N).

    Raises:
      ValueError: fewer than 2 trials, or a k outside [1, K/2].
    """
    subsets = np.asarray(subsets)
    s = np.asarray(trial_scores, np.float64)
    half = subsets.shape[0] // 2
    if half < 1:
        raise ValueError("split-half convergence needs at least 2 trials")
    if trial_counts is None:
        ks, k = [], 1
        while k < half:
            ks.append(k)
            k *= 2
        ks.append(half)
    else:
        ks = sorted(set(int(k) for k in trial_counts))
        bad = [k for k in ks if not 1 <= k <= half]
        if bad:
            raise ValueError(f"trials per half must lie in [1, {half}], got {bad}")
    out = []
    for k in ks:
        a, ca = mc_scores(subsets[:k], s[:k], num_samples)
        b, cb = mc_scores(subsets[half:half + k], s[half:half + k], num_samples)
        both = (ca > 0) & (cb > 0)
        rho = spearman(a[both], b[both]) if both.sum() >= 3 else float("nan")
        rho = None if np.isnan(rho) else rho  # JSON-friendly: None = undefined
        out.append({
            "trials_per_half": int(k),
            "total_trials": int(2 * k),
            "spearman": rho,
            "compared": int(both.sum()),
            "mean_visits": float(ca.mean()),
        })
    return out


__all__ = [
    "draw_subsets", "eq3_expectation", "mc_scores", "spearman", "split_half_convergence",
    "subset_size", "visit_counts",
]
