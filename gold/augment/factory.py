"""Named training-time augmentations as ``AugmentFn = (key, x[B, H, W, C]) -> x_aug``."""

from __future__ import annotations

from typing import Callable, Optional

import jax

from gold.augment.dc import dc_augment
from gold.augment.dsa_ops import DEFAULT_STRATEGY, DSAConfig, dsa, parse_strategy

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]

AUGMENT_NAMES: tuple[str, ...] = ("none", "dsa", "dc_mnist", "dc_bn")
"""Valid names for :func:`get_augment`."""


def get_augment(
    name: str, strategy: str = DEFAULT_STRATEGY, cfg: DSAConfig = DSAConfig()
) -> Optional[AugmentFn]:
    """Augmentation used when training evaluation networks (reference ``get_daparam``).

    Args:
        name: ``'none'`` / ``''`` (no augmentation, returns None); ``'dsa'`` (DSA with
            per-sample parameters, one op-group per batch, as the reference's
            ``DiffAugment(seed=-1)``); ``'dc_mnist'`` (reference MNIST evaluation:
            per sample one of crop 4 / scale 0.2 / rotate 45); ``'dc_bn'`` (the
            reference's ``crop_noise`` setting for ConvNetBN).
        strategy: DSA op-groups when ``name == 'dsa'`` (``'none'`` -> None).
        cfg: DSA magnitudes when ``name == 'dsa'``.

    Returns:
        ``fn(key, x) -> x_aug`` (pure, jit / vmap compatible) or None.

    Raises:
        ValueError: on an unknown name.
    """
    if name in ("", "none", "None"):
        return None
    if name == "dsa":
        if not parse_strategy(strategy):
            return None
        return lambda key, x: dsa(key, x, strategy, siamese=False, cfg=cfg)
    if name == "dc_mnist":
        return lambda key, x: dc_augment(key, x, "crop_scale_rotate", 4, 0.2, 45, 0.001)
    if name == "dc_bn":
        return lambda key, x: dc_augment(key, x, "crop_noise", 4, 0.2, 45, 0.001)
    raise ValueError(f"unknown augmentation {name!r}; valid: {AUGMENT_NAMES}")
