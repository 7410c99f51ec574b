"""gold.models: Flax linen networks used by dataset distillation.

Every model maps NHWC images [B, H, W, C] to logits [B, K] (``__call__(x, train)``) and
to penultimate features [B, F] (``embed(x, train)``); the classifier layer is the
submodule ``head`` (``variables['params']['head']``). BatchNorm variants keep running
statistics in the ``batch_stats`` collection. Build them with ``get_model``.

Stride-1 convolutions use ``FastConv`` (``gold.models.conv``): an XLA forward with a
shifted-matmul weight gradient that is ~2x faster on CPU. It is reverse-mode only
(``jax.grad`` of any order works; ``jax.jvp``/``jacfwd`` do not): pass
``conv_impl='xla'`` where forward-mode differentiation is needed.
"""

from gold.models.classic import MLP, VGG11, AlexNet, LeNet
from gold.models.conv import FastConv, conv2d, conv_stride1, conv_wgrad, resolve_conv_impl
from gold.models.convnet import ConvNet, pad_mnist
from gold.models.layers import Dense, InstanceNorm, StridedConv, make_norm
from gold.models.registry import get_model, model_names, model_options
from gold.models.resnet import BasicBlock, ResNet18
from gold.models.video import ConvNetGRU

__all__ = [
    "AlexNet", "BasicBlock", "ConvNet", "ConvNetGRU", "Dense", "FastConv", "InstanceNorm", "LeNet", "MLP",
    "ResNet18", "StridedConv", "VGG11", "conv2d", "conv_stride1", "conv_wgrad",
    "get_model", "make_norm", "model_names", "model_options", "pad_mnist",
    "resolve_conv_impl",
]
