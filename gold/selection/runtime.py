"""Runtime pruning of a real batch (paper 5.1, Code 1), pure and jittable.

Paper Code 1 (PyTorch)::

    probability = torch.softmax(-loss_real / tau)
    selected_id = torch.multinomial(probability, sample_ratio * B)   # no replacement

``torch.multinomial`` without replacement draws sequentially, each draw from the
remaining entries renormalised. That is exactly the Plackett-Luce distribution, which the
Gumbel top-k trick samples in one shot: with ``g_i ~ Gumbel(0, 1)`` i.i.d., the indices
of the ``k`` largest ``-loss_i / tau + g_i`` (in decreasing order) are distributed as k
sequential draws without replacement from ``softmax(-loss / tau)`` (Kool et al., 2019).
So low-loss samples are kept more often, and as ``tau -> inf`` the draw becomes a
uniformly random k-subset.

``k = max(1, round_half_up(keep_ratio * B))`` is static (``keep_ratio`` and ``B`` must
be Python / static values under ``jit``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def runtime_keep_count(batch_size: int, keep_ratio: float) -> int:
    """``k = max(1, floor(keep_ratio * B + 0.5))``, at most B."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return min(batch_size, max(1, int(math.floor(keep_ratio * batch_size + 0.5))))


def runtime_prune_indices(key: jax.Array, losses: jax.Array, keep_ratio: float, tau: float) -> jax.Array:
    """Indices int32 ``[k]`` of the kept batch entries, drawn without replacement with
    probabilities ``softmax(-losses / tau)`` (in draw order).

    Args:
      key: PRNG key.
      losses: float ``[B]`` per-sample losses of the real batch (gradients are stopped).
      keep_ratio: static kept fraction in (0, 1].
      tau: temperature > 0 (may be traced).
    """
    k = runtime_keep_count(losses.shape[0], keep_ratio)
    logits = -jax.lax.stop_gradient(losses).astype(jnp.float32) / tau
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    _, idx = jax.lax.top_k(logits + g, k)
    return idx.astype(jnp.int32)


def runtime_prune_weights(key: jax.Array, losses: jax.Array, keep_ratio: float, tau: float) -> jax.Array:
    """Weights float32 ``[B]``: ``1/k`` on the kept entries, 0 elsewhere, so
    ``sum(w * loss)`` is the mean loss of the kept entries (and its gradient too)."""
    idx = runtime_prune_indices(key, losses, keep_ratio, tau)
    k = idx.shape[0]
    return jnp.zeros(losses.shape[0], jnp.float32).at[idx].set(1.0 / k)


__all__ = ["runtime_keep_count", "runtime_prune_indices", "runtime_prune_weights"]
