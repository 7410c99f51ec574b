"""Shared building blocks: PyTorch-initialised dense/conv layers, norms, activations.

Initialisation follows PyTorch's defaults (the reference implementations are PyTorch):
weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norm scales 1, biases 0.
BatchNorm uses PyTorch's momentum 0.1 (Flax ``momentum=0.9``) and eps 1e-5; note that
Flax keeps the *biased* batch variance in ``batch_stats`` (PyTorch keeps the unbiased
one; the difference is a factor N/(N-1) on the running variance only).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from gold.models.conv import FastConv, torch_uniform_init

NORMS: tuple[str, ...] = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS: tuple[str, ...] = ("relu", "sigmoid", "leakyrelu", "swish")
POOLINGS: tuple[str, ...] = ("avgpooling", "maxpooling", "none")
NORM_EPS = 1e-5


class Dense(nn.Module):
    """Linear layer [..., I] -> [..., features], PyTorch ``nn.Linear`` init.

    Params ``kernel`` [I, features] and ``bias`` [features] (Flax names/layout).
    """

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = torch_uniform_init(x.shape[-1])
        kernel = self.param("kernel", init, (x.shape[-1], self.features))
        y = jnp.matmul(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", init, (self.features,)).astype(y.dtype)
        return y


class StridedConv(nn.Module):
    """Strided conv (XLA), PyTorch init and explicit symmetric padding.

    [N, H, W, C] -> [N, (H + 2p - k) // s + 1, ..., features]. Params ``kernel`` [k,k,C,O]
    (+ ``bias``). Used where stride > 1 (ResNet); stride-1 convs use ``FastConv``.
    """

    features: int
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel_size, x.shape[-1]
        init = torch_uniform_init(c * k * k)
        kernel = self.param("kernel", init, (k, k, c, self.features))
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (self.stride, self.stride), ((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", init, (self.features,)).astype(y.dtype)
        return y


class InstanceNorm(nn.Module):
    """Per-sample, per-channel normalisation over (H, W) with per-channel affine.

    Equals PyTorch ``nn.GroupNorm(C, C, affine=True)`` (the reference 'instancenorm'):
    y = (x - mean_hw) / sqrt(var_hw + eps) * scale + bias. x [..., H, W, C] -> same.
    Params ``scale`` [C] (init 1) and ``bias`` [C] (init 0), as Flax's GroupNorm.
    Uses the centred two-pass variance.
    """

    epsilon: float = NORM_EPS

    @nn.compact
    def __call__(self, x: jax.Array, affine_only: bool = False):
        """The normalised ``x``; with ``affine_only=True`` only the parameters ``(scale,
        bias)`` for ``x``'s channels (a layer that computes the norm itself:
        ``FastConv(..., instance_norm=...)``)."""
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        if affine_only:
            return scale, bias
        mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
        xc = x - mean
        var = jnp.mean(jnp.square(xc), axis=(-3, -2), keepdims=True)
        return xc * jax.lax.rsqrt(var + self.epsilon) * scale.astype(x.dtype) + bias.astype(x.dtype)


def make_norm(kind: str) -> nn.Module | None:
    """Norm layer for NHWC feature maps, or None for 'none'.

    'instancenorm': ``InstanceNorm`` (= GroupNorm(C, C)); 'batchnorm': BatchNorm over
    (N, H, W) with running stats in ``batch_stats``; 'layernorm': per-sample over
    (H, W, C) with element-wise affine over (H, W, C) (= the reference's
    ``nn.LayerNorm([C, H, W])``); 'groupnorm': GroupNorm with 4 groups (reference).
    """
    if kind == "instancenorm":
        return InstanceNorm()
    if kind == "batchnorm":
        return nn.BatchNorm(momentum=0.9, epsilon=NORM_EPS)
    if kind == "layernorm":
        return nn.LayerNorm(epsilon=NORM_EPS, reduction_axes=(-3, -2, -1),
                            feature_axes=(-3, -2, -1))
    if kind == "groupnorm":
        return nn.GroupNorm(num_groups=4, epsilon=NORM_EPS)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}; valid: {NORMS}")


def cancels_conv_bias(kind: str) -> bool:
    """True if norm ``kind`` subtracts every per-channel constant of its input, so a
    conv bias right before it has no effect (only 'instancenorm'; BatchNorm does so
    only in training mode, group/layer norms only per group)."""
    return kind == "instancenorm"


def apply_norm(norm: nn.Module | None, x: jax.Array, train: bool) -> jax.Array:
    """Apply a ``make_norm`` layer (BatchNorm gets ``use_running_average=not train``)."""
    if norm is None:
        return x
    if isinstance(norm, nn.BatchNorm):
        return norm(x, use_running_average=not train)
    return norm(x)


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """'relu' | 'sigmoid' | 'leakyrelu' (slope 0.01) | 'swish' -> elementwise fn."""
    acts = {"relu": nn.relu, "sigmoid": nn.sigmoid,
            "leakyrelu": lambda x: nn.leaky_relu(x, 0.01), "swish": nn.swish}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; valid: {ACTS}")
    return acts[name]


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 / stride-2 pooling of [..., H, W, C] ('avgpooling' | 'maxpooling' | 'none').

    Odd trailing rows/columns are dropped (PyTorch floor mode). Written as four
    strided slices combined elementwise: on XLA:CPU this runs 3x faster than a
    reshape + reduction and its gradient 2x faster (256x32x32x128, instance norm +
    ReLU + pool, forward + backward: 215 ms vs 395 ms; ``reduce_window`` 265 ms).
    """
    if kind == "none":
        return x
    if kind not in ("avgpooling", "maxpooling"):
        raise ValueError(f"unknown pooling {kind!r}; valid: {POOLINGS}")
    h2, w2 = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
    corners = [x[..., i:h2:2, j:w2:2, :] for i in (0, 1) for j in (0, 1)]
    if kind == "avgpooling":
        return (corners[0] + corners[1] + corners[2] + corners[3]) * jnp.asarray(0.25, x.dtype)
    return jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))


def check_choice(value: str, valid: tuple[str, ...], what: str) -> None:
    """Raise ValueError if ``value`` is not one of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {valid}")


__all__ = ["Dense", "FastConv", "StridedConv", "InstanceNorm", "make_norm", "apply_norm",
           "cancels_conv_bias",
           "get_activation", "pool2x2", "NORMS", "ACTS", "POOLINGS"]
