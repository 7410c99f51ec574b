"""Coreset baselines as class-wise selection policies (paper supp. 8.2, Tables 14-15).

The paper compares its loss indicator with CRAIG, GradMatch and GLISTER as implemented
in the CORDS package; here they are written in JAX / NumPy on the LAST-LAYER gradients
of a trained classifier (CORDS' ``linear_layer`` mode), plus two feature-space
baselines, herding and K-means centres. Every method runs class by class (the paper's
data removal is class-wise) with the per-class budget of :func:`class_budgets`.

Last-layer gradient embedding of sample i, for cross-entropy and a dense head
``logits = h W + b`` (``W [F, K]``, ``b [K]``)::

    g_i = [e_i, vec(h_i e_i^T)],   e_i = softmax(logits_i) - onehot(y_i)   (bias, kernel)

Its dimension is ``K (F + 1)`` (20,490 for ConvNetD3 on 10 classes), but every method
here only needs inner products, and ``<g_i, g_j> = <e_i, e_j> (1 + <h_i, h_j>)``, so
per-class Gram matrices ``[n_c, n_c]`` are formed without ever building ``g``
(:func:`gradient_gram`; ``gradients='bias'`` keeps only ``e``).

Methods (``METHODS``):

* ``craig`` (Mirzasoleiman et al. 2020): facility location
  ``F(S) = sum_i max_{j in S} s_ij`` with ``s_ij = max d - d_ij``, ``d_ij = ||g_i - g_j||``
  (CORDS' similarity), maximised greedily (:func:`facility_location_greedy`, the
  (1 - 1/e) approximation).
* ``gradmatch`` (Killamsetty et al. 2021a): orthogonal matching pursuit on the class's
  per-sample gradients to match the class gradient sum ``b = sum_i g_i``, non-negative
  ridge refit (``lam``) on the support after each pick (:func:`omp_order`); when no
  remaining atom correlates positively with the residual, the rest of the order is
  filled by decreasing correlation with ``b`` (CORDS fills randomly).
* ``glister`` (Killamsetty et al. 2021b): greedy one-step look-ahead. With last-layer
  parameters ``theta'`` (starting at the trained ones), pick the candidate whose
  gradient ``g_j`` (at the trained parameters) most decreases the validation loss to
  first order, ``argmax_j <g_j, grad L_val(theta')>``, then take the step
  ``theta' <- theta' - eta g_j`` and recompute the validation gradient exactly for the
  last layer (:func:`glister_order`). Validation set: ``val_size`` training samples
  drawn uniformly (no separate split exists for these datasets).
* ``herding`` (Welling 2009; Rebuffi et al. 2017): greedily pick the sample that brings
  the mean of the picked features closest to the class mean (:func:`herding_order`).
* ``kmeans``: K-means with k = budget on the class's features
  (:func:`gold.utility.features.kmeans`), then the nearest not-yet-picked sample to each
  centre (:func:`kmeans_select`). Not nested: a larger budget is a new clustering.

The first four are greedy and NESTED (the pick for budget k is a prefix of the pick for
budget k + 1), so one run up to the largest budget gives every ratio of a sweep at once:
:func:`coreset_order_scores` returns them as utility scores (earlier pick = higher score)
usable by the greedy selection policy. Features / logits come from
:func:`classifier_outputs` (head input and logits of a trained network).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from gold import rng

METHODS: tuple[str, ...] = ("craig", "gradmatch", "glister", "herding", "kmeans")
"""Valid coreset methods."""

NESTED: tuple[str, ...] = ("craig", "gradmatch", "glister", "herding")
"""Methods whose picks for growing budgets are nested (prefix orders)."""

GRADIENTS: tuple[str, ...] = ("last_layer", "bias")
"""Gradient embeddings: full last layer (bias + kernel) or the logit gradient only."""


class CoresetInputs(NamedTuple):
    """What the coreset methods read from a trained classifier.

    Attributes:
      features: float32 ``[N, F]`` inputs of the dense head (penultimate features).
      logits: float32 ``[N, K]`` classifier outputs.
      labels: int ``[N]``.
      head_kernel: float32 ``[F, K]`` head weights (GLISTER's look-ahead).
      head_bias: float32 ``[K]``.
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    head_kernel: np.ndarray
    head_bias: np.ndarray


# ------------------------------------------------------------------------- embeddings
def logit_errors(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``e = softmax(logits) - onehot(labels)``, the cross-entropy gradient w.r.t. the
    logits (= w.r.t. the head bias), float64 ``[N, K]``."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    p[np.arange(len(p)), np.asarray(labels)] -= 1.0
    return p


def gradient_embedding(logits: np.ndarray, labels: np.ndarray,
                       features: Optional[np.ndarray] = None) -> np.ndarray:
    """Explicit last-layer gradients ``[N, K]`` (bias only) or ``[N, K + F K]``
    (``[e, vec(h e^T)]`` with row-major ``h e^T [F, K]``). For tests and small problems;
    the methods use :func:`gradient_gram` instead."""
    e = logit_errors(logits, labels)
    if features is None:
        return e
    h = np.asarray(features, np.float64)
    return np.concatenate([e, (h[:, :, None] * e[:, None, :]).reshape(len(e), -1)], axis=1)


def gradient_gram(errors: np.ndarray, features: Optional[np.ndarray] = None) -> np.ndarray:
    """Gram matrix of last-layer gradients, float64 ``[n, n]``.

    ``G_ij = <e_i, e_j> (1 + <h_i, h_j>)`` with features, ``<e_i, e_j>`` without,
    equal to ``gradient_embedding(...) @ gradient_embedding(...).T``.
    """
    e = jnp.asarray(errors, jnp.float32)
    ee = e @ e.T
    if features is not None:
        h = jnp.asarray(features, jnp.float32)
        ee = ee * (1.0 + h @ h.T)
    return np.asarray(ee, np.float64)


def _distances_from_gram(gram: np.ndarray) -> np.ndarray:
    d = np.diag(gram)
    return np.sqrt(np.maximum(d[:, None] + d[None, :] - 2.0 * gram, 0.0))


# -------------------------------------------------------------- facility location
@functools.partial(jax.jit, static_argnames=("k",))
def _fl_greedy(sim: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    n = sim.shape[0]

    def body(t, carry):
        cur, chosen, order, gains = carry
        gain = jnp.sum(jnp.maximum(sim - cur[:, None], 0.0), axis=0)
        gain = jnp.where(chosen, -jnp.inf, gain)
        j = jnp.argmax(gain)
        return (jnp.maximum(cur, sim[:, j]), chosen.at[j].set(True),
                order.at[t].set(j), gains.at[t].set(gain[j]))

    init = (jnp.zeros(n, sim.dtype), jnp.zeros(n, bool), jnp.zeros(k, jnp.int32),
            jnp.zeros(k, sim.dtype))
    _, _, order, gains = jax.lax.fori_loop(0, k, body, init)
    return order, gains


def facility_location_value(sim: np.ndarray, subset) -> float:
    """``F(S) = sum_i max_{j in S} sim[i, j]`` (0 for the empty set; sim >= 0)."""
    subset = list(subset)
    if not subset:
        return 0.0
    return float(np.sum(np.max(np.asarray(sim)[:, subset], axis=1)))


def facility_location_greedy(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximisation of the facility location function.

    Args:
      sim: float ``[n, n]`` non-negative similarities, ``sim[i, j]`` = how well
        candidate j represents sample i.
      k: picks, ``1 <= k <= n``.

    Returns:
      (order int64 ``[k]`` in pick order, marginal gains float64 ``[k]``, non-increasing
      by submodularity). Ties go to the lowest index.
    """
    sim = np.asarray(sim, np.float32)
    n = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != n:
        raise ValueError(f"similarity must be square, got {sim.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"facility location needs 1 <= k <= n={n}, got {k}")
    if np.any(sim < 0):
        raise ValueError("facility location needs non-negative similarities")
    order, gains = _fl_greedy(jnp.asarray(sim), int(k))
    return np.asarray(order, np.int64), np.asarray(gains, np.float64)


def craig_order(gram: np.ndarray, k: int) -> np.ndarray:
    """CRAIG pick order (int64 ``[k]``) of one class from its gradient Gram matrix.

    Similarity ``max(d) - d`` on gradient distances ``d`` (CORDS), greedy facility location.
    """
    d = _distances_from_gram(np.asarray(gram, np.float64))
    return facility_location_greedy(d.max() - d, k)[0]


# ----------------------------------------------------------------------------- OMP
def _ridge_fit(gram_ss: np.ndarray, corr_s: np.ndarray, lam: float, positive: bool) -> np.ndarray:
    """argmin_x ||A_S x - b||^2 + lam ||x||^2 (x >= 0 if positive), from
    ``A_S^T A_S`` and ``A_S^T b`` only."""
    m = gram_ss + lam * np.eye(len(corr_s))
    if not positive:
        return np.linalg.lstsq(m, corr_s, rcond=None)[0]
    # x^T M x - 2 x^T c = ||L^T x - L^{-1} c||^2 + const with M = L L^T.
    jitter = 1e-10 * max(1.0, float(np.trace(m)) / len(corr_s))
    try:
        low = np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        low = np.linalg.cholesky(m + jitter * np.eye(len(corr_s)))
    rhs = np.linalg.solve(low, corr_s)
    return optimize.nnls(low.T, rhs)[0]


def omp_order(gram: np.ndarray, target_corr: np.ndarray, k: int, *, lam: float = 0.0,
              positive: bool = True, target_sq_norm: Optional[float] = None,
              tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal matching pursuit in Gram form (GradMatch's solver).

    Matches a target ``b`` with columns ``a_j`` of an implicit matrix A, given only
    ``gram = A^T A [n, n]`` and ``target_corr = A^T b [n]``. Each step picks the atom
    most correlated with the residual, ``argmax_j <a_j, r>`` (``|<a_j, r>|`` if not
    ``positive``), then refits the weights on the whole support by (non-negative) ridge
    least squares; ``r = b - A_S x``. Stops early when no atom has a positive
    correlation (or, with ``target_sq_norm`` = ``||b||^2`` given, when
    ``||r||^2 <= tol * ||b||^2``); the rest of the order then follows decreasing
    ``target_corr`` (weights 0).

    Returns:
      (order int64 ``[k]``, weights float64 ``[k]`` of the final fit, 0 for fill-ins).
    """
    gram = np.asarray(gram, np.float64)
    c = np.asarray(target_corr, np.float64)
    n = len(c)
    if gram.shape != (n, n):
        raise ValueError(f"gram {gram.shape} does not match target_corr [{n}]")
    if not 1 <= k <= n:
        raise ValueError(f"OMP needs 1 <= k <= n={n}, got {k}")
    support: list[int] = []
    x = np.zeros(0)
    chosen = np.zeros(n, bool)
    for _ in range(k):
        proj = c - (gram[:, support] @ x if support else 0.0)
        score = proj if positive else np.abs(proj)
        score = np.where(chosen, -np.inf, score)
        j = int(np.argmax(score))
        if not np.isfinite(score[j]) or score[j] <= tol * max(1.0, np.abs(c).max()):
            break
        support.append(j)
        chosen[j] = True
        idx = np.asarray(support)
        x = _ridge_fit(gram[np.ix_(idx, idx)], c[idx], lam, positive)
        if target_sq_norm is not None:
            resid = target_sq_norm - 2.0 * x @ c[idx] + x @ gram[np.ix_(idx, idx)] @ x
            if resid <= tol * max(target_sq_norm, 1e-30):
                break
    weights = np.zeros(k)
    weights[: len(support)] = x
    rest = [int(j) for j in np.argsort(-c, kind="stable") if not chosen[j]]
    order = np.asarray(support + rest[: k - len(support)], np.int64)
    return order, weights


def gradmatch_order(gram: np.ndarray, k: int, *, lam: float = 0.5, positive: bool = True) -> np.ndarray:
    """GradMatch pick order (int64 ``[k]``) of one class: OMP matching the class
    gradient sum, from the class's gradient Gram matrix."""
    gram = np.asarray(gram, np.float64)
    c = gram.sum(axis=1)
    return omp_order(gram, c, k, lam=lam, positive=positive, target_sq_norm=float(c.sum()))[0]


# ------------------------------------------------------------------------- GLISTER
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def glister_order(
    features: np.ndarray,
    errors: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    head_kernel: np.ndarray,
    head_bias: np.ndarray,
    k: int,
    *,
    eta: float = 0.01,
    use_features: bool = True,
) -> np.ndarray:
    """GLISTER greedy order (int64 ``[k]``) of one class's candidates.

    Args:
      features: ``[n, F]`` head inputs of the candidates; errors: ``[n, K]`` their
        ``softmax - onehot`` at the trained parameters (their gradients ``g_j``).
      val_features, val_labels: ``[V, F]``, ``[V]`` validation set.
      head_kernel, head_bias: trained ``W [F, K]``, ``b [K]`` (the look-ahead start).
      k: picks.
      eta: look-ahead step size.
      use_features: False = bias-only gradients (kernel fixed).

    Each step: ``grad L_val(theta')`` (mean cross-entropy over the validation set,
    w.r.t. ``(W, b)``), gain ``<g_j, grad L_val>`` for every unpicked candidate, pick the
    largest, update ``theta' -= eta g_j``.
    """
    h = np.asarray(features, np.float64)
    e = np.asarray(errors, np.float64)
    hv = np.asarray(val_features, np.float64)
    yv = np.asarray(val_labels)
    w = np.array(head_kernel, np.float64)
    b = np.array(head_bias, np.float64)
    n = len(e)
    if not 1 <= k <= n:
        raise ValueError(f"GLISTER needs 1 <= k <= n={n}, got {k}")
    onehot = np.eye(w.shape[1])[yv]
    chosen = np.zeros(n, bool)
    order = np.zeros(k, np.int64)
    for t in range(k):
        ev = (_softmax(hv @ w + b) - onehot) / len(yv)  # dL_val / dlogits
        gb = ev.sum(0)                                   # [K]
        gain = e @ gb
        if use_features:
            gw = hv.T @ ev                               # [F, K]
            gain = gain + np.sum((h @ gw) * e, axis=1)   # <h_j e_j^T, gW>
        gain = np.where(chosen, -np.inf, gain)
        j = int(np.argmax(gain))
        order[t] = j
        chosen[j] = True
        b -= eta * e[j]
        if use_features:
            w -= eta * np.outer(h[j], e[j])
    return order


# -------------------------------------------------------------------------- herding
@functools.partial(jax.jit, static_argnames=("k",))
def _herding(f: jax.Array, k: int) -> jax.Array:
    n = f.shape[0]
    mu = jnp.mean(f, axis=0)

    def body(t, carry):
        total, chosen, order = carry
        cand = (total[None, :] + f) / (t + 1.0)
        d = jnp.sum((mu[None, :] - cand) ** 2, axis=1)
        d = jnp.where(chosen, jnp.inf, d)
        j = jnp.argmin(d)
        return total + f[j], chosen.at[j].set(True), order.at[t].set(j)

    init = (jnp.zeros(f.shape[1], f.dtype), jnp.zeros(n, bool), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, body, init)[2]


def herding_order(features: np.ndarray, k: int) -> np.ndarray:
    """Herding pick order (int64 ``[k]``): step t picks the unpicked sample j minimising
    ``||mu - (sum of picked + f_j) / t||`` (``mu`` = class mean of ``features [n, F]``)."""
    f = np.asarray(features, np.float32)
    if not 1 <= k <= len(f):
        raise ValueError(f"herding needs 1 <= k <= n={len(f)}, got {k}")
    return np.asarray(_herding(jnp.asarray(f), int(k)), np.int64)


# --------------------------------------------------------------------------- k-means
def kmeans_select(features: np.ndarray, k: int, key: jax.Array, *, max_iter: int = 100) -> np.ndarray:
    """K-means-centre selection of one class: k clusters (k-means++ then Lloyd, JAX),
    then for each centre in turn the nearest sample not picked yet. int64 ``[k]``
    indices into ``features``, in centre order."""
    from gold.utility.features import kmeans  # K-means lives with the cluster indicator

    f = np.asarray(features, np.float32)
    n = len(f)
    if not 1 <= k <= n:
        raise ValueError(f"k-means selection needs 1 <= k <= n={n}, got {k}")
    fc = f - f.mean(0)
    res = kmeans(key, jnp.asarray(fc), int(k), max_iter=max_iter, block=n)
    centres = np.asarray(res.centres, np.float64)
    d = (np.sum(centres ** 2, 1)[:, None] + np.sum(fc.astype(np.float64) ** 2, 1)[None]
         - 2.0 * centres @ fc.T.astype(np.float64))
    taken = np.zeros(n, bool)
    out = np.zeros(k, np.int64)
    for c in range(k):
        row = np.where(taken, np.inf, d[c])
        j = int(np.argmin(row))
        out[c] = j
        taken[j] = True
    return out


# ----------------------------------------------------------------- class-wise driver
def class_budgets(labels: np.ndarray, num_classes: int, ratio: float, min_per_class: int = 1) -> np.ndarray:
    """Samples kept per class, int64 ``[C]``: the greedy policy's
    :func:`gold.selection.policies.keep_count` (``max(round_half_up(ratio * n_c),
    min_per_class, 1)``), at most ``n_c``.

    Raises:
      ValueError: ratio outside (0, 1].
    """
    from gold.selection.policies import keep_count

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    return np.array([min(keep_count(int(n), ratio, min_per_class), int(n)) for n in counts], np.int64)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown coreset method {method!r}; valid: {', '.join(METHODS)}")


def _class_order(method: str, inputs: CoresetInputs, members: np.ndarray, k: int, key: jax.Array,
                 *, gradients: str, val: Optional[np.ndarray], lam: float, eta: float,
                 kmeans_iters: int) -> np.ndarray:
    """Local indices (into ``members``) picked for one class, in pick order."""
    feats = np.asarray(inputs.features)[members]
    if method == "herding":
        return herding_order(feats, k)
    if method == "kmeans":
        return kmeans_select(feats, k, key, max_iter=kmeans_iters)
    errors = logit_errors(np.asarray(inputs.logits)[members], np.asarray(inputs.labels)[members])
    use_f = gradients == "last_layer"
    if method == "glister":
        labels = np.asarray(inputs.labels)
        return glister_order(feats, errors, np.asarray(inputs.features)[val], labels[val],
                             inputs.head_kernel, inputs.head_bias, k, eta=eta, use_features=use_f)
    gram = gradient_gram(errors, feats if use_f else None)
    if method == "craig":
        return craig_order(gram, k)
    return gradmatch_order(gram, k, lam=lam)


def _validation_indices(key: jax.Array, n: int, val_size: int) -> np.ndarray:
    size = min(int(val_size), n)
    return np.sort(np.asarray(jax.random.choice(key, n, (size,), replace=False), np.int64))


def coreset_select(
    method: str,
    inputs: CoresetInputs,
    num_classes: int,
    ratio: float,
    key: jax.Array,
    *,
    min_per_class: int = 1,
    gradients: str = "last_layer",
    val_size: int = 1000,
    lam: float = 0.5,
    eta: float = 0.01,
    kmeans_iters: int = 100,
) -> np.ndarray:
    """Class-wise coreset of a kept fraction ``ratio`` (paper Tables 14-15).

    Args:
      method: one of ``METHODS``.
      inputs: classifier outputs (:func:`classifier_outputs`).
      num_classes: C.
      ratio: kept fraction in (0, 1]; class c keeps ``class_budgets(...)[c]``.
      key: PRNG key (GLISTER's validation draw ``fold_in(key, C)``; K-means of class
        c ``fold_in(key, c)``).
      min_per_class: lower bound of every class budget (IPC for real init).
      gradients: ``last_layer`` (bias + kernel) or ``bias``.
      val_size: GLISTER validation samples (drawn uniformly from the training set).
      lam: GradMatch ridge weight. eta: GLISTER look-ahead step. kmeans_iters: Lloyd cap.

    Returns:
      Sorted int64 dataset indices.
    """
    _check_method(method)
    if gradients not in GRADIENTS:
        raise ValueError(f"unknown gradients {gradients!r}; valid: {', '.join(GRADIENTS)}")
    labels = np.asarray(inputs.labels)
    budgets = class_budgets(labels, num_classes, ratio, min_per_class)
    val = (_validation_indices(jax.random.fold_in(key, num_classes), len(labels), val_size)
           if method == "glister" else None)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if budgets[c] == 0:
            continue
        local = _class_order(method, inputs, members, int(budgets[c]), jax.random.fold_in(key, c),
                             gradients=gradients, val=val, lam=lam, eta=eta, kmeans_iters=kmeans_iters)
        picked.append(members[local])
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


def coreset_order_scores(
    method: str,
    inputs: CoresetInputs,
    num_classes: int,
    max_ratio: float,
    key: jax.Array,
    *,
    min_per_class: int = 1,
    gradients: str = "last_layer",
    val_size: int = 1000,
    lam: float = 0.5,
    eta: float = 0.01,
) -> np.ndarray:
    """Utility scores float32 ``[N]`` that reproduce a NESTED method by greedy selection.

    Each class is ordered up to its ``max_ratio`` budget; the sample picked t-th gets
    score ``-t`` (earlier = higher utility), unpicked samples get ``-n_c`` (ties below
    every pick). Greedy top-``ratio`` selection with these scores equals
    :func:`coreset_select` (same key and options) for every ``ratio <= max_ratio``.

    Raises:
      ValueError: ``kmeans`` (not nested) or an unknown method.
    """
    _check_method(method)
    if method not in NESTED:
        raise ValueError(f"{method!r} is not nested (a larger budget is a new clustering): "
                         "use coreset_select per ratio")
    if gradients not in GRADIENTS:
        raise ValueError(f"unknown gradients {gradients!r}; valid: {', '.join(GRADIENTS)}")
    labels = np.asarray(inputs.labels)
    budgets = class_budgets(labels, num_classes, max_ratio, min_per_class)
    val = (_validation_indices(jax.random.fold_in(key, num_classes), len(labels), val_size)
           if method == "glister" else None)
    scores = np.zeros(len(labels), np.float32)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        scores[members] = -float(len(members))
        if budgets[c] == 0:
            continue
        local = _class_order(method, inputs, members, int(budgets[c]), jax.random.fold_in(key, c),
                             gradients=gradients, val=val, lam=lam, eta=eta, kmeans_iters=100)
        scores[members[local]] = -np.arange(len(local), dtype=np.float32)
    return scores


# ------------------------------------------------------------------ the classifier
def classifier_outputs(model: Any, variables: Any, x: np.ndarray, labels: np.ndarray,
                       batch_size: int = 1000) -> CoresetInputs:
    """Head inputs and logits of a trained Flax classifier on ``x [N, H, W, C]``.

    Needs a model with ``embed(x)`` (penultimate features) and a dense ``head`` submodule
    (every ``gold.models`` network).
    """
    n = x.shape[0]
    bsz = min(batch_size, n)
    nb = math.ceil(n / bsz)
    pad = nb * bsz - n
    xp = jnp.asarray(x, jnp.float32)
    if pad:
        xp = jnp.concatenate([xp, jnp.zeros((pad, *xp.shape[1:]), xp.dtype)])

    @jax.jit
    def run(v, xs):
        def one(xb):
            return (model.apply(v, xb, train=False, method=lambda m, z, train: m.embed(z, train=train)),
                    model.apply(v, xb, train=False))
        return jax.lax.map(one, xs)

    feats, logits = run(variables, xp.reshape(nb, bsz, *xp.shape[1:]))
    head = variables["params"]["head"]
    return CoresetInputs(
        features=np.asarray(feats.reshape(nb * bsz, -1)[:n], np.float32),
        logits=np.asarray(logits.reshape(nb * bsz, -1)[:n], np.float32),
        labels=np.asarray(labels, np.int32),
        head_kernel=np.asarray(head["kernel"], np.float32),
        head_bias=np.asarray(head["bias"], np.float32),
    )


def train_classifier_outputs(dataset: Any, config: Any, key: jax.Array) -> CoresetInputs:
    """Train one classifier on ``dataset`` with the utility settings (trial 0 of the
    loss indicator's schedule, :func:`gold.utility.loss.train_trials`) and return its
    head inputs / logits on the training set.

    Args:
      dataset: :class:`gold.data.Dataset`.
      config: utility settings overriding the paper defaults of the dataset (trials is
        forced to 1; epochs, lr, batch_size, optimizer, ``model``, ...), or None.
      key: PRNG key of the training run.
    """
    from gold.utility import pipeline as upipe
    from gold.utility.loss import train_trials

    settings = upipe.resolve_settings(dataset.name, config)
    model = upipe.classifier(dataset, config)
    stats = train_trials(model, dataset.x_train, np.asarray(dataset.y_train, np.int32), key,
                         upipe.train_settings(settings, trials=1), log=None, keep_first=True)
    return classifier_outputs(model, stats.variables, dataset.x_train, np.asarray(dataset.y_train))


def coreset_utility(
    method: str,
    dataset: Any,
    config: Any,
    key: jax.Array,
    *,
    ratio: float,
    min_per_class: int = 1,
    inputs: Optional[CoresetInputs] = None,
) -> Any:
    """A coreset method as a :class:`gold.utility.Utility` for the greedy policy.

    NESTED methods: :func:`coreset_order_scores` up to the budget of ``ratio`` (greedy
    selection at any ratio <= ``ratio`` reproduces the method). ``kmeans``: score 0 for
    the samples :func:`coreset_select` keeps at exactly ``ratio``, -1 for the rest.

    Args:
      method: one of ``METHODS``.
      dataset: :class:`gold.data.Dataset`.
      config: utility/classifier settings (see :func:`train_classifier_outputs`) plus
        optional coreset fields ``gradients``, ``val_size``, ``lam``, ``eta``.
      key: PRNG key; sub-streams ``coreset.classifier`` and ``coreset.method`` (``gold.rng``).
      ratio: kept fraction (the largest one a sweep will ask for).
      min_per_class: lower bound of every class budget.
      inputs: precomputed classifier outputs (skips the training).
    """
    import time

    from gold.utility.artifact import Utility

    _check_method(method)
    start = time.time()
    if inputs is None:
        inputs = train_classifier_outputs(dataset, config, rng.substream(key, "coreset.classifier"))
    get = (lambda name, d: (config.get(name, d) if hasattr(config, "get") else d) if config is not None else d)
    opts = {"gradients": get("gradients", "last_layer"), "val_size": int(get("val_size", 1000)),
            "lam": float(get("lam", 0.5)), "eta": float(get("eta", 0.01))}
    c = int(dataset.num_classes)
    k_method = rng.substream(key, "coreset.method")
    if method in NESTED:
        scores = coreset_order_scores(method, inputs, c, ratio, k_method,
                                      min_per_class=min_per_class, **opts)
    else:
        keep = coreset_select(method, inputs, c, ratio, k_method, min_per_class=min_per_class,
                              **opts)
        scores = np.full(len(inputs.labels), -1.0, np.float32)
        scores[keep] = 0.0
    ids = getattr(dataset, "ids", None)
    n = len(inputs.labels)
    return Utility(scores=scores, labels=inputs.labels,
                   ids=np.arange(n) if ids is None else ids, indicator=method,
                   dataset=dataset.name, settings={**opts, "ratio": float(ratio),
                                                   "min_per_class": int(min_per_class)},
                   seconds=time.time() - start)


__all__ = [
    "CoresetInputs", "coreset_utility", "train_classifier_outputs", "GRADIENTS", "METHODS", "NESTED", "class_budgets", "classifier_outputs",
    "coreset_order_scores", "coreset_select", "craig_order", "facility_location_greedy",
    "facility_location_value", "glister_order", "gradient_embedding", "gradient_gram",
    "gradmatch_order", "herding_order", "kmeans_select", "logit_errors", "omp_order",
]
