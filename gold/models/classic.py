"""MLP, LeNet, AlexNet and VGG11 as in the reference (DC/DSA/DM ``networks.py``), Flax.

All take NHWC images and return logits [B, K] from ``__call__`` and penultimate
features [B, F] from ``embed``; the classifier is always the submodule ``head``.
28x28 inputs are zero-padded to 32x32 where the reference pads the first conv more
for 1-channel inputs (LeNet pad 2, AlexNet pad 4, VGG pad 3 -> all give 32x32 maps).
Stride-1 convs are ``FastConv`` (``conv_impl`` as in ``ConvNet``).
"""

from __future__ import annotations

import jax
from flax import linen as nn

from gold.models.conv import FastConv, resolve_conv_impl
from gold.models.convnet import pad_mnist
from gold.models.layers import (NORMS, Dense, apply_norm, cancels_conv_bias, check_choice,
                                make_norm, pool2x2)


def _flatten(x: jax.Array) -> jax.Array:
    """[B, ...] -> [B, prod(...)] (keeps only the leading batch axis)."""
    return x.reshape(x.shape[0], -1)


class MLP(nn.Module):
    """in -> 128 -> 128 -> K, ReLU. Input [B, H, W, C] is flattened; ``embed`` [B, 128]."""

    num_classes: int
    hidden: int = 128

    def setup(self) -> None:
        self.fc = [Dense(self.hidden), Dense(self.hidden)]
        self.head = Dense(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, hidden] (after the second ReLU)."""
        h = _flatten(x)
        for fc in self.fc:
            h = nn.relu(fc(h))
        return h

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes]."""
        return self.head(self.embed(x, train))


class LeNet(nn.Module):
    """conv5(6) -> relu -> maxpool -> conv5(16, valid) -> relu -> maxpool -> 120 -> 84 -> K.

    32x32 input -> 16x5x5 = 400 flattened; ``embed`` returns the 84 penultimate units.
    """

    num_classes: int
    pad_to: int | None = 32
    conv_impl: str = "auto"

    def setup(self) -> None:
        resolve_conv_impl(self.conv_impl)
        self.conv = [FastConv(6, (5, 5), "VALID", impl=self.conv_impl),
                     FastConv(16, (5, 5), "VALID", impl=self.conv_impl)]
        self.fc = [Dense(120), Dense(84)]
        self.head = Dense(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, 84]."""
        h = pad_mnist(x, self.pad_to)
        for conv in self.conv:
            h = pool2x2(nn.relu(conv(h)), "maxpooling")
        h = _flatten(h)
        for fc in self.fc:
            h = nn.relu(fc(h))
        return h

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes]."""
        return self.head(self.embed(x, train))


class AlexNet(nn.Module):
    """Reference small AlexNet: conv5(128) M conv5(192) M conv3(256) conv3(192) conv3(192) M.

    Each conv -> [norm] -> relu; M = maxpool 2x2. 32x32 -> 192x4x4 = 3072 features
    (``embed``), then ``head``. norm='none' is the reference 'AlexNet',
    'batchnorm' its 'AlexNetBN'.
    """

    num_classes: int
    norm: str = "none"
    pad_to: int | None = 32
    conv_impl: str = "auto"

    def setup(self) -> None:
        check_choice(self.norm, NORMS, "norm")
        resolve_conv_impl(self.conv_impl)
        spec = [(128, 5), (192, 5), (256, 3), (192, 3), (192, 3)]
        self.conv = [FastConv(o, (k, k), "SAME", impl=self.conv_impl,
                              bias_cancelled_by_norm=cancels_conv_bias(self.norm))
                     for o, k in spec]
        if self.norm != "none":
            self.norms = [make_norm(self.norm) for _ in spec]
        self.head = Dense(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, 3072] for 32x32 (or 28x28 padded) inputs."""
        h = pad_mnist(x, self.pad_to)
        for i, conv in enumerate(self.conv):
            h = conv(h)
            if self.norm != "none":
                h = apply_norm(self.norms[i], h, train)
            h = nn.relu(h)
            if i in (0, 1, 4):
                h = pool2x2(h, "maxpooling")
        return _flatten(h)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes]."""
        return self.head(self.embed(x, train))


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M",
                                    512, 512, "M")


class VGG11(nn.Module):
    """VGG11: 8 x [conv3x3 -> norm -> relu] with 5 maxpools, flatten, ``head``.

    32x32 -> 512 features. norm='batchnorm' is the reference 'VGG11BN' (the paper's
    VGG11, docs/protocol.md), 'instancenorm' the reference 'VGG11'.
    """

    num_classes: int
    norm: str = "batchnorm"
    pad_to: int | None = 32
    conv_impl: str = "auto"

    def setup(self) -> None:
        check_choice(self.norm, NORMS, "norm")
        resolve_conv_impl(self.conv_impl)
        widths = [v for v in VGG11_CFG if v != "M"]
        self.conv = [FastConv(o, (3, 3), "SAME", impl=self.conv_impl,
                              bias_cancelled_by_norm=cancels_conv_bias(self.norm))
                     for o in widths]
        if self.norm != "none":
            self.norms = [make_norm(self.norm) for _ in widths]
        self.head = Dense(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, 512 * (H/32) * (W/32)] (512 for 32x32)."""
        h = pad_mnist(x, self.pad_to)
        if min(h.shape[-3], h.shape[-2]) < 32:
            raise ValueError(f"VGG11 needs inputs of at least 32x32 (5 max-pools), got "
                             f"{h.shape[-3]}x{h.shape[-2]}")
        i = 0
        for v in VGG11_CFG:
            if v == "M":
                h = pool2x2(h, "maxpooling")
                continue
            h = self.conv[i](h)
            if self.norm != "none":
                h = apply_norm(self.norms[i], h, train)
            h = nn.relu(h)
            i += 1
        return _flatten(h)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes]."""
        return self.head(self.embed(x, train))
