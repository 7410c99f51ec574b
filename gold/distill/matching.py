"""Matching distances shared by the distillation algorithms.

Gradient matching (DC / DSA, later IDC) compares two gradient pytrees with the same
structure (the gradient of a loss on real images and on synthetic images w.r.t. the
same network parameters); distribution matching (DM, CAFE, later IDM) compares mean
embeddings per class (CAFE at several layers, :func:`layered_mean_distance`, plus
:func:`mean_embedding_discrimination`).

Layout: Flax conv kernels are ``(H, W, I, O)`` and dense kernels ``(I, O)``; the
PyTorch references store them as ``(O, I, H, W)`` and ``(O, I)`` and their distance
``distance_wb`` groups the entries by OUTPUT channel (the first PyTorch axis). Here
the output channel is the LAST axis, so every leaf is reshaped to
``(leaf.shape[-1], -1)`` after moving that axis first. Within a row the order of
the entries does not matter (a cosine is permutation invariant), so this equals the
reference on the transposed arrays exactly.

Distances (``metric``):

* ``ours`` (reference ``distance_wb`` summed over layers): for each leaf with
  ``ndim >= 2`` and each output channel ``o``,
  ``1 - <gr_o, gs_o> / (||gr_o|| ||gs_o|| + 1e-6)``, summed over channels and leaves;
  1-D leaves (biases, norm scales) contribute 0.
* ``mse``: ``sum((gs - gr)^2)`` over every entry of every leaf.
* ``cos``: ``1 - <gr, gs> / (||gr|| ||gs|| + 1e-6)`` on all leaves flattened and
  concatenated.
* ``l1``: ``sum(|gs - gr|)`` (IDC on MNIST uses an L1 gradient distance).

All functions are pure, jittable and differentiable w.r.t. either argument, also
where a gradient row is exactly zero (a dead ReLU channel): the norm used here has
gradient 0 at 0 (PyTorch's ``torch.norm`` backward behaves the same way) instead of
JAX's NaN.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

PyTree = Any

METRICS: tuple[str, ...] = ("ours", "mse", "cos", "l1")
"""Valid ``metric`` names of :func:`gradient_distance`."""

COS_EPS = 1e-6
"""The reference's ``+ 0.000001`` in the cosine denominator."""


def safe_norm(x: jax.Array, axis: Optional[int | tuple[int, ...]] = None) -> jax.Array:
    """Euclidean norm along ``axis`` whose gradient is 0 (not NaN) where the norm is 0."""
    sq = jnp.sum(jnp.square(x), axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def output_channel_rows(g: jax.Array) -> jax.Array:
    """Flax-layout gradient ``[..., O]`` -> ``[O, prod(...)]`` (output channel first).

    ``(H, W, I, O) -> (O, H*W*I)``, ``(I, O) -> (O, I)``, ``(H, W, C) -> (C, H*W)``.
    """
    return jnp.moveaxis(g, -1, 0).reshape(g.shape[-1], -1)


def layer_distance_ours(g_real: jax.Array, g_syn: jax.Array) -> jax.Array:
    """Reference ``distance_wb`` for one Flax-layout leaf: scalar float32.

    Sum over output channels of ``1 - cos``; 0 for leaves with ``ndim <= 1``.
    """
    if g_real.shape != g_syn.shape:
        raise ValueError(f"gradient shapes differ: {g_real.shape} vs {g_syn.shape}")
    if g_real.ndim <= 1:
        return jnp.zeros((), jnp.float32)
    gr = output_channel_rows(g_real)
    gs = output_channel_rows(g_syn)
    dots = jnp.sum(gr * gs, axis=-1)
    denom = safe_norm(gr, axis=-1) * safe_norm(gs, axis=-1) + COS_EPS
    return jnp.sum(1.0 - dots / denom)


def _flat(tree: PyTree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _check_same_structure(g_real: PyTree, g_syn: PyTree) -> None:
    s_real, s_syn = jax.tree.structure(g_real), jax.tree.structure(g_syn)
    if s_real != s_syn:
        raise ValueError(f"gradient pytrees differ in structure: {s_real} vs {s_syn}")


def gradient_distance(
    g_real: PyTree,
    g_syn: PyTree,
    metric: str = "ours",
    leaf_filter: Optional[Callable[[tuple, jax.Array], bool]] = None,
) -> jax.Array:
    """Distance between two gradient pytrees of the same structure: scalar float32.

    Args:
      g_real: gradient on real data (treated as a constant by the caller: wrap it in
        ``jax.lax.stop_gradient`` if it depends on differentiated inputs).
      g_syn: gradient on synthetic data, same structure and leaf shapes.
      metric: ``ours`` | ``mse`` | ``cos`` | ``l1`` (see the module docstring).
      leaf_filter: optional ``(path, leaf) -> bool``; only leaves where it is True
        enter the distance (e.g. IDC matches conv kernels only).

    Returns:
      The distance (0 for identical gradients with ``mse`` / ``l1``; ``ours`` of
      identical gradients is ~0 per matched row).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown matching metric {metric!r}; valid: {METRICS}")
    _check_same_structure(g_real, g_syn)
    if leaf_filter is not None:
        paths = jax.tree_util.tree_flatten_with_path(g_real)[0]
        keep = [leaf_filter(path, leaf) for path, leaf in paths]
        real_leaves = [l for (p, l), k in zip(paths, keep) if k]
        syn_leaves = [l for l, k in zip(jax.tree.leaves(g_syn), keep) if k]
    else:
        real_leaves, syn_leaves = jax.tree.leaves(g_real), jax.tree.leaves(g_syn)
    if not real_leaves:
        return jnp.zeros((), jnp.float32)
    if metric == "ours":
        return sum(layer_distance_ours(r, s) for r, s in zip(real_leaves, syn_leaves))
    gr, gs = _flat(real_leaves), _flat(syn_leaves)
    if metric == "mse":
        return jnp.sum(jnp.square(gs - gr))
    if metric == "l1":
        return jnp.sum(jnp.abs(gs - gr))
    return 1.0 - jnp.sum(gr * gs) / (safe_norm(gr) * safe_norm(gs) + COS_EPS)


def weighted_mean(x: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
    """Mean over the leading axis, ``x [B, ...]``; with ``weights [B]`` the weighted
    mean ``sum(w x) / sum(w)`` (entries with weight 0, e.g. padding, drop out)."""
    if weights is None:
        return jnp.mean(x, axis=0)
    w = weights.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.sum(w * x, axis=0) / jnp.maximum(jnp.sum(w), 1e-12)


def mean_embedding_distance(
    emb_real: jax.Array,
    emb_syn: jax.Array,
    real_weights: Optional[jax.Array] = None,
) -> jax.Array:
    """DM loss: ``sum_c ||mean_b emb_real[c] - mean_j emb_syn[c]||^2``, scalar.

    Args:
      emb_real: ``[C, B, F]`` embeddings of a real batch per class (or ``[B, F]`` for
        one class).
      emb_syn: ``[C, M, F]`` embeddings of the synthetic images per class (``[M, F]``).
      real_weights: optional ``[C, B]`` (``[B]``) weights of the real entries, 0 for
        padding when a class has fewer than ``B`` samples.
    """
    if emb_real.ndim == 2:
        emb_real, emb_syn = emb_real[None], emb_syn[None]
        real_weights = None if real_weights is None else real_weights[None]
    if emb_real.shape[0] != emb_syn.shape[0] or emb_real.shape[-1] != emb_syn.shape[-1]:
        raise ValueError(f"embedding shapes do not match: {emb_real.shape} vs {emb_syn.shape}")
    if real_weights is None:
        mean_real = jnp.mean(emb_real, axis=1)
    else:
        w = real_weights.astype(emb_real.dtype)
        mean_real = jnp.einsum("cb,cbf->cf", w, emb_real) / jnp.maximum(
            jnp.sum(w, axis=1, keepdims=True), 1e-12)
    mean_syn = jnp.mean(emb_syn, axis=1)
    return jnp.sum(jnp.square(mean_real - mean_syn))


def layered_mean_distance(
    real_layers: list[jax.Array],
    syn_layers: list[jax.Array],
    layer_weights: tuple[float, ...],
    real_weights: Optional[jax.Array] = None,
) -> jax.Array:
    """CAFE's multi-layer alignment: ``sum_l w_l * mean_embedding_distance(layer l)``.

    Args:
      real_layers: per layer ``[C, B, ...]`` features of a real batch per class (each
        sample's features are flattened).
      syn_layers: per layer ``[C, M, ...]`` features of the synthetic images per class.
      layer_weights: one weight per layer.
      real_weights: optional ``[C, B]`` weights of the real entries (0 = padding).

    Returns:
      Scalar: the weighted sum over layers of ``sum_c ||class mean real - class mean
      syn||^2`` (the reference's ``MSELoss(reduction='sum')`` of the class means).
    """
    if not len(real_layers) == len(syn_layers) == len(layer_weights):
        raise ValueError(f"{len(real_layers)} real layers, {len(syn_layers)} synthetic layers and "
                         f"{len(layer_weights)} weights must be as many")
    total = jnp.zeros((), jnp.float32)
    for fr, fs, w in zip(real_layers, syn_layers, layer_weights):
        dist = mean_embedding_distance(fr.reshape(*fr.shape[:2], -1), fs.reshape(*fs.shape[:2], -1), real_weights)
        total = total + w * dist
    return total


def mean_embedding_discrimination(
    emb_real: jax.Array,
    emb_syn: jax.Array,
    real_weights: Optional[jax.Array] = None,
) -> jax.Array:
    """CAFE's discrimination term: the summed cross-entropy of every real embedding
    classified by its inner products with the class-mean synthetic embeddings.

    ``logits[c, b] = emb_real[c, b] @ mean_j(emb_syn)^T`` (``[C]`` logits), loss
    ``sum_{c, b} w[c, b] * CE(logits[c, b], c)`` (the reference's
    ``CrossEntropyLoss(reduction='sum')``; weights 1 without ``real_weights``).

    Args:
      emb_real: ``[C, B, F]`` real embeddings per class.
      emb_syn: ``[C, M, F]`` synthetic embeddings per class.
      real_weights: optional ``[C, B]`` (0 = padding).
    """
    if emb_real.ndim != 3 or emb_syn.ndim != 3 or emb_real.shape[::2] != emb_syn.shape[::2]:
        raise ValueError(f"embedding shapes do not match: {emb_real.shape} vs {emb_syn.shape}")
    centers = jnp.mean(emb_syn, axis=1)                            # [C, F]
    logits = jnp.einsum("cbf,kf->cbk", emb_real, centers)          # [C, B, C]
    logp = jax.nn.log_softmax(logits, axis=-1)
    c = emb_real.shape[0]
    ce = -jnp.take_along_axis(logp, jnp.arange(c)[:, None, None], axis=-1)[..., 0]  # [C, B]
    if real_weights is not None:
        ce = ce * real_weights.astype(ce.dtype)
    return jnp.sum(ce)


__all__ = [
    "COS_EPS", "METRICS", "gradient_distance", "layer_distance_ours", "layered_mean_distance",
    "mean_embedding_discrimination", "mean_embedding_distance", "output_channel_rows", "safe_norm",
    "weighted_mean",
]
