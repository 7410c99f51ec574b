"""Stride-1 2-D convolution with a fast CPU weight gradient (``jax.custom_vjp``).

XLA's CPU backend computes the *weight* gradient of a convolution ~3x slower than
the matmul roof (see ``/work/shared/PERFORMANCE_NOTES.md``). This module defines a
stride-1 convolution whose

* forward pass is ``lax.conv_general_dilated`` (XLA's, already fast),
* input gradient is again a stride-1 convolution of the output cotangent with the
  spatially flipped, in/out-swapped kernel (what XLA itself emits),
* weight gradient is ``kh * kw`` plain 2-D matmuls over shifted windows of the padded
  input: ``dw[i, j] = (dy.reshape(-1, O).T @ xp[:, i:i+Ho, j:j+Wo, :].reshape(-1, C)).T``.

Both backward pieces are themselves ``custom_vjp`` functions whose backward rules
are written with the same two primitives (the set {conv, weight-grad} is closed
under differentiation), so the function can be differentiated any number of times
in *reverse* mode (gradient matching needs grad-of-grad w.r.t. the images), under
``jax.vmap``, ``jax.jit``, ``jax.checkpoint`` and ``lax.scan``.

Under ``jax.vmap`` over networks (batched kernels) the convolutions run as a
``lax.map`` over the networks instead of JAX's default grouped convolution, which
XLA:CPU executes several times slower (``custom_vmap`` rule, see
``_loop_batched_conv``); a batch axis on the images only is folded into N.

Limitation: a ``custom_vjp`` function has no forward-mode rule, so ``jax.jvp``,
``jax.jacfwd``, ``jax.hessian`` (= jacfwd of jacrev) and ``jax.linearize`` raise on
it. Use ``conv_impl='xla'`` for code that needs forward mode.

A first layer with few input channels followed by an instance norm can instead be
computed from its patches (:func:`conv_instance_norm`, used by ``ConvNet``): the norm's
statistics are linear / quadratic in the kernel, so the normalised output is one
per-sample matmul and the large first activation is written once.

Layouts: images NHWC, kernels HWIO (Flax convention). All functions are float-dtype
agnostic (the matmuls accumulate in the input dtype).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Literal, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax
from jax.custom_batching import custom_vmap

Padding = tuple[tuple[int, int], tuple[int, int]]
ConvImpl = Literal["auto", "shifted", "xla"]

_DIMS = ("NHWC", "HWIO", "NHWC")
CONV_IMPLS: tuple[str, ...] = ("auto", "shifted", "xla")


def _xla_conv(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    """Plain XLA stride-1 convolution. x [N,H,W,C], w [kh,kw,C,O] -> [N,Ho,Wo,O]."""
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DIMS)


@lru_cache(maxsize=None)
def _loop_batched_conv(padding: Padding):
    """``_xla_conv`` for a fixed padding whose vmap over the *kernel* is a loop.

    Under ``jax.vmap`` with a batched kernel (K networks), JAX's default batching rule
    emits one grouped convolution (``feature_group_count=K``), which XLA:CPU runs
    several times slower than K separate convolutions. This rule instead folds a
    batched input-only axis into N, and runs a batched kernel as ``lax.map`` over K.
    Never differentiated directly (only called inside the custom-vjp rules).
    """

    @custom_vmap
    def conv(x, w):
        return _xla_conv(x, w, padding)

    @conv.def_vmap
    def _rule(axis_size, in_batched, x, w):
        x_b, w_b = in_batched
        if not w_b:  # only x batched: [K, N, H, W, C] -> one conv over K*N images
            k, n = x.shape[:2]
            y = conv(x.reshape(k * n, *x.shape[2:]), w)
            return y.reshape(k, n, *y.shape[1:]), True
        if x_b:
            return lax.map(lambda a: conv(a[0], a[1]), (x, w)), True
        return lax.map(lambda wi: conv(x, wi), w), True

    return conv


def _transpose_padding(kernel_hw: tuple[int, int], padding: Padding) -> Padding:
    """Padding of the input-gradient convolution: ``k - 1 - p`` on each side."""
    (kh, kw), ((pt, pb), (pl, pr)) = kernel_hw, padding
    return ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))


def _flip_kernel(w: jax.Array) -> jax.Array:
    """[kh,kw,C,O] -> [kh,kw,O,C], spatially flipped (kernel of the input gradient)."""
    return jnp.swapaxes(w[::-1, ::-1], 2, 3)


IM2COL_MAX_COLUMNS = 64
"""Weight gradients with ``kh * kw * C`` at most this use one im2col matmul."""


def _shifted_wgrad_impl(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int],
                        padding: Padding) -> jax.Array:
    """Weight gradient as ``kh*kw`` shifted 2-D matmuls (one im2col matmul for few
    input channels).

    Each tap is ``dy2.T @ window`` (``[O, N*Ho*Wo] @ [N*Ho*Wo, C]``, then a ``[O, C]``
    transpose): ``dy`` is transposed once for all taps and the windows are read in
    their own layout. Writing it ``window.T @ dy2`` instead made XLA copy every window
    transposed (``[C, N*Ho*Wo]``); the evaluation's batch-10 training step (ConvNetD3
    w128, MNIST) ran ~15% faster this way, the DC batch-256 step no slower.

    With few input channels (a grayscale first layer: ``kh*kw*C <= 64``) the
    ``kh*kw`` shifted windows are concatenated into one ``[N*Ho*Wo, kh*kw*C]`` patch
    matrix and the gradient is ONE matmul that reads ``dy`` once (256x32x32, C=1,
    O=128: 12.5 ms vs 55 ms for nine matmuls on this CPU); with many channels the
    patch matrix would be ``kh*kw`` times the input and the nine matmuls win.

    Args:
      x: input [N, H, W, C]; dy: output cotangent [N, Ho, Wo, O].
    Returns:
      dw [kh, kw, C, O] with dw[i,j,c,o] = sum_{n,h,w} xp[n,h+i,w+j,c] dy[n,h,w,o].
    """
    kh, kw = kernel_hw
    n, ho, wo, o = dy.shape
    c = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    dy2 = dy.reshape(n * ho * wo, o)
    windows = [w.reshape(n * ho * wo, c) for w in _shifted_windows(xp, kh, kw, ho, wo)]
    if kh * kw * c <= IM2COL_MAX_COLUMNS:
        patches = jnp.concatenate(windows, axis=-1)
        return jnp.matmul(patches.T, dy2).reshape(kh, kw, c, o)
    dy_t = dy2.T  # [O, N*Ho*Wo], shared by the taps
    return jnp.stack([jnp.matmul(dy_t, w).T for w in windows]).reshape(kh, kw, c, o)


def _shifted_windows(xp: jax.Array, kh: int, kw: int, ho: int, wo: int) -> list[jax.Array]:
    """The ``kh * kw`` windows ``xp[:, i:i+Ho, j:j+Wo, :]`` of a padded input, tap-major
    (the order of ``kernel.reshape(kh * kw * C, O)``'s rows, channel innermost)."""
    return [xp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)]


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride1(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    """Stride-1 convolution with a shifted-matmul weight gradient.

    Args:
      x: images [N, H, W, C]. w: kernel [kh, kw, C, O].
      padding: static ((top, bottom), (left, right)) zero padding, each in [0, k-1].
    Returns:
      [N, H + top + bottom - kh + 1, W + left + right - kw + 1, O].
    """
    return _loop_batched_conv(padding)(x, w)


def _conv_fwd(x, w, padding):
    # Calling the custom-vjp function itself (not the raw conv) means an *outer*
    # differentiation (grad-of-grad) of this forward also goes through these rules.
    return conv_stride1(x, w, padding), (x, w)


def _conv_bwd(padding, res, dy):
    x, w = res
    dx = conv_stride1(dy, _flip_kernel(w), _transpose_padding(w.shape[:2], padding))
    dw = conv_wgrad(x, dy, w.shape[:2], padding)
    return dx, dw


conv_stride1.defvjp(_conv_fwd, _conv_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_wgrad(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int],
               padding: Padding) -> jax.Array:
    """Weight gradient of ``conv_stride1``: x [N,H,W,C], dy [N,Ho,Wo,O] -> [kh,kw,C,O].

    Bilinear in (x, dy); its own vjp is a forward conv (w.r.t. dy) and an
    input-gradient conv (w.r.t. x), both through ``conv_stride1``.
    """
    return _shifted_wgrad_impl(x, dy, kernel_hw, padding)


def _wgrad_fwd(x, dy, kernel_hw, padding):
    return conv_wgrad(x, dy, kernel_hw, padding), (x, dy)


def _wgrad_bwd(kernel_hw, padding, res, g):
    # dw[i,j,c,o] = sum xp[n,h+i,w+j,c] dy[n,h,w,o]; g has the shape of dw.
    x, dy = res
    d_dy = conv_stride1(x, g, padding)  # sum_{ijc} xp[n,h+i,w+j,c] g[i,j,c,o]
    d_x = conv_stride1(dy, _flip_kernel(g), _transpose_padding(kernel_hw, padding))
    return d_x, d_dy


conv_wgrad.defvjp(_wgrad_fwd, _wgrad_bwd)


def conv_instance_norm(x: jax.Array, w: jax.Array, padding: Padding, scale: jax.Array,
                       bias: jax.Array, eps: float) -> jax.Array:
    """Instance norm of a stride-1 convolution, from its patches (no conv bias: the norm
    cancels it); meant for ``kh * kw * C <= IM2COL_MAX_COLUMNS`` (a grayscale or RGB
    first layer).

    With ``P`` the ``[Ho*Wo, k]`` im2col patches of a sample (``k = kh * kw * C``) the
    convolution is ``y = P w``, so its per-channel mean and variance over the pixels are
    ``m^T w`` and ``w^T S w`` with ``m`` and ``S`` the mean and centred covariance of the
    patches (``k`` and ``k x k`` numbers per sample). The normalised output is then ONE
    per-sample matmul of the patches with ``w * scale / sqrt(var + eps)`` plus a
    per-sample shift: the large ``[N, Ho, Wo, O]`` activation is written once, where the
    two-step form writes it (conv), reads it twice (mean, variance), and reads and
    writes it again (normalise), with as many passes backward (ConvNetD3 w128 first
    layer on MNIST, batch 10, forward + backward: 2.4x faster on a 2-core CPU). Same
    function up to rounding (both use a centred variance).

    Differentiable in reverse mode to any order (``x`` included: DC's grad-of-grad);
    no forward mode (a ``custom_vjp`` inside, as ``conv_stride1``).

    Args:
      x: [N, H, W, C]; w: [kh, kw, C, O]; padding: ((top, bottom), (left, right)).
      scale, bias: [O] affine of the norm; eps: the norm's epsilon.
    Returns:
      [N, Ho, Wo, O] = ``(y - mean_hw(y)) / sqrt(var_hw(y) + eps) * scale + bias``.
    """
    kh, kw = w.shape[:2]
    n = x.shape[0]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    k = kh * kw * x.shape[-1]
    # tap-major, then channel: the order of w.reshape(k, O)
    patches = jnp.concatenate(_shifted_windows(xp, kh, kw, ho, wo), axis=-1).reshape(n, ho * wo, k)
    wk = w.reshape(k, -1)
    mean_p = jnp.mean(patches, axis=1)                                   # [N, k]
    centred = patches - mean_p[:, None, :]
    cov = jnp.einsum("npk,npl->nkl", centred, centred) / (ho * wo)       # [N, k, k]
    var = jnp.einsum("ko,nkl,lo->no", wk, cov, wk)                       # [N, O]
    gain = scale * lax.rsqrt(var + eps)                                  # [N, O]
    shift = bias - jnp.einsum("nk,ko->no", mean_p, wk) * gain            # [N, O]
    y = _per_sample_matmul(patches, wk[None] * gain[:, None, :], shift)
    return y.reshape(n, ho, wo, -1)


@jax.custom_vjp
def _per_sample_matmul(p: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``p[n] @ w[n] + b[n]``: p [N, P, k], w [N, k, O], b [N, O], small ``k``.

    Evaluated without differentiation (a test pass) as ``k`` broadcast multiply-adds,
    which XLA fuses with the consumers (activation, pooling), so the ``[N, P, O]``
    result is never written (ConvNetD3 w128 first layer, batch 50: 1.9x faster than a
    batched matmul on a 2-core CPU). Under differentiation the forward is the batched
    matmul (the fused form's derivative is 3x slower at batch 10) and the backward two
    batched matmuls (themselves differentiable).
    """
    y = b[:, None, :]
    for i in range(p.shape[-1]):
        y = y + p[..., i:i + 1] * w[:, None, i, :]
    return y


def _psm_fwd(p, w, b):
    return jnp.einsum("npk,nko->npo", p, w) + b[:, None, :], (p, w)


def _psm_bwd(res, g):
    p, w = res
    return jnp.einsum("npo,nko->npk", g, w), jnp.einsum("npk,npo->nko", p, g), jnp.sum(g, axis=1)


_per_sample_matmul.defvjp(_psm_fwd, _psm_bwd)


def normalize_padding(padding: str | int | Sequence, kernel_hw: tuple[int, int]) -> Padding:
    """'SAME' | 'VALID' | int | ((t,b),(l,r)) -> explicit ((t,b),(l,r)) for stride 1.

    'SAME' follows XLA: total k-1, the extra pixel (even k) at the bottom/right.
    """
    kh, kw = kernel_hw
    if isinstance(padding, str):
        p = padding.upper()
        if p == "SAME":
            return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
        if p == "VALID":
            return ((0, 0), (0, 0))
        raise ValueError(f"padding string must be 'SAME' or 'VALID', got {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    (pt, pb), (pl, pr) = padding
    return ((int(pt), int(pb)), (int(pl), int(pr)))


def resolve_conv_impl(impl: str) -> str:
    """'auto' -> 'shifted' on the CPU backend, 'xla' on GPU/TPU; validates the name."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d(x: jax.Array, w: jax.Array, padding: str | int | Sequence = "SAME",
           impl: str = "shifted") -> jax.Array:
    """Stride-1 NHWC convolution, any padding (excess over k-1 is pre-padded).

    Args:
      x: [N, H, W, C] (or [H, W, C], treated as N=1). w: [kh, kw, C, O].
      padding: see ``normalize_padding``. impl: 'shifted' | 'xla' | 'auto'.
    Returns:
      [N, Ho, Wo, O] (no batch axis if x had none).
    """
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    kh, kw = w.shape[:2]
    pad = normalize_padding(padding, (kh, kw))
    if resolve_conv_impl(impl) == "xla":
        y = _xla_conv(x, w, pad)
    else:
        # Keep the in-primitive padding in [0, k-1] so the input-gradient conv has
        # non-negative padding; anything beyond is a plain (differentiable) jnp.pad.
        lim = (kh - 1, kw - 1)
        inner = tuple(tuple(min(p, lim[a]) for p in pad[a]) for a in range(2))
        outer = tuple(tuple(p - q for p, q in zip(pad[a], inner[a])) for a in range(2))
        if any(p < 0 for pair in pad for p in pair):
            raise ValueError(f"negative padding not supported: {pad}")
        if any(p for pair in outer for p in pair):
            x = jnp.pad(x, ((0, 0), outer[0], outer[1], (0, 0)))
        y = conv_stride1(x, w, inner)
    return y[0] if unbatched else y


def torch_uniform_init(fan_in: int):
    """Init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = PyTorch's default for conv/linear."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FastConv(nn.Module):
    """Stride-1 2-D convolution layer (Flax), parameters named like ``nn.Conv``.

    Params: ``kernel`` [kh, kw, C, O] and ``bias`` [O], both initialised like PyTorch's
    ``nn.Conv2d`` (U(+-1/sqrt(C*kh*kw))). ``impl='shifted'`` uses the custom-vjp
    conv (fast CPU weight gradient, reverse-mode only); ``'xla'`` is the plain
    ``lax.conv_general_dilated`` (= ``nn.Conv``), ``'auto'`` picks by backend. Both give
    the same parameter tree, so variables are interchangeable.

    ``bias_cancelled_by_norm=True`` (set by a network whose next layer is an instance
    norm, which subtracts every per-channel constant) still creates ``bias`` -- the
    parameter tree stays the reference's -- but does not add it: the outputs are the
    same up to rounding, the bias gradient is exactly 0 (PyTorch's is rounding
    noise), and one pass over the activation is saved forward and backward (DC step,
    ConvNetD3 width 128, batch 256: ~8% faster on a 2-core CPU).

    ``__call__(x, instance_norm=(scale, bias, eps))`` returns the instance-normalised
    convolution instead, computed from the patches (:func:`conv_instance_norm`; only
    where :meth:`folds_instance_norm`); the parameters are the same.

    Input [N, H, W, C] -> output [N, Ho, Wo, features].
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    padding: str | int | tuple = "SAME"
    use_bias: bool = True
    impl: str = "auto"
    bias_cancelled_by_norm: bool = False

    def folds_instance_norm(self, in_channels: int) -> bool:
        """Whether an instance norm after this layer is computed with it
        (:func:`conv_instance_norm`): the shifted implementation (CPU; reverse mode
        only anyway), ``kh * kw * in_channels <= IM2COL_MAX_COLUMNS``, padding in
        ``[0, k - 1]``."""
        kh, kw = self.kernel_size
        pad = normalize_padding(self.padding, (kh, kw))
        return (resolve_conv_impl(self.impl) == "shifted" and kh * kw * in_channels <= IM2COL_MAX_COLUMNS
                and all(0 <= p <= k - 1 for pair, k in zip(pad, (kh, kw)) for p in pair))

    @nn.compact
    def __call__(self, x: jax.Array, instance_norm: Optional[tuple] = None) -> jax.Array:
        """The convolution of ``x``; with ``instance_norm=(scale, bias, eps)`` (only where
        :meth:`folds_instance_norm`) the instance-normalised convolution, the conv bias
        not added (the norm cancels it)."""
        kh, kw = self.kernel_size
        c = x.shape[-1]
        init = torch_uniform_init(c * kh * kw)
        kernel = self.param("kernel", init, (kh, kw, c, self.features))
        if instance_norm is not None:
            if not self.folds_instance_norm(c):
                raise ValueError(f"FastConv(impl={self.impl!r}, kernel {self.kernel_size}, padding "
                                 f"{self.padding!r}) cannot compute an instance norm of {c} input channels")
            if self.use_bias:
                self.param("bias", init, (self.features,))  # the parameter tree is unchanged
            scale, bias, eps = instance_norm
            return conv_instance_norm(x, kernel.astype(x.dtype), normalize_padding(self.padding, (kh, kw)),
                                      scale.astype(x.dtype), bias.astype(x.dtype), float(eps))
        y = conv2d(x, kernel.astype(x.dtype), self.padding, self.impl)
        if self.use_bias:
            bias = self.param("bias", init, (self.features,))
            if not self.bias_cancelled_by_norm:
                y = y + bias.astype(y.dtype)
        return y
