"""Data augmentation, pure JAX (NHWC float32, jit-friendly, differentiable w.r.t. x).

* DSA (Differentiable Siamese Augmentation) for distillation and evaluation:
  :func:`sample_dsa_params` -> :class:`DSAParams`, :func:`apply_dsa`, :func:`dsa`;
  images only (:func:`require_images` refuses a strategy on clips).
  Parameters drawn with ``batch_size=1`` are Siamese (broadcast to any batch).
* DC evaluation augmentation for MNIST (reference ``get_daparam``): :func:`dc_augment`.
* CutMix (IDC): :func:`cutmix` (= :func:`sample_cutmix_box` + :func:`paste_box`).
* :func:`get_augment` (``'none' | 'dsa' | 'dc_mnist' | 'dc_bn'``) -> ``fn(key, x)`` for
  training evaluation networks.
"""

from gold.augment.dc import DC_OPS, dc_augment, pad_crop, resize_crop, rotate_crop
from gold.augment.dsa_ops import (
    DEFAULT_STRATEGY,
    DSA_GROUPS,
    DSAConfig,
    DSAParams,
    affine_sample,
    apply_dsa,
    dsa,
    parse_strategy,
    require_images,
    sample_dsa_params,
)
from gold.augment.factory import AUGMENT_NAMES, AugmentFn, get_augment
from gold.augment.mix import CutMixBox, cutmix, paste_box, sample_cutmix_box

__all__ = [
    "AUGMENT_NAMES",
    "AugmentFn",
    "CutMixBox",
    "DC_OPS",
    "DEFAULT_STRATEGY",
    "DSA_GROUPS",
    "DSAConfig",
    "DSAParams",
    "affine_sample",
    "apply_dsa",
    "cutmix",
    "dc_augment",
    "dsa",
    "get_augment",
    "pad_crop",
    "parse_strategy",
    "paste_box",
    "require_images",
    "resize_crop",
    "rotate_crop",
    "sample_cutmix_box",
    "sample_dsa_params",
]
