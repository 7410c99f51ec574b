"""gold: data-efficient dataset distillation via critical samples selection (JAX/Flax).

Data flow, one sub-package per stage::

    data -> utility -> selection -> distill -> evaluate -> experiments
"""

__version__ = "0.1.0"
