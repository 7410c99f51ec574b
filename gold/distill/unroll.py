"""Differentiable unrolled SGD: the inner loop of MTT, HaBa and LinBa.

A student network is trained for ``T`` SGD steps (optionally with momentum and weight
decay, PyTorch semantics) from given parameters, and the result is differentiated
w.r.t. everything the steps depend on: the data the step losses read (synthetic
images, bases, hallucinators ...) and the learning rate, which may itself be a traced,
learnable scalar (MTT's synthetic lr).

The steps are a ``lax.scan``; with ``remat=True`` each step is wrapped in
``jax.checkpoint``, so the backward pass keeps only the per-step carry (parameters and
momentum buffer: ``O(T * P)`` floats) and recomputes a step's activations when it is
differentiated, instead of storing all ``T`` steps' activations. Memory is then nearly
flat in ``T`` (bench/bench_mtt.py measures it), for about one extra forward+backward
per step.

Parameters may be any pytree; MTT uses one flat vector (see :func:`flatten_params`),
so that ``theta_start``, ``theta_end`` and the expert targets are plain ``[P]`` arrays.

Semantics of one step (``g = grad step_loss(theta_t, batch_t)``)::

    g   <- g + weight_decay * theta_t
    buf <- momentum * buf + g          (buf_0 = 0, so buf_1 = g as in torch.optim.SGD)
    theta_{t+1} <- theta_t - lr * buf  (lr: scalar or a pytree matching theta)

With ``momentum == 0`` and ``weight_decay == 0`` this is ``theta - lr * g``, the MTT
reference's student update.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Params = Any  # a pytree of float arrays
StepLoss = Callable[[Params, Any], jax.Array]  # (params, batch_t) -> scalar loss


class UnrollResult(NamedTuple):
    """Output of :func:`unroll`.

    Attributes:
      params: parameters after the last step (same structure as the input).
      losses: float32 ``[T]``, the step loss at each step (before its update).
      trajectory: parameters after every step, each leaf ``[T, ...]`` (None unless
        ``return_trajectory=True``; costs ``T`` copies of the parameters).
    """

    params: Params
    losses: jax.Array
    trajectory: Optional[Params]


def sgd_update(
    params: Params,
    grads: Params,
    buf: Params,
    lr: jax.Array | float | Params,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[Params, Params]:
    """One PyTorch-style SGD step; differentiable w.r.t. every argument.

    Args:
      params, grads, buf: pytrees of the same structure (``buf``: momentum buffer).
      lr: scalar (python float or traced array) or a pytree matching ``params``
        (per-leaf learning rates).
      momentum, weight_decay: static floats.

    Returns:
      (new params, new momentum buffer).
    """
    if weight_decay:
        grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    if momentum:
        buf = jax.tree.map(lambda b, g: momentum * b + g, buf, grads)
    else:
        buf = grads
    if isinstance(lr, (int, float)) or (hasattr(lr, "ndim") and lr.ndim == 0):
        new = jax.tree.map(lambda p, b: p - (lr * b).astype(p.dtype), params, buf)
    else:
        new = jax.tree.map(lambda p, b, r: p - (r * b).astype(p.dtype), params, buf, lr)
    return new, buf


def unroll(
    step_loss: StepLoss,
    params: Params,
    lr: jax.Array | float | Params,
    batches: Any,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    remat: bool = True,
    return_trajectory: bool = False,
) -> UnrollResult:
    """Run ``T`` differentiable SGD steps as one ``lax.scan``.

    Args:
      step_loss: ``(params, batch_t) -> scalar`` loss of one step. It may close over
        traced values (e.g. the synthetic images): gradients of the result flow to
        them through every step.
      params: initial parameters (pytree; e.g. a flat ``[P]`` vector).
      lr: learning rate: python float, traced scalar (learnable), or a pytree of
        per-leaf rates.
      batches: pytree whose leaves have a leading axis ``T`` (scanned over); step t
        receives ``tree_map(lambda a: a[t], batches)`` (e.g. minibatch indices and an
        augmentation key per step).
      momentum, weight_decay: PyTorch SGD semantics (see module docstring).
      remat: wrap each step in ``jax.checkpoint`` (memory ~flat in T).
      return_trajectory: also return the parameters after every step.

    Returns:
      :class:`UnrollResult` (final params, per-step losses ``[T]``, optional
      trajectory).
    """

    def body(carry, batch):
        theta, buf = carry
        loss, grads = jax.value_and_grad(step_loss)(theta, batch)
        theta, buf = sgd_update(theta, grads, buf, lr, momentum, weight_decay)
        out = (loss, theta) if return_trajectory else (loss, None)
        return (theta, buf), out

    if remat:
        body = jax.checkpoint(body, prevent_cse=False)
    buf0 = jax.tree.map(jnp.zeros_like, params)
    (theta, _), (losses, traj) = jax.lax.scan(body, (params, buf0), batches)
    return UnrollResult(theta, losses, traj)


# ------------------------------------------------------------------- flat parameters
def flatten_params(params: Params) -> tuple[jax.Array, Callable[[jax.Array], Params]]:
    """``ravel_pytree``: one float ``[P]`` vector and the function that unflattens it.

    The order is the (sorted-key) leaf order of the Flax parameter dict, identical for
    every network of the same architecture, so flat vectors of different networks
    (experts, students) are comparable entry by entry.
    """
    flat, unravel = ravel_pytree(params)
    return flat, unravel


def flat_apply_fn(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[Callable[[jax.Array, jax.Array, bool], jax.Array], int]:
    """A functional ``(flat_params [P], x [B, *input_shape], train) -> logits [B, K]``.

    Only for models whose variables are ``params`` alone (no ``batch_stats``): a
    student unrolled from an expert's flat parameters has no running statistics.

    Returns:
      (apply function, P = number of parameters).

    Raises:
      ValueError: if the model keeps other variable collections (e.g. BatchNorm).
    """
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape), jnp.float32), train=False)
    )
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ValueError(
            f"trajectory matching needs a model whose only variables are 'params'; "
            f"{type(model).__name__} also has {extra} (use an instance-norm / no-BN model, "
            f"e.g. model.norm='instancenorm')"
        )
    like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables["params"])
    flat_like, unravel = ravel_pytree(like)

    def apply(flat: jax.Array, x: jax.Array, train: bool = True) -> jax.Array:
        return model.apply({"params": unravel(flat)}, x, train=train)

    return apply, int(flat_like.shape[0])


__all__ = ["Params", "StepLoss", "UnrollResult", "flat_apply_fn", "flatten_params", "sgd_update", "unroll"]
