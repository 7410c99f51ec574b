"""gold.selection: which real samples a distillation may use.

* Class-wise policies (:mod:`gold.selection.policies`): ``random``, ``greedy`` (top
  utility), ``stratify`` (S strata, S1 = lowest utility), ``greedy_diverse`` (top utility
  inside K-means clusters); :func:`select` returns sorted int64 dataset indices.
* Score files (:mod:`gold.selection.scores`): our ``utility.npz`` or the official
  GoldFromOres JSON lists (polarity from the official drop criterion).
* :func:`select_from_config`: the selection stage of the launchers;
  :func:`selection_summary` / :func:`effective_ratio`: what a selection really kept.
* Runtime pruning inside a step (:mod:`gold.selection.runtime`, paper 5.1):
  :func:`runtime_prune_indices`, :func:`runtime_prune_weights`.
"""

from gold.selection.from_config import (SELECTION_INDICATORS, effective_ratio, select_from_config,
                                        selection_summary, selection_utility)
from gold.selection.policies import (POLICIES, class_indices, cluster_quotas, keep_count,
                                     round_half_up, select, strata_bounds)
from gold.selection.runtime import runtime_keep_count, runtime_prune_indices, runtime_prune_weights
from gold.selection.scores import json_polarity, load_json_scores, load_scores

__all__ = [
    "POLICIES", "SELECTION_INDICATORS", "class_indices", "cluster_quotas", "effective_ratio",
    "json_polarity",
    "keep_count", "load_json_scores", "load_scores", "round_half_up", "runtime_keep_count",
    "runtime_prune_indices", "runtime_prune_weights", "select", "select_from_config",
    "selection_summary", "selection_utility", "strata_bounds",
]
