"""ConvNet (the dataset-distillation default network), Flax linen.

depth x [conv 3x3 SAME (width ch) -> norm -> act -> pool 2x2/2], flatten, dense head.
ConvNetD3 (width 128) on 32x32x3 with 10 classes has 320,010 parameters and 2048
embedding features. A 28x28 input (MNIST family) is zero-padded to ``pad_to`` x
``pad_to`` first, which reproduces the reference's "padding 3 in the first conv"
(pad 2 + SAME pad 1), so MNIST also gives 2048 features.

Parameter tree: ``conv_{i}`` {kernel [3,3,C,width], bias}, ``norms_{i}`` {scale, bias}
(absent for norm='none'; BatchNorm adds ``batch_stats/norms_{i}`` {mean, var}), ``head``
{kernel [F, num_classes], bias}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from gold.models.conv import FastConv, resolve_conv_impl
from gold.models.layers import (ACTS, NORMS, POOLINGS, Dense, apply_norm, cancels_conv_bias,
                                check_choice, get_activation, make_norm, pool2x2)

MNIST_SIZE = 28


def pad_mnist(x: jax.Array, pad_to: int | None) -> jax.Array:
    """Zero-pad a 28x28 [N, 28, 28, C] batch symmetrically to [N, pad_to, pad_to, C].

    Other spatial sizes (and ``pad_to=None``) are returned unchanged.
    """
    h, w = x.shape[-3], x.shape[-2]
    if pad_to is None or (h, w) != (MNIST_SIZE, MNIST_SIZE) or pad_to <= MNIST_SIZE:
        return x
    lo = (pad_to - MNIST_SIZE) // 2
    hi = pad_to - MNIST_SIZE - lo
    pads = [(0, 0)] * (x.ndim - 3) + [(lo, hi), (lo, hi), (0, 0)]
    return jnp.pad(x, pads)


class ConvNet(nn.Module):
    """ConvNet-D{depth}-W{width}.

    Attributes:
      num_classes: logits K.
      width: channels of every conv (128 in the papers).
      depth: number of conv blocks (3 = ConvNetD3).
      norm: 'instancenorm' | 'batchnorm' | 'layernorm' | 'groupnorm' | 'none'.
      act: 'relu' | 'sigmoid' | 'leakyrelu' | 'swish'.
      pooling: 'avgpooling' | 'maxpooling' | 'none'.
      pad_to: 28x28 inputs are zero-padded to pad_to x pad_to (None: never).
      conv_impl: 'auto' (shifted on CPU, XLA elsewhere) | 'shifted' | 'xla'; 'shifted'
        is reverse-mode only (no jax.jvp / jacfwd), see ``gold.models.conv``.
    """

    num_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    act: str = "relu"
    pooling: str = "avgpooling"
    pad_to: int | None = 32
    conv_impl: str = "auto"

    def setup(self) -> None:
        check_choice(self.norm, NORMS, "norm")
        check_choice(self.act, ACTS, "activation")
        check_choice(self.pooling, POOLINGS, "pooling")
        resolve_conv_impl(self.conv_impl)
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"depth and width must be >= 1, got {self.depth}, {self.width}")
        cancelled = cancels_conv_bias(self.norm)
        self.conv = [FastConv(self.width, (3, 3), "SAME", impl=self.conv_impl,
                              bias_cancelled_by_norm=cancelled) for _ in range(self.depth)]
        if self.norm != "none":
            self.norms = [make_norm(self.norm) for _ in range(self.depth)]
        self.head = Dense(self.num_classes)

    def _norm(self, i: int, x: jax.Array, train: bool) -> jax.Array:
        return x if self.norm == "none" else apply_norm(self.norms[i], x, train)

    def blocks(self, x: jax.Array, train: bool = False) -> list[tuple[jax.Array, jax.Array]]:
        """Per-block (activation before pooling [B, H_i, W_i, width], output after
        pooling [B, H_i/2, W_i/2, width]) pairs, depth of them (equal without pooling).

        x: [B, H, W, C] normalised images.
        """
        act = get_activation(self.act)
        x = pad_mnist(x, self.pad_to)
        outs = []
        for i in range(self.depth):
            if i == 0 and self.norm == "instancenorm" and self.conv[0].folds_instance_norm(x.shape[-1]):
                # grayscale / RGB first layer: conv + instance norm from the patches, one
                # write of the largest activation (gold.models.conv.conv_instance_norm)
                scale, bias = self.norms[0](jnp.zeros((self.width,), x.dtype), affine_only=True)
                a = act(self.conv[0](x, instance_norm=(scale, bias, self.norms[0].epsilon)))
            else:
                a = act(self._norm(i, self.conv[i](x), train))
            x = pool2x2(a, self.pooling)
            outs.append((a, x))
        return outs

    def features(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        """Per-block outputs (after pooling): list of depth arrays [B, H_i, W_i, width].

        x: [B, H, W, C] normalised images.
        """
        return [out for _, out in self.blocks(x, train)]

    def taps(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        """The layers CAFE aligns (ref kaiwang960112/CAFE ``networks.py``): each block's
        activation before pooling, then the last block's pooled output; depth + 1
        arrays ``[B, H_l, W_l, width]`` (the embedding is the last one flattened)."""
        blocks = self.blocks(x, train)
        return [a for a, _ in blocks] + [blocks[-1][1]]

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Flattened last-block features [B, F] (F = 2048 for D3/W128 on 32x32)."""
        h = self.features(x, train)[-1]
        return h.reshape(*h.shape[:-3], -1)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes] = head(embed(x))."""
        return self.head(self.embed(x, train))
