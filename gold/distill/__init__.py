"""gold.distill: dataset distillation algorithms and their one run loop.

* Algorithms register themselves (:mod:`gold.distill.registry`): ``dc`` and ``dsa``
  (:mod:`gold.distill.dc`, DSA = DC with Siamese augmentation), ``dm``
  (:mod:`gold.distill.dm`), ``mtt`` (:mod:`gold.distill.mtt`); ``registry.names()``
  lists them, ``registry.build(config, real)`` builds one.
* Settings declared once per algorithm (:mod:`gold.distill.settings`).
* Shared pieces (:mod:`gold.distill.common`): :class:`RealData` (+ in-jit class-balanced
  sampling), the parameterisation ``params -> (images, labels, lr)``
  (:class:`SyntheticSpec`, :class:`Pixels`), :class:`DistillState`, :class:`Algorithm`,
  per-class loops, network training between steps.
* Pure step runners (:mod:`gold.distill.engine`): :func:`advance` (a chunk of steps in
  one ``while_loop``) and :func:`distill` (init + steps, jit / vmap-able).
* Matching distances (:mod:`gold.distill.matching`), differentiable unrolled SGD
  (:mod:`gold.distill.unroll`), MTT expert buffers (:mod:`gold.distill.buffer`).
* The run loop (:mod:`gold.distill.loop`): selection -> init -> chunks of steps ->
  evaluation schedule -> checkpoints / exact resume -> ``result.json``,
  ``synthetic.npz`` (:func:`load_synthetic`) and ``synthetic.png``.
"""

from gold.distill import registry
from gold.distill.artifacts import SyntheticSet, load_synthetic, save_synthetic
from gold.distill.common import (Algorithm, DistillState, Pixels, RealData, Synthetic,
                                 SyntheticSpec, make_real_data, real_class_batch)
from gold.distill.engine import advance, distill
from gold.distill.loop import run
from gold.distill.matching import gradient_distance, mean_embedding_distance

__all__ = [
    "Algorithm", "DistillState", "Pixels", "RealData", "Synthetic", "SyntheticSet",
    "SyntheticSpec", "advance", "distill", "gradient_distance", "load_synthetic",
    "make_real_data", "mean_embedding_distance", "real_class_batch", "registry", "run",
    "save_synthetic",
]
