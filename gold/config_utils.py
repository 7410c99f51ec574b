"""Turn the shared ConfigDict fields (DESIGN.md CLI contract) into library objects."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from gold import data as gdata
from gold import models as gmodels
from gold.evaluate import EvalProtocol

# ConvNet-family knobs that the shared `model.*` fields may set.
_CONVNET_FIELDS = ("width", "depth", "norm", "pooling")


def model_overrides(model_cfg: Any) -> dict:
    """Constructor overrides from ``config.model`` (only set, non-None fields)."""
    name = model_cfg.name
    if not name.startswith("convnet"):
        return {}
    return {k: model_cfg[k] for k in _CONVNET_FIELDS if k in model_cfg and model_cfg[k] is not None}


def build_model(model_cfg: Any, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The network named by ``config.model`` for the given data shape."""
    return gmodels.get_model(model_cfg.name, num_classes, input_shape, **model_overrides(model_cfg))


def load_data(data_cfg: Any) -> gdata.Dataset:
    """Load ``config.data`` (name, dir, zca) as a normalised :class:`gold.data.Dataset`."""
    return gdata.load_dataset(
        data_cfg.name, data_cfg.get("dir") or None, zca=bool(data_cfg.get("zca", False))
    )


def eval_protocol(config: Any) -> EvalProtocol:
    """The evaluation protocol of ``config.eval``; its model defaults to ``config.model``."""
    ev = config.eval
    model_cfg = config.model.copy_and_resolve_references()
    if ev.get("model"):
        model_cfg.name = ev.model
    return EvalProtocol(
        model=model_cfg.name,
        model_overrides=tuple(sorted(model_overrides(model_cfg).items())),
        num_models=ev.num_models,
        epochs=ev.epochs,
        batch_size=ev.batch_size,
        lr=ev.lr,
        momentum=ev.get("momentum", 0.9),
        weight_decay=ev.get("weight_decay", 5e-4),
        augment=ev.augment,
        test_batch_size=ev.get("test_batch_size", 1000),
    )
