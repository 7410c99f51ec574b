"""Turn the shared ConfigDict fields (``model.*``, ``data.*``, ``eval.*``) into library
objects: the one place where a config becomes a model, a dataset or a protocol."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from gold import augment as gaug
from gold import data as gdata
from gold import models as gmodels
from gold.evaluate import EvalProtocol

# 28x28 grayscale datasets: the DC reference's MNIST evaluation augmentation.
MNIST_LIKE: tuple[str, ...] = ("mnist", "fashion_mnist")
# Datasets whose classes a horizontal flip changes (digits): DSA without flip.
NO_FLIP: tuple[str, ...] = ("mnist", "digits", "svhn")

# ConvNet-family knobs that the shared `model.*` fields may set.
_CONVNET_FIELDS = ("width", "depth", "norm", "pooling")


def model_overrides(model_cfg: Any) -> dict:
    """Constructor overrides from ``config.model`` (only set, non-None fields)."""
    name = model_cfg.name
    if not name.startswith("convnet"):
        return {}
    return {k: model_cfg[k] for k in _CONVNET_FIELDS if k in model_cfg and model_cfg[k] is not None}


def build_model(model_cfg: Any, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The network named by ``config.model`` for the given data shape.

    ``model.conv_impl`` (``auto`` | ``shifted`` | ``xla``; ConvNet family only) picks the
    convolution's weight-gradient implementation when present.
    """
    overrides = model_overrides(model_cfg)
    impl = model_cfg.get("conv_impl", "") if hasattr(model_cfg, "get") else ""
    if impl and str(model_cfg.name).startswith("convnet"):
        overrides["conv_impl"] = impl
    return gmodels.get_model(model_cfg.name, num_classes, input_shape, **overrides)


def load_data(data_cfg: Any) -> gdata.Dataset:
    """Load ``config.data`` (name, dir, zca) as a normalised :class:`gold.data.Dataset`.

    Optional ``train_per_class`` / ``test_per_class`` > 0 keep the first n samples per
    class (tiny CPU runs, ``runlocal``).
    """
    train_pc = int(data_cfg.get("train_per_class", 0) or 0)
    test_pc = int(data_cfg.get("test_per_class", 0) or 0)
    caps = {}
    if train_pc or test_pc:
        caps = dict(train_per_class=train_pc or None, test_per_class=test_pc or None,
                    strict_counts=False)
    return gdata.load_dataset(
        data_cfg.name, data_cfg.get("dir") or None, zca=bool(data_cfg.get("zca", False)), **caps
    )


def eval_augment(augment: str, dsa_strategy: str, dataset: str) -> tuple[str, str]:
    """(augment, dsa_strategy) of an evaluation, as the DC/DSA reference decides it.

    ``augment='dsa'`` with a strategy that has no op group (``'none'``) is the
    reference's ``args.dsa = False``: it falls back to the dataset's default
    augmentation (crop/scale/rotate for MNIST-like data, none otherwise).
    """
    if augment == "dsa" and not gaug.parse_strategy(dsa_strategy):
        return ("dc_mnist" if gdata.get_info(dataset).name in MNIST_LIKE else "none"), dsa_strategy
    return augment, dsa_strategy


# config.eval keys that are not EvalProtocol fields: the evaluation network ('' = the
# run's model) and the test-set cap.
EVAL_CONFIG_ONLY: tuple[str, ...] = ("model", "max_test")


def eval_protocol(config: Any) -> EvalProtocol:
    """The evaluation protocol of ``config.eval``; its model defaults to ``config.model``
    and its DSA strategy to the run's ``config.dsa_strategy`` (the reference evaluates
    with the run's strategy). Every :class:`EvalProtocol` field may be set in
    ``config.eval`` (missing fields take the protocol defaults); ``lr_decay_epochs=()``
    means the schedule's default.

    Raises:
      ValueError: a ``config.eval`` key that is neither a protocol field nor one of
        :data:`EVAL_CONFIG_ONLY`, or an invalid protocol.
    """
    ev = config.eval
    fields = {f.name for f in dataclasses.fields(EvalProtocol)} - {"model", "model_overrides"}
    unknown = sorted(set(ev.keys()) - fields - set(EVAL_CONFIG_ONLY))
    if unknown:
        raise ValueError(f"unknown config.eval keys {unknown}; valid: {sorted(fields | set(EVAL_CONFIG_ONLY))}")
    strategy = str(ev.get("dsa_strategy", "") or config.get("dsa_strategy", "") or gaug.DEFAULT_STRATEGY)
    augment, strategy = eval_augment(str(ev.get("augment", "none")), strategy, config.data.name)
    model_cfg = config.model.copy_and_resolve_references()
    if ev.get("model"):
        model_cfg.name = ev.model
    values = {k: ev[k] for k in ev.keys() if k in fields and k not in ("augment", "dsa_strategy")}
    for name in ("lr_decay_epochs", "lr_decay_fractions"):
        if name in values:
            values[name] = tuple(values[name] or ())
    if values.get("lr_decay_epochs") == ():
        values["lr_decay_epochs"] = None
    return EvalProtocol(
        model=model_cfg.name,
        model_overrides=tuple(sorted(model_overrides(model_cfg).items())),
        augment=augment,
        dsa_strategy=strategy,
        **values,
    )


def dsa_strategy(dataset: str) -> str:
    """The DSA strategy of ``dataset``: the reference's
    ``color_crop_cutout_flip_scale_rotate``, without ``flip`` for digit datasets (a
    flipped 2 or 7 is another digit; the DC/DSA reference and the paper's supplementary
    use no flip for MNIST and SVHN); ``none`` for video (DSA transforms images; the
    paper uses no DSA on Kinetics)."""
    info = gdata.get_info(dataset)
    if info.is_video:
        return "none"
    if info.name in NO_FLIP:
        return "color_crop_cutout_scale_rotate"
    return "color_crop_cutout_flip_scale_rotate"
