"""gold.distill: dataset distillation algorithms and their one run loop.

* Algorithms (``get_algorithm(name).make(config, real) -> Algorithm``): ``dc`` and
  ``dsa`` (:mod:`gold.distill.dc`, DSA = DC with Siamese augmentation), ``dm``
  (:mod:`gold.distill.dm`).
* Shared pieces (:mod:`gold.distill.common`): :class:`RealData` (+ in-jit class-balanced
  sampling), the ``Pixels`` parameterisation, :class:`DistillState`,
  :class:`Algorithm`, per-class loops, network training between steps.
* Matching distances (:mod:`gold.distill.matching`): gradient distances ``ours`` /
  ``mse`` / ``cos`` / ``l1`` and the DM mean-embedding distance.
* Differentiable unrolled SGD (:mod:`gold.distill.unroll`) for MTT / HaBa / LinBa.
* The run loop (:mod:`gold.distill.loop`): selection -> init -> jitted steps ->
  evaluation schedule -> checkpoints / exact resume -> ``result.json``,
  ``synthetic.npz`` (:func:`load_synthetic`) and ``synthetic.png``.
"""

from gold.distill.artifacts import SyntheticSet, load_synthetic, save_synthetic
from gold.distill.common import (Algorithm, DistillState, Pixels, RealData, Synthetic,
                                 make_real_data, real_class_batch)
from gold.distill.loop import ALGORITHMS, get_algorithm, run
from gold.distill.matching import gradient_distance, mean_embedding_distance

__all__ = [
    "ALGORITHMS", "Algorithm", "DistillState", "Pixels", "RealData", "Synthetic",
    "SyntheticSet", "get_algorithm", "gradient_distance", "load_synthetic", "make_real_data",
    "mean_embedding_distance", "real_class_batch", "run", "save_synthetic",
]
