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

``k = max(1, round_half_up(keep_ratio * n))`` counts the VALID entries ``n`` of the
batch: a padded batch (entries repeated to fill a fixed shape, ``mask`` 0) of B = 16 with
10 valid entries and ``keep_ratio = 0.7`` keeps 7. ``keep_ratio`` and B are static; ``n``
may be traced (the count is read from a static table of ``k`` for every ``n <= B``, and
the kept entries are those whose perturbed-score rank is below ``k``).
"""

from __future__ import annotations

import math
from typing import Optional

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


def runtime_prune_weights(key: jax.Array, losses: jax.Array, keep_ratio: float, tau: float,
                          mask: Optional[jax.Array] = None) -> jax.Array:
    """Weights float32 ``[B]``: ``1/k`` on the kept entries, 0 elsewhere, so
    ``sum(w * loss)`` is the mean loss of the kept entries (and its gradient too).

    Args:
      key: PRNG key.
      losses: float ``[B]`` per-sample losses (gradients are stopped).
      keep_ratio: static kept fraction in (0, 1].
      tau: temperature > 0 (may be traced).
      mask: optional ``[B]`` validity (nonzero = a real entry, 0 = padding; may be
        traced). The draw is among the ``n`` valid entries only, with probabilities
        ``softmax(-losses / tau)`` over them, and keeps ``runtime_keep_count(n,
        keep_ratio)`` of them (none when ``n = 0``).
    """
    b = losses.shape[0]
    valid = jnp.ones(b, bool) if mask is None else jnp.asarray(mask) > 0
    counts = jnp.asarray([0] + [runtime_keep_count(n, keep_ratio) for n in range(1, b + 1)], jnp.int32)
    k = counts[jnp.sum(valid)]
    logits = -jax.lax.stop_gradient(losses).astype(jnp.float32) / tau
    score = jnp.where(valid, logits + jax.random.gumbel(key, (b,), jnp.float32), -jnp.inf)
    rank = jnp.zeros(b, jnp.int32).at[jnp.argsort(-score)].set(jnp.arange(b, dtype=jnp.int32))
    kept = (rank < k) & valid
    return jnp.where(kept, 1.0 / jnp.maximum(k, 1).astype(jnp.float32), 0.0)


__all__ = ["runtime_keep_count", "runtime_prune_indices", "runtime_prune_weights"]
