"""ResNet18 for small images, as in the reference (kuangliu-style CIFAR ResNet), Flax.

Stem: conv3x3 (64, stride 1, no bias) -> norm -> relu, no max-pool. Four stages of two
BasicBlocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2; strided 3x3 convs with
padding 1 and 1x1 strided projection shortcuts + norm), then avg-pool 4x4/4, flatten,
``head``. 32x32 (and 28x28) inputs -> 512 features. norm='batchnorm' is the reference
'ResNet18BN' (the paper's ResNet18, docs/protocol.md), 'instancenorm' the reference
'ResNet18'.
Stride-1 3x3 convs are ``FastConv``; strided ones plain XLA (``StridedConv``).
"""

from __future__ import annotations

import jax
from flax import linen as nn

from gold.models.conv import FastConv, resolve_conv_impl
from gold.models.layers import NORMS, Dense, StridedConv, apply_norm, check_choice, make_norm


def _conv3x3(features: int, stride: int, impl: str) -> nn.Module:
    """3x3 no-bias conv, padding 1: FastConv if stride 1 else StridedConv."""
    if stride == 1:
        return FastConv(features, (3, 3), ((1, 1), (1, 1)), use_bias=False, impl=impl)
    return StridedConv(features, 3, stride, 1, use_bias=False)


class BasicBlock(nn.Module):
    """relu(norm(conv(relu(norm(conv_s(x))))) + shortcut(x)); [B,H,W,C] -> [B,H/s,W/s,planes]."""

    planes: int
    stride: int = 1
    norm: str = "batchnorm"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = _conv3x3(self.planes, self.stride, self.conv_impl)(x)
        out = nn.relu(apply_norm(make_norm(self.norm), out, train))
        out = _conv3x3(self.planes, 1, self.conv_impl)(out)
        out = apply_norm(make_norm(self.norm), out, train)
        short = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            short = StridedConv(self.planes, 1, self.stride, 0, use_bias=False)(x)
            short = apply_norm(make_norm(self.norm), short, train)
        return nn.relu(out + short)


class ResNet18(nn.Module):
    """ResNet18 (BasicBlock, [2, 2, 2, 2]); ``embed`` [B, 512] for 32x32 / 28x28 inputs."""

    num_classes: int
    norm: str = "batchnorm"
    conv_impl: str = "auto"

    def setup(self) -> None:
        check_choice(self.norm, NORMS, "norm")
        resolve_conv_impl(self.conv_impl)
        self.stem = _conv3x3(64, 1, self.conv_impl)
        self.stem_norm = make_norm(self.norm)
        blocks = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                blocks.append(BasicBlock(planes, s, self.norm, self.conv_impl))
        self.blocks = blocks
        self.head = Dense(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, 512 * (H'/4) * (W'/4)], H' = last-stage size (4 for 32)."""
        h = nn.relu(apply_norm(self.stem_norm, self.stem(x), train))
        for block in self.blocks:
            h = block(h, train)
        h = nn.avg_pool(h, (4, 4), strides=(4, 4))
        return h.reshape(h.shape[0], -1)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, num_classes]."""
        return self.head(self.embed(x, train))
