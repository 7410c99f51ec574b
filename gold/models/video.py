"""ConvNet + GRU for clips (the paper's Kinetics-400 network, supp. 12.4).

Every frame goes through the same ConvNet trunk (``ConvNet.embed``: depth x [conv 3x3 ->
norm -> act -> pool], flattened), the frame features run through a GRU over time, and the
last hidden state is the clip embedding; a dense head gives the logits. The paper names
the network (ConvNetD3 + GRU) but not the GRU width: ``hidden`` defaults to the ConvNet
width (128). GRU weights use PyTorch's ``nn.GRU`` initialisation, U(+-1/sqrt(hidden)).

Input: float32 ``[B, T, H, W, C]`` normalised clips. ConvNetD3-W128 on 64x64 frames gives
8x8x128 = 8,192 features per frame. Parameter tree: ``trunk`` (the ConvNet's ``conv_{i}``
/ ``norms_{i}``), ``gru`` (``ir iz in hr hz hn``), ``head``.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from gold.models.conv import torch_uniform_init
from gold.models.convnet import ConvNet
from gold.models.layers import Dense


class ConvNetGRU(nn.Module):
    """Frame-wise ConvNet-D{depth}-W{width} features, GRU(hidden) over time, dense head.

    Attributes:
      num_classes: logits K.
      width, depth, norm, act, pooling, conv_impl: the per-frame ConvNet (``ConvNet``).
      hidden: GRU state size (0 = ``width``).
    """

    num_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    act: str = "relu"
    pooling: str = "avgpooling"
    conv_impl: str = "auto"
    hidden: int = 0

    input_rank = 4  # samples are [T, H, W, C] (gold.models.get_model checks it)

    def setup(self) -> None:
        h = self.hidden or self.width
        if h < 1:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        self.trunk = ConvNet(1, self.width, self.depth, self.norm, self.act, self.pooling,
                             pad_to=None, conv_impl=self.conv_impl)
        init = torch_uniform_init(h)
        self.gru = nn.RNN(nn.GRUCell(h, kernel_init=init, recurrent_kernel_init=init, bias_init=init))
        self.head = Dense(self.num_classes)

    def frame_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[B, T, F]`` per-frame ConvNet embeddings of clips ``x [B, T, H, W, C]``."""
        b, t = x.shape[:2]
        return self.trunk.embed(x.reshape(b * t, *x.shape[2:]), train).reshape(b, t, -1)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[B, hidden]`` the GRU's last state over the frame features."""
        return self.gru(self.frame_features(x, train))[:, -1]

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, num_classes]``."""
        return self.head(self.embed(x, train))


__all__ = ["ConvNetGRU"]
