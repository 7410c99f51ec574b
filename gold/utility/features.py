"""Feature-space indicators (paper 4.2 / 12.4): density, cluster distance, init distance.

All work on GAP features of a trained classifier (:func:`gap_features`) and are computed
class by class. Distances are Euclidean. Pairwise distances are never materialised for a
whole class: rows are processed in blocks (``lax.map`` over row blocks of ``block``
samples against all columns of the class), so a 6,000-sample class with 128-d features
needs ``block x 6,000`` floats at a time. Every class is zero-padded to the same size
(with a validity mask) so all classes share one compiled program.

Indicators (HIGHER = MORE UTILITY):

* ``density``: minus the mean distance to the K nearest other samples of the same
  class (K = 100; 20 for CIFAR-100 / TinyImageNet). Dense = common = high utility.
* ``cluster``: per class K-means (k-means++ init, Lloyd iterations, all in JAX; K = 128;
  16 for CIFAR-100 / TinyImageNet); minus the distance to the nearest centre.
* ``init_distance``: minus the distance to the nearest real-init image of the same class
  (the IPC real images a distillation starts from, given as ``init_indices``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gold import nn as gnn


# ------------------------------------------------------------------------- features
def _gap(module: nn.Module, x: jax.Array) -> jax.Array:
    """GAP of the last block's feature map ``[B, F]`` (or ``embed`` without taps)."""
    if hasattr(module, "features"):
        h = module.features(x, train=False)[-1]
        return jnp.mean(h, axis=(-3, -2)) if h.ndim >= 4 else h
    return module.embed(x, train=False)


def gap_features(model: nn.Module, variables: gnn.Variables, x: jax.Array,
                 batch_size: int = 1000) -> np.ndarray:
    """Global-average-pooled last-block features float32 ``[N, F]`` (F = width for ConvNet).

    Uses ``model.features(x)[-1]`` (``[B, h, w, F]``, averaged over h, w) when the model
    has feature taps (ConvNet), else ``model.embed(x)``. Evaluated in eval mode,
    ``batch_size`` images at a time (one ``lax.map`` under ``jit``).
    """
    n = x.shape[0]
    b = min(batch_size, n)
    nb = math.ceil(n / b)
    pad = nb * b - n
    xp = jnp.asarray(x, jnp.float32)
    if pad:
        xp = jnp.concatenate([xp, jnp.zeros((pad, *xp.shape[1:]), xp.dtype)])

    @jax.jit
    def run(v, xs):
        return jax.lax.map(lambda xb: model.apply(v, xb, method=_gap), xs)

    out = run(variables, xp.reshape(nb, b, *xp.shape[1:]))
    return np.asarray(out.reshape(nb * b, -1)[:n], np.float32)


# --------------------------------------------------------------------- class padding
class ClassBlocks(NamedTuple):
    """Per-class features padded to one size.

    Attributes:
      feats: float32 ``[C, P, F]`` (class-centred features; padding rows are 0).
      valid: bool ``[C, P]``.
      index: int64 ``[C, P]`` dataset index of each row (-1 for padding).
    """

    feats: np.ndarray
    valid: np.ndarray
    index: np.ndarray


def class_blocks(features: np.ndarray, labels: np.ndarray, num_classes: int,
                 block: int) -> ClassBlocks:
    """Group ``features [N, F]`` by class, centre each class, pad to a multiple of ``block``."""
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in range(num_classes)]
    p = max(1, max(len(g) for g in groups))
    p = int(math.ceil(p / block) * block)
    f = features.shape[1]
    feats = np.zeros((num_classes, p, f), np.float32)
    valid = np.zeros((num_classes, p), bool)
    index = np.full((num_classes, p), -1, np.int64)
    for c, g in enumerate(groups):
        if len(g):
            fc = features[g].astype(np.float64)
            feats[c, : len(g)] = fc - fc.mean(0)  # centring: better-conditioned distances
        valid[c, : len(g)] = True
        index[c, : len(g)] = g
    return ClassBlocks(feats, valid, index)


def _scatter(blocks: ClassBlocks, values: np.ndarray, n: int) -> np.ndarray:
    """Per-class padded ``[C, P]`` values back to dataset order ``[N]``."""
    out = np.zeros(n, np.float32)
    out[blocks.index[blocks.valid]] = np.asarray(values)[blocks.valid]
    return out


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``[A, B]`` (clamped at 0)."""
    d = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
    return jnp.maximum(d, 0.0)


# --------------------------------------------------------------------------- density
@functools.partial(jax.jit, static_argnames=("k", "block"))
def _knn_class(feats: jax.Array, valid: jax.Array, k: int, block: int) -> jax.Array:
    """Mean distance to the k nearest other valid rows, ``[P]`` (one class)."""
    p = feats.shape[0]
    rows = jnp.arange(p).reshape(p // block, block)

    def one_block(r):
        d = _sq_dists(feats[r], feats)
        mask = valid[None, :] & (jnp.arange(p)[None, :] != r[:, None])
        neg, _ = jax.lax.top_k(jnp.where(mask, -d, -jnp.inf), k)
        return jnp.mean(jnp.sqrt(-neg), axis=-1)

    return jax.lax.map(one_block, rows).reshape(p)


def knn_mean_distance(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
                      *, block: int = 512) -> np.ndarray:
    """Mean Euclidean distance of each sample to its ``k`` nearest same-class neighbours.

    Args:
      features: float ``[N, F]``; labels: int ``[N]``.
      k: neighbours (the sample itself excluded; exact duplicates count at distance 0).
      block: rows per distance block.

    Returns:
      float32 ``[N]``.

    Raises:
      ValueError: ``k < 1`` or a class with ``k`` or fewer samples.
    """
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if k < 1:
        raise ValueError(f"knn k must be >= 1, got {k}")
    if counts.min() <= k:
        c = int(np.argmin(counts))
        raise ValueError(f"knn k={k} is too large: class {c} has only {counts[c]} samples "
                         f"(needs at least k + 1 = {k + 1})")
    bsz = min(block, int(counts.max()))
    blocks = class_blocks(features, labels, num_classes, bsz)
    out = np.stack([np.asarray(_knn_class(jnp.asarray(blocks.feats[c]), jnp.asarray(blocks.valid[c]),
                                          k, bsz)) for c in range(num_classes)])
    return _scatter(blocks, out, len(labels))


def density_scores(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 100,
                   *, block: int = 512) -> np.ndarray:
    """Density utility float32 ``[N]`` = minus the mean distance to the k nearest
    same-class neighbours (paper: "a negative sign is put for a density estimator")."""
    return -knn_mean_distance(features, labels, num_classes, k, block=block)


# --------------------------------------------------------------------------- k-means
class KMeansResult(NamedTuple):
    """K-means output: ``centres [K, F]``, ``assign int32 [P]`` (nearest centre of each
    row), ``dist [P]`` (Euclidean distance to it), ``inertia`` (sum of squared distances
    over valid rows), ``iterations`` run."""

    centres: jax.Array
    assign: jax.Array
    dist: jax.Array
    inertia: jax.Array
    iterations: jax.Array


def kmeans_plusplus(key: jax.Array, x: jax.Array, k: int, valid: Optional[jax.Array] = None,
                    num_active: Optional[jax.Array] = None) -> jax.Array:
    """Greedy k-means++ seeding: ``[k, F]`` centres chosen among the valid rows of ``x [P, F]``.

    The first centre is a uniformly random valid row; each next one is the best (lowest
    resulting potential ``sum_i min_j ||x_i - c_j||^2``) of ``2 + floor(ln k)`` candidates
    drawn with probability proportional to the squared distance to the nearest centre so
    far (Arthur & Vassilvitskii's D^2 sampling with scikit-learn's greedy local trials).
    Jittable.

    ``num_active`` (traced int, default ``k``) seeds only the first ``num_active`` centres
    (the rest stay 0 and are masked out by :func:`lloyd`): one compiled program serves
    classes that need different numbers of clusters.
    """
    p = x.shape[0]
    valid = jnp.ones(p, bool) if valid is None else valid
    w = valid.astype(x.dtype)
    num_active = k if num_active is None else num_active
    trials = 2 + int(math.log(k)) if k > 1 else 1
    keys = jax.random.split(key, k)
    first = jax.random.categorical(keys[0], jnp.where(valid, 0.0, -jnp.inf))
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum((x - x[first]) ** 2, -1)

    def body(i, carry):
        centres, d2 = carry
        logits = jnp.where(valid & (d2 > 0), jnp.log(jnp.maximum(d2, 1e-30)), -jnp.inf)
        # All valid rows already coincide with a centre: fall back to uniform.
        logits = jnp.where(jnp.any(jnp.isfinite(logits)), logits, jnp.where(valid, 0.0, -jnp.inf))
        cand = jax.random.categorical(keys[i], logits, shape=(trials,))
        d_cand = jnp.minimum(d2[None, :], _sq_dists(x[cand], x))  # [trials, P]
        best = jnp.argmin(jnp.sum(d_cand * w[None, :], -1))
        return centres.at[i].set(x[cand[best]]), d_cand[best]

    centres, _ = jax.lax.fori_loop(1, num_active, body, (centres, d2))
    return centres


def _assign(x: jax.Array, centres: jax.Array, active: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    """Nearest active centre (int32 ``[P]``) and squared distance to it, in row blocks."""
    p = x.shape[0]
    b = block if p % block == 0 else p

    def one(xb):
        d = jnp.where(active[None, :], _sq_dists(xb, centres), jnp.inf)
        return jnp.argmin(d, -1).astype(jnp.int32), jnp.min(d, -1)

    a, d = jax.lax.map(one, x.reshape(p // b, b, -1))
    return a.reshape(p), d.reshape(p)


@functools.partial(jax.jit, static_argnames=("max_iter", "block"))
def lloyd(x: jax.Array, centres: jax.Array, valid: Optional[jax.Array] = None,
          num_active: Optional[jax.Array] = None, *, max_iter: int = 100,
          block: int = 512) -> KMeansResult:
    """Lloyd iterations from ``centres [K, F]`` on the valid rows of ``x [P, F]``.

    Each iteration assigns every row to its nearest centre and moves each centre to the
    mean of its rows (a centre with no rows stays where it is). Stops when no assignment
    changes or after ``max_iter`` iterations. Padding rows (``valid`` False) are ignored;
    only the first ``num_active`` centres (traced; default all) are used.
    """
    p = x.shape[0]
    k = centres.shape[0]
    valid = jnp.ones(p, bool) if valid is None else valid
    active = jnp.arange(k) < (k if num_active is None else num_active)
    w = valid.astype(x.dtype)

    def cond(state):
        _, _, changed, it = state
        return changed & (it < max_iter)

    def body(state):
        c, a_old, _, it = state
        a, _ = _assign(x, c, active, block)
        sums = jax.ops.segment_sum(x * w[:, None], a, k)
        cnt = jax.ops.segment_sum(w, a, k)
        c_new = jnp.where(cnt[:, None] > 0, sums / jnp.maximum(cnt, 1.0)[:, None], c)
        changed = jnp.any((a != a_old) & valid)
        return c_new, a, changed, it + 1

    a0 = jnp.full(p, -1, jnp.int32)
    c, _, _, it = jax.lax.while_loop(cond, body, (centres, a0, jnp.array(True), jnp.array(0)))
    a, d2 = _assign(x, c, active, block)
    return KMeansResult(c, a, jnp.sqrt(d2), jnp.sum(d2 * w), it)


@functools.partial(jax.jit, static_argnames=("k", "max_iter", "block"))
def _kmeans_jit(key, x, valid, num_active, *, k, max_iter, block):
    init = kmeans_plusplus(key, x, k, valid, num_active)
    return lloyd(x, init, valid, num_active, max_iter=max_iter, block=block)


def kmeans(key: jax.Array, x: jax.Array, k: int, valid: Optional[jax.Array] = None, *,
           max_iter: int = 100, block: int = 512, k_max: Optional[int] = None) -> KMeansResult:
    """K-means of the valid rows of ``x [P, F]`` into ``k`` clusters (k-means++ + Lloyd).

    Args:
      k_max: static number of centre slots (>= k; default k). Calls with the same
        ``(P, F, k_max)`` share one compiled program whatever ``k``; the result's
        ``centres`` then has ``k_max`` rows of which the first ``k`` are used.

    Raises:
      ValueError: ``k < 1``, more clusters than valid rows, or ``k > k_max``.
    """
    n_valid = int(np.sum(np.asarray(valid))) if valid is not None else x.shape[0]
    if not 1 <= k <= n_valid:
        raise ValueError(f"k-means needs 1 <= K <= number of samples, got K={k} for {n_valid} samples")
    k_max = k if k_max is None else int(k_max)
    if k > k_max:
        raise ValueError(f"k={k} exceeds k_max={k_max}")
    x = jnp.asarray(x, jnp.float32)
    v = jnp.ones(x.shape[0], bool) if valid is None else jnp.asarray(valid)
    p = x.shape[0]
    return _kmeans_jit(key, x, v, jnp.int32(k), k=k_max, max_iter=max_iter,
                       block=block if p % block == 0 else p)


def cluster_distance(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
                     key: jax.Array, *, max_iter: int = 100, block: int = 512) -> np.ndarray:
    """Distance float32 ``[N]`` of each sample to the nearest of ``k`` K-means centres of
    its class (class c uses key ``fold_in(key, c)``).

    Raises:
      ValueError: a class with fewer than ``k`` samples.
    """
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if counts.min() < k:
        c = int(np.argmin(counts))
        raise ValueError(f"cluster K={k} is larger than class {c} ({counts[c]} samples)")
    bsz = min(block, int(counts.max()))
    blocks = class_blocks(features, labels, num_classes, bsz)
    out = []
    for c in range(num_classes):
        res = kmeans(jax.random.fold_in(key, c), blocks.feats[c], k, blocks.valid[c],
                     max_iter=max_iter, block=bsz)
        out.append(np.asarray(res.dist))
    return _scatter(blocks, np.stack(out), len(labels))


def cluster_scores(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
                   key: jax.Array, *, max_iter: int = 100) -> np.ndarray:
    """Cluster utility float32 ``[N]`` = minus the distance to the nearest class centre."""
    return -cluster_distance(features, labels, num_classes, k, key, max_iter=max_iter)


# ------------------------------------------------------------------- init distance
def default_init_indices(key: jax.Array, labels: np.ndarray, num_classes: int, ipc: int) -> np.ndarray:
    """The ``ipc`` real images per class a real-initialised distillation starts from.

    One ``u = uniform(key, [N])`` draw; class c takes its ``ipc`` members with the
    smallest ``u`` (a uniformly random ipc-subset per class, the same ranking as
    :func:`gold.selection.policies.random_order`). Returns sorted int64 ``[C * ipc]``
    dataset indices.
    """
    labels = np.asarray(labels)
    u = np.asarray(jax.random.uniform(key, (len(labels),)))
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < ipc:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than ipc={ipc}")
        out.append(idx[np.argsort(u[idx], kind="stable")[:ipc]])
    return np.sort(np.concatenate(out)).astype(np.int64)


def init_distance(features: np.ndarray, labels: np.ndarray, num_classes: int,
                  init_indices: np.ndarray, *, block: int = 4096) -> np.ndarray:
    """Distance float32 ``[N]`` of each sample to the nearest init image of its class.

    Args:
      init_indices: int ``[M]`` dataset indices of the real-init images (every class
        needs at least one); M is small (IPC per class), so this runs in NumPy,
        ``block`` rows at a time.
    """
    labels = np.asarray(labels)
    init_indices = np.asarray(init_indices, np.int64)
    if init_indices.ndim != 1 or len(init_indices) == 0:
        raise ValueError("init_indices must be a non-empty 1-D index array")
    if init_indices.min() < 0 or init_indices.max() >= len(labels):
        raise ValueError(f"init_indices out of range [0, {len(labels)})")
    f = np.asarray(features, np.float64)
    out = np.zeros(len(labels), np.float32)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        inits = init_indices[labels[init_indices] == c]
        if len(inits) == 0:
            raise ValueError(f"no init image of class {c} among init_indices")
        ref = f[inits]
        for s in range(0, len(members), block):
            rows = members[s: s + block]
            a = f[rows]
            d2 = (a * a).sum(-1)[:, None] + (ref * ref).sum(-1)[None] - 2.0 * a @ ref.T
            out[rows] = np.sqrt(np.maximum(d2.min(-1), 0.0))
    return out


def init_distance_scores(features: np.ndarray, labels: np.ndarray, num_classes: int,
                         init_indices: np.ndarray) -> np.ndarray:
    """Init-distance utility float32 ``[N]`` = minus the distance to the nearest init image
    of the same class (paper: closer = higher utility, a weak indicator)."""
    return -init_distance(features, labels, num_classes, init_indices)


__all__ = [
    "ClassBlocks", "KMeansResult", "class_blocks", "cluster_distance", "cluster_scores",
    "default_init_indices", "density_scores", "gap_features", "init_distance",
    "init_distance_scores", "kmeans", "kmeans_plusplus", "knn_mean_distance", "lloyd",
]
