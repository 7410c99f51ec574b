"""gold.utility: per-sample utility indicators (HIGHER = MORE UTILITY) and their artifacts.

* Loss family (one vmapped training run of T classifiers, :mod:`gold.utility.loss`):
  ``loss`` (paper 4.2: minus the Gaussian-smoothed mean loss), ``el2n``, ``forgetting``.
* Feature family on GAP features of the trained classifier
  (:mod:`gold.utility.features`): ``density`` (kNN), ``cluster`` (K-means in JAX),
  ``init_distance``.
* Subset measures (:mod:`gold.utility.diversity`): diversity (intra / inter-class
  variance), outlier counts.
* Artifacts (:mod:`gold.utility.artifact`): :class:`Utility`, ``save_utility`` /
  ``load_utility`` (``utility.npz`` + JSON).

Entry points: :func:`compute_utility` (library) and :func:`run` (``launch/utility.py``).
"""

from gold.utility.artifact import (FILE_NAME, Utility, UtilityFileError, check_utility, load_utility,
                                   save_utility)
from gold.utility.defaults import FEATURE_FAMILY, INDICATORS, LOSS_FAMILY, default_settings
from gold.utility.diversity import DiversityStats, count_outliers, diversity, outlier_mask
from gold.utility.features import (cluster_distance, cluster_scores, default_init_indices,
                                   density_scores, gap_features, init_distance,
                                   init_distance_scores, kmeans, knn_mean_distance)
from gold.utility.loss import (TrainSettings, TrialStats, el2n_scores, forgetting_scores,
                               loss_scores, train_trials)
from gold.utility.pipeline import (check_indicator, compute_utility, load_indices,
                                   resolve_settings, run, scores_from_record)
from gold.utility.smoothing import gaussian_smooth, smoothed_value, smoothing_matrix

__all__ = [
    "FEATURE_FAMILY", "FILE_NAME", "INDICATORS", "LOSS_FAMILY", "DiversityStats",
    "TrainSettings", "TrialStats", "Utility", "UtilityFileError", "check_indicator", "check_utility",
    "cluster_distance", "cluster_scores", "compute_utility", "count_outliers",
    "default_init_indices", "default_settings", "density_scores", "diversity",
    "el2n_scores", "forgetting_scores", "gap_features", "gaussian_smooth", "init_distance",
    "init_distance_scores", "kmeans", "knn_mean_distance", "load_indices", "load_utility",
    "loss_scores", "outlier_mask", "resolve_settings", "run", "save_utility",
    "scores_from_record", "smoothed_value", "smoothing_matrix", "train_trials",
]
