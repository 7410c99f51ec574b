"""gold.experiments: the paper's analyses, one command each.

* :mod:`~gold.experiments.gamma`: critical sample ratio rule and the paper's ratio grid.
* :mod:`~gold.experiments.sweep`: accuracy vs kept ratio, gamma, Fig. 2 (``launch/sweep.py``).
* :mod:`~gold.experiments.stratify`: strata S1..SS of an indicator, diversity and outliers
  (Fig. 5, 6, 8; ``launch/stratify.py``).
* :mod:`~gold.experiments.monte_carlo`: the Monte-Carlo utility indicator with many small
  DC distillations vmapped at once, and its convergence (``launch/monte_carlo.py``; the
  estimator itself is :mod:`gold.utility.monte_carlo`).
* :mod:`~gold.experiments.cross_arch`: a saved synthetic set on other architectures
  (Table 17; ``launch/evaluate.py``).
* :mod:`~gold.experiments.report`: a directory of ``result.json`` files as Markdown.

Every experiment writes ``result.json`` + CSV + Markdown + PNG (matplotlib, Agg) into its
workdir and keeps one sub-run per point under ``points/`` so it resumes after a kill.
"""

from gold.experiments.gamma import PAPER_RATIOS, GammaResult, critical_ratio, format_ratio, validate_ratios

__all__ = ["GammaResult", "PAPER_RATIOS", "critical_ratio", "format_ratio", "validate_ratios"]
