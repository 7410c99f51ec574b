"""Class-wise selection policies: random, greedy, stratify, greedy_diverse.

All policies are pure NumPy/JAX functions of ``(key, labels, scores, ...)``, work class by
class (the paper removes samples "class-wise", supp. 12.3) and return sorted int64
indices into the dataset. Utility scores follow the library convention: HIGHER = MORE
UTILITY.

Kept count of class c with ``n_c`` samples: ``max(round_half_up(ratio * n_c),
min_per_class, 1)``. Ties in the utility are broken by the sample index (lower first), so
greedy and stratify are deterministic without a key.

* ``random``: a uniformly random subset of that size (one ``uniform(key, [N])`` draw,
  ranked within each class).
* ``greedy``: the top-utility samples (paper 4.1, the mean-field greedy policy).
* ``stratify``: sort the class ascending by utility, cut it into ``num_strata`` near-equal
  strata at ``floor(s * n_c / S)`` (the official ``int(s / S * n_c)`` boundaries, in exact
  integer arithmetic; sizes differ by at most 1), S1 = lowest utility .. SS = highest, and return stratum ``stratum``
  (1-based; ``ratio`` is not used).
* ``greedy_diverse`` (beyond the paper, its stated open problem of section 4.4): K-means the
  class's features into ``m = min(num_clusters, n_keep)`` clusters, give every
  cluster a quota of the ``n_keep`` slots proportional to its size (:func:`cluster_quotas`:
  at least one each; never more than the cluster holds) and fill each quota with the
  cluster's top-utility samples. With the default ``num_clusters=0``, ``m = min(n_keep,
  128)``: at small ratios every kept sample represents its own cluster, i.e. the most
  useful sample of each of ``n_keep`` feature-space modes (high utility, but coverage of
  the whole class); at large ratios the 128 clusters are filled proportionally.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import numpy as np

POLICIES: tuple[str, ...] = ("random", "greedy", "stratify", "greedy_diverse")
DEFAULT_MAX_CLUSTERS = 128  # greedy_diverse with num_clusters=0: min(n_keep, 128) clusters


def round_half_up(x: float) -> int:
    """``floor(x + 0.5)`` (Python's ``round`` rounds halves to even)."""
    return int(math.floor(x + 0.5))


def keep_count(n_c: int, ratio: float, min_per_class: int) -> int:
    """Samples kept of a class of ``n_c``: ``max(round_half_up(ratio*n_c), min_per_class, 1)``."""
    return max(round_half_up(ratio * n_c), int(min_per_class), 1)


def class_indices(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Sorted int64 dataset indices of each class."""
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == c).astype(np.int64) for c in range(num_classes)]


def check_scores(scores: Optional[np.ndarray], n: int, policy: str) -> np.ndarray:
    """float64 ``[n]`` scores, or ValueError (missing, wrong length, NaN/inf)."""
    if scores is None:
        raise ValueError(f"policy {policy!r} needs per-sample utility scores")
    s = np.asarray(scores, np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores have shape {s.shape} but the dataset has {n} samples")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(s)))} NaN/inf values")
    return s


def _check_common(labels: np.ndarray, num_classes: int, ratio: float, min_per_class: int,
                  policy: str) -> list[np.ndarray]:
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; valid: {', '.join(POLICIES)}")
    if not (isinstance(ratio, (int, float, np.floating)) and 0.0 < float(ratio) <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    groups = class_indices(labels, num_classes)
    for c, g in enumerate(groups):
        if len(g) < max(min_per_class, 1):
            raise ValueError(f"class {c} has {len(g)} samples, fewer than min_per_class="
                             f"{max(min_per_class, 1)}: cannot keep enough of it")
    return groups


def _by_utility(idx: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``idx`` sorted by descending utility, ties by ascending index."""
    return idx[np.lexsort((idx, -s[idx]))]


def random_order(key: jax.Array, groups: list[np.ndarray]) -> list[np.ndarray]:
    """Each class's indices in a uniformly random order (one ``uniform(key, [N])`` draw,
    argsorted within each class: one compiled program for any class sizes)."""
    n = int(sum(len(g) for g in groups))  # groups partition range(N)
    u = np.asarray(jax.random.uniform(key, (n,)))
    return [g[np.argsort(u[g], kind="stable")] for g in groups]


def random_policy(key: jax.Array, groups: list[np.ndarray], ratio: float, min_per_class: int) -> np.ndarray:
    """Uniformly random ``keep_count`` samples of each class (:func:`random_order`)."""
    out = [g[: keep_count(len(g), ratio, min_per_class)] for g in random_order(key, groups)]
    return np.sort(np.concatenate(out)).astype(np.int64)


def greedy_policy(groups: list[np.ndarray], s: np.ndarray, ratio: float, min_per_class: int) -> np.ndarray:
    """The ``keep_count`` highest-utility samples of each class."""
    out = [_by_utility(g, s)[: keep_count(len(g), ratio, min_per_class)] for g in groups]
    return np.sort(np.concatenate(out)).astype(np.int64)


def strata_bounds(n_c: int, num_strata: int) -> np.ndarray:
    """int ``[S + 1]`` cut points ``floor(s * n_c / S)`` of a class sorted ascending."""
    return np.array([(s * n_c) // num_strata for s in range(num_strata + 1)], np.int64)


def stratify_policy(groups: list[np.ndarray], s: np.ndarray, stratum: int, num_strata: int,
                    min_per_class: int) -> np.ndarray:
    """Stratum ``stratum`` (1 = lowest utility) of ``num_strata`` of every class."""
    if not isinstance(num_strata, (int, np.integer)) or num_strata < 1:
        raise ValueError(f"num_strata must be an integer >= 1, got {num_strata}")
    if not isinstance(stratum, (int, np.integer)) or not 1 <= stratum <= num_strata:
        raise ValueError(f"stratum must be in [1, {num_strata}] (1 = lowest utility), got {stratum}")
    out = []
    for c, g in enumerate(groups):
        asc = _by_utility(g, s)[::-1]  # ascending utility; ties: higher index first
        b = strata_bounds(len(g), num_strata)
        part = asc[b[stratum - 1]: b[stratum]]
        if len(part) < max(min_per_class, 1):
            raise ValueError(f"stratum {stratum}/{num_strata} of class {c} has {len(part)} samples, "
                             f"fewer than min_per_class={max(min_per_class, 1)}")
        out.append(part)
    return np.sort(np.concatenate(out)).astype(np.int64)


def cluster_quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` slots over clusters of ``sizes`` proportionally (largest deficit first).

    Every non-empty cluster gets one slot first when ``total >= #non-empty``; then, one
    slot at a time, the cluster furthest below its proportional share
    ``total * size / sum(sizes)`` (and not yet full) gets the next slot (ties: lower id).
    No cluster gets more than its size; the quotas sum to ``min(total, sum(sizes))``.
    """
    sizes = np.asarray(sizes, np.int64)
    total = int(min(total, sizes.sum()))
    q = np.zeros_like(sizes)
    nonempty = sizes > 0
    if nonempty.sum() <= total:
        q[nonempty] = 1
    share = total * sizes / max(int(sizes.sum()), 1)
    while q.sum() < total:
        deficit = np.where(q < sizes, share - q, -np.inf)
        q[int(np.argmax(deficit))] += 1
    return q


def greedy_diverse_policy(key: jax.Array, groups: list[np.ndarray], s: np.ndarray,
                          features: np.ndarray, ratio: float, min_per_class: int,
                          num_clusters: int = 0, max_iter: int = 50) -> np.ndarray:
    """Top-utility samples inside K-means clusters of each class (see module docstring).

    Class c is clustered with key ``fold_in(key, c)``; all classes are padded to one size
    and share one compiled K-means program.
    """
    from gold.utility.features import kmeans  # local import: selection -> utility

    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[0] != len(s):
        raise ValueError(f"features must be [N={len(s)}, F], got {features.shape}")
    if num_clusters < 0:
        raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
    keeps = [keep_count(len(g), ratio, min_per_class) for g in groups]
    ms = [min(num_clusters or min(k, DEFAULT_MAX_CLUSTERS), k) for k in keeps]
    block = 256
    p = int(math.ceil(max(len(g) for g in groups) / block) * block)
    k_max = int(math.ceil(max(ms) / 16) * 16)
    out = []
    for c, (g, k, m) in enumerate(zip(groups, keeps, ms)):
        if k >= len(g):
            out.append(g)
            continue
        fc = np.zeros((p, features.shape[1]), np.float32)
        fc[: len(g)] = features[g] - features[g].mean(0)
        valid = np.arange(p) < len(g)
        res = kmeans(jax.random.fold_in(key, c), fc, m, valid, max_iter=max_iter, block=block,
                     k_max=k_max)
        assign = np.asarray(res.assign)[: len(g)]
        quotas = cluster_quotas(np.bincount(assign, minlength=m)[:m], k)
        for j in range(m):
            members = g[assign == j]
            out.append(_by_utility(members, s)[: quotas[j]])
    return np.sort(np.concatenate(out)).astype(np.int64)


def select(
    key: Optional[jax.Array],
    labels: np.ndarray,
    num_classes: int,
    *,
    policy: str,
    ratio: float = 1.0,
    scores: Optional[np.ndarray] = None,
    stratum: Optional[int] = None,
    num_strata: Optional[int] = None,
    min_per_class: int = 1,
    features: Optional[np.ndarray] = None,
    num_clusters: int = 0,
) -> np.ndarray:
    """Select a class-wise subset; sorted int64 indices into the dataset.

    Args:
      key: PRNG key (``random`` and ``greedy_diverse``; may be None for the others).
      labels: int ``[N]`` class of each sample; num_classes: C.
      policy: ``random | greedy | stratify | greedy_diverse``.
      ratio: kept fraction per class, in (0, 1] (not used by ``stratify``).
      scores: float ``[N]`` utility (higher = more useful); needed by all but ``random``.
      stratum, num_strata: ``stratify`` only (1-based stratum, S1 = lowest utility).
      min_per_class: never keep fewer per class (e.g. IPC for real initialisation).
      features: float ``[N, F]`` (``greedy_diverse`` only).
      num_clusters: ``greedy_diverse`` clusters per class (0 = ``min(n_keep, 128)``).

    Raises:
      ValueError: unknown policy; ratio outside (0, 1]; a class smaller than
        ``min_per_class``; missing / wrong-length / NaN scores; bad stratum; missing
        features.
    """
    groups = _check_common(labels, num_classes, ratio, min_per_class, policy)
    n = len(np.asarray(labels))
    if policy == "random":
        if key is None:
            raise ValueError("policy 'random' needs a PRNG key")
        return random_policy(key, groups, ratio, min_per_class)
    s = check_scores(scores, n, policy)
    if policy == "greedy":
        return greedy_policy(groups, s, ratio, min_per_class)
    if policy == "stratify":
        if stratum is None or num_strata is None:
            raise ValueError("policy 'stratify' needs stratum and num_strata")
        return stratify_policy(groups, s, stratum, num_strata, min_per_class)
    if features is None:
        raise ValueError("policy 'greedy_diverse' needs per-sample features [N, F] "
                         "(e.g. the 'features' extra of a loss utility)")
    if key is None:
        raise ValueError("policy 'greedy_diverse' needs a PRNG key (K-means init)")
    return greedy_diverse_policy(key, groups, s, features, ratio, min_per_class, num_clusters)


__all__ = [
    "POLICIES", "class_indices", "check_scores", "cluster_quotas", "greedy_diverse_policy",
    "greedy_policy", "keep_count", "random_order", "random_policy", "round_half_up", "select",
    "strata_bounds", "stratify_policy",
]
