"""Model registry: ``get_model(name, num_classes, input_shape, **overrides)``."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from flax import linen as nn

from gold.models.classic import MLP, VGG11, AlexNet, LeNet
from gold.models.convnet import ConvNet
from gold.models.resnet import ResNet18
from gold.models.video import ConvNetGRU

# name -> (class, default keyword arguments). Reference names in comments.
_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "convnet": (ConvNet, {}),                                   # ConvNet (D3, W128, IN)
    **{f"convnetd{d}": (ConvNet, {"depth": d}) for d in (1, 2, 3, 4)},  # ConvNetD{d}
    **{f"convnetw{w}": (ConvNet, {"width": w}) for w in (32, 64, 128, 256)},  # ConvNetW{w}
    "convnet_bn": (ConvNet, {"norm": "batchnorm"}),           # ConvNetBN
    "convnet_ln": (ConvNet, {"norm": "layernorm"}),           # ConvNetLN
    "convnet_gn": (ConvNet, {"norm": "groupnorm"}),           # ConvNetGN
    "convnet_in": (ConvNet, {"norm": "instancenorm"}),        # ConvNetIN
    "convnet_nn": (ConvNet, {"norm": "none"}),                # ConvNetNN
    "convnet_mp": (ConvNet, {"pooling": "maxpooling"}),       # ConvNetMP
    "convnet_np": (ConvNet, {"pooling": "none"}),             # ConvNetNP
    "convnet_as": (ConvNet, {"act": "sigmoid"}),              # ConvNetAS
    "convnet_al": (ConvNet, {"act": "leakyrelu"}),            # ConvNetAL
    "mlp": (MLP, {}),                                           # MLP
    "lenet": (LeNet, {}),                                       # LeNet
    "alexnet": (AlexNet, {}),                                   # AlexNet
    "alexnet_bn": (AlexNet, {"norm": "batchnorm"}),           # AlexNetBN
    "vgg11": (VGG11, {}),                                       # VGG11BN
    "vgg11_in": (VGG11, {"norm": "instancenorm"}),            # VGG11 (ref default)
    "resnet18": (ResNet18, {}),                                 # ResNet18BN
    "resnet18_in": (ResNet18, {"norm": "instancenorm"}),      # ResNet18 (ref default)
    "convnet_gru": (ConvNetGRU, {}),                           # ConvNetD3 + GRU (video clips)
}

_NOT_OVERRIDABLE = {"parent", "name", "num_classes"}


def model_names() -> tuple[str, ...]:
    """All names accepted by ``get_model`` (sorted)."""
    return tuple(sorted(_REGISTRY))


def model_options(name: str) -> tuple[str, ...]:
    """Keyword overrides accepted by ``get_model(name, ...)`` (the module's fields)."""
    cls, _ = _lookup(name)
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_OVERRIDABLE)


def _lookup(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    return _REGISTRY[key]


def get_model(name: str, num_classes: int, input_shape: Sequence[int],
              **overrides: Any) -> nn.Module:
    """Build a model by name.

    Args:
      name: one of ``model_names()`` (case-insensitive), e.g. 'convnet', 'convnetd4',
        'mlp', 'lenet', 'alexnet', 'vgg11', 'resnet18'.
      num_classes: K, the number of logits.
      input_shape: (H, W, C) of one image, (T, H, W, C) of one clip for video models
        (``convnet_gru``); used for validation (the modules infer
        their input sizes at ``init``).
      **overrides: module fields, e.g. ``depth=4, width=64, norm='batchnorm',
        pooling='maxpooling', conv_impl='xla'`` for ConvNet (see ``model_options``).

    Returns:
      An unbound ``flax.linen.Module``; ``model.init(key, jnp.zeros((1, *input_shape)))``.

    Raises:
      ValueError: unknown name (lists the valid names), unknown override (lists the
        accepted ones), bad num_classes or input_shape.
    """
    cls, defaults = _lookup(name)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    shape = tuple(int(s) for s in input_shape)
    rank = getattr(cls, "input_rank", 3)
    if len(shape) != rank or min(shape) < 1:
        want = "(T, H, W, C) clips" if rank == 4 else "(H, W, C)"
        raise ValueError(f"input_shape must be {want} with positive sizes for model {name!r}, "
                         f"got {input_shape}")
    valid = model_options(name)
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ValueError(f"unknown override(s) {bad} for model {name!r}; "
                         f"accepted: {', '.join(valid)}")
    kwargs = {**defaults, **overrides}
    return cls(num_classes=int(num_classes), **kwargs)
