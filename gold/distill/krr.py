"""Kernel ridge regression (KRR) of a real batch on the synthetic support set.

The one piece shared by the kernel / meta-gradient distillation methods (KIP, RFAD,
FRePo): given the kernel between support samples ``K_ss [S, S]``, between target
(real) samples and the support ``K_ts [T, S]`` and the support labels ``Y_s [S, K]``,
the predictions on the targets are

    ``K_ts (K_ss + lambda I)^-1 Y_s``,  ``lambda = reg * trace(K_ss) / S``

(the regulariser relative to the mean eigenvalue, as in the KIP reference
``loss_fn``: ``reg * trace(k_ss) * eye / n`` with reg 1e-6, and in RFAD's
``distillation.py``: ``jit * eye * trace(K_xx) / coreset_size``). Everything is
differentiable end to end (images -> kernel -> predictions -> loss).

Numerics. The system is solved by a Cholesky factorisation in float32 (the references
solve in float64; ``K_ss`` is symmetrised first). When the factorisation fails (a
non-finite factor: the regularised kernel is numerically not positive definite, e.g.
duplicated support images with a tiny ``reg``), it is retried once with a larger
ridge, ``(reg + jitter) * trace / S`` (``jitter`` 1e-4 by default): the fallback keeps
a run alive and is visible through :func:`krr_predict`'s ``return_info`` (the
algorithms log it as the metric ``krr_fallback``). The trial factorisation that takes
this decision carries no gradient, so gradients stay finite under ``jit``, ``grad``
and ``vmap``. If even that
fails, the predictions are NaN and the run loop's NaN guard stops; use
:func:`check_kernel` on the host to get the diagnosis (it names ``reg``, the setting
to raise).

Losses: :func:`mse_loss` (``0.5 * mean((pred - y)^2)``, KIP and RFAD references) and
:func:`platt_loss` (cross-entropy of temperature-scaled predictions,
``CE(exp(log_temperature) * pred, y)``, RFAD's Platt scaling with a learnable
``log_temperature`` initialised at 0, or a fixed one).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_REG: float = 1e-6      # KIP reference loss_fn(reg=1e-6)
DEFAULT_JITTER: float = 1e-4   # relative ridge added when the Cholesky factor fails


class KernelError(ValueError):
    """A support kernel that KRR cannot use (non-finite, not positive definite after
    regularisation); the message names the regulariser to raise."""


class KRRInfo(NamedTuple):
    """Diagnostics of one solve: ``ridge`` (the lambda used, float32 scalar) and
    ``fallback`` (float32 scalar, 1.0 when the jitter fallback was taken)."""

    ridge: jax.Array
    fallback: jax.Array


def ridge(k_ss: jax.Array, reg: float = DEFAULT_REG) -> jax.Array:
    """``lambda = reg * trace(K_ss) / S`` (float32 scalar)."""
    s = k_ss.shape[-1]
    return jnp.asarray(reg, jnp.float32) * jnp.trace(k_ss).astype(jnp.float32) / s


def _cholesky(a: jax.Array) -> jax.Array:
    return jnp.linalg.cholesky(a)


def krr_solve(k_ss: jax.Array, y_s: jax.Array, reg: float = DEFAULT_REG,
              jitter: float = DEFAULT_JITTER) -> tuple[jax.Array, KRRInfo]:
    """``alpha = (K_ss + lambda I)^-1 Y_s`` by Cholesky, float32, with the jitter fallback.

    Args:
      k_ss: ``[S, S]`` support kernel (symmetric positive semi-definite).
      y_s: ``[S, K]`` support labels (or ``[S]``).
      reg: relative regulariser (``lambda = reg * trace / S``).
      jitter: extra relative ridge of the fallback factorisation.

    Returns:
      ``alpha`` (same shape as ``y_s``) and :class:`KRRInfo`.
    """
    k_ss = k_ss.astype(jnp.float32)
    s = k_ss.shape[-1]
    a = 0.5 * (k_ss + k_ss.T)
    lam = ridge(a, reg)
    eye = jnp.eye(s, dtype=jnp.float32)
    mean_eig = jnp.trace(a) / s
    # Trial factorisation without gradient: it only decides the ridge, so a failed
    # factor (NaN) never meets a cotangent (NaN * 0 would poison the gradient, also
    # under vmap where a cond becomes a select). One differentiable factorisation.
    trial = _cholesky(jax.lax.stop_gradient(a + lam * eye))
    ok = jnp.all(jnp.isfinite(trial))
    used = jnp.where(ok, lam, lam + jitter * mean_eig)
    chol = _cholesky(a + used * eye)
    alpha = jax.scipy.linalg.cho_solve((chol, True), y_s.astype(jnp.float32))
    return alpha, KRRInfo(used, 1.0 - ok.astype(jnp.float32))


def krr_predict(k_ts: jax.Array, k_ss: jax.Array, y_s: jax.Array, reg: float = DEFAULT_REG,
                jitter: float = DEFAULT_JITTER, return_info: bool = False):
    """KRR predictions ``K_ts (K_ss + lambda I)^-1 Y_s`` of the targets, ``[T, K]``.

    Args:
      k_ts: ``[T, S]`` target-support kernel.
      k_ss: ``[S, S]`` support kernel.
      y_s: ``[S, K]`` support labels.
      reg: relative regulariser (``lambda = reg * trace(K_ss) / S``; KIP 1e-6).
      jitter: extra relative ridge when the first Cholesky factor is not finite.
      return_info: also return :class:`KRRInfo`.
    """
    alpha, info = krr_solve(k_ss, y_s, reg, jitter)
    pred = k_ts.astype(jnp.float32) @ alpha
    return (pred, info) if return_info else pred


# ------------------------------------------------------------------------- losses
def _weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(values)
    w = weights.astype(jnp.float32)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def mse_loss(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """``0.5 * mean((pred - target)^2)`` over every entry (KIP / RFAD references).

    ``target``: float ``[T, K]`` regression targets (one-hot, centred one-hot, ...);
    ``weights``: optional ``[T]`` row weights (0 = a padding repeat of a small class,
    ``common.real_class_batch``): the mean runs over the weighted rows.
    """
    return 0.5 * _weighted_mean(jnp.mean(jnp.square(pred - target), axis=-1), weights)


def platt_loss(pred: jax.Array, labels: jax.Array, log_temperature: jax.Array | float = 0.0,
               weights: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy of ``exp(log_temperature) * pred`` (RFAD's Platt scaling).

    Args:
      pred: ``[T, K]`` KRR predictions.
      labels: int ``[T]`` classes, or float ``[T, K]`` (one-hot, possibly centred: the
        class is its argmax).
      log_temperature: the log of the scale (RFAD learns it, initialised at 0); a
        Python float for a fixed temperature.
      weights: optional ``[T]`` row weights (see :func:`mse_loss`).
    """
    if labels.ndim == pred.ndim:
        labels = jnp.argmax(labels, axis=-1)
    logits = jnp.exp(jnp.asarray(log_temperature, jnp.float32)) * pred
    return _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weights)


def accuracy(pred: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Fraction of targets whose argmax prediction is their class (float32 scalar)."""
    if labels.ndim == pred.ndim:
        labels = jnp.argmax(labels, axis=-1)
    return _weighted_mean((jnp.argmax(pred, axis=-1) == labels).astype(jnp.float32), weights)


def one_hot_targets(labels: jax.Array, num_classes: int, center: bool = False,
                    scale: float = 1.0) -> jax.Array:
    """float32 ``[T, K]``: ``scale * one_hot`` of int labels, minus ``scale / K`` when
    ``center`` (RFAD: ``one_hot - 1/n_classes``)."""
    y = scale * jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return y - scale / num_classes if center else y


# ------------------------------------------------------------------- diagnostics
def check_support_size(real, ipc: int) -> None:
    """ValueError when the support set (``ipc`` per class) is larger than what a class
    keeps after selection: KRR would regress the real data on more support points
    than there are data. ``real``: ``gold.distill.common.RealData``."""
    counts = np.asarray(real.class_counts())
    small = [c for c, n in enumerate(counts) if n < ipc]
    if small:
        raise ValueError(
            f"the support set ({ipc} per class) is larger than the kept data of class(es) {small} "
            f"({[int(counts[c]) for c in small]} samples); lower ipc or raise selection.ratio")


def check_kernel(k_ss, reg: float = DEFAULT_REG, name: str = "reg") -> dict:
    """Host check of a support kernel: finite, symmetric, positive definite after
    the ridge. Returns ``{'min_eig', 'max_eig', 'ridge', 'condition'}`` (float64).

    Raises:
      KernelError: non-finite entries, or ``K_ss + lambda I`` not positive definite in
        float32 (its smallest eigenvalue <= float32 rounding of the largest); the
        message says to raise ``name`` (the setting holding ``reg``).
    """
    k = np.asarray(k_ss, np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise KernelError(f"the support kernel must be square [S, S], got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise KernelError(
            "the support kernel has non-finite entries (NaN/inf features: diverged synthetic "
            "images or an overflowing network); lower the image learning rate")
    k = 0.5 * (k + k.T)
    s = k.shape[0]
    lam = reg * np.trace(k) / s
    eig = np.linalg.eigvalsh(k + lam * np.eye(s))
    lo, hi = float(eig[0]), float(eig[-1])
    info = {"min_eig": lo, "max_eig": hi, "ridge": lam,
            "condition": hi / lo if lo > 0 else float("inf")}
    if not lo > 8 * np.finfo(np.float32).eps * max(abs(hi), 1e-30):
        raise KernelError(
            f"K_ss + lambda I is not positive definite in float32 (smallest eigenvalue {lo:.3g}, "
            f"largest {hi:.3g}, lambda = {name} * trace / S = {lam:.3g}); raise {name} "
            f"(currently {reg:g}, e.g. to {max(reg * 100, 1e-4):g}) or remove duplicate support samples")
    return info


__all__ = ["DEFAULT_JITTER", "DEFAULT_REG", "KRRInfo", "KernelError", "accuracy", "check_kernel",
           "check_support_size",
           "krr_predict", "krr_solve", "mse_loss", "one_hot_targets", "platt_loss", "ridge"]
