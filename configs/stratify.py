"""Stratified analysis of an indicator (paper 4.2 I, Fig. 5-6, Table 12): launch/stratify.py.

Run (CPU size, MNIST DC IPC 1, 5 loss strata; ~40 min on 2 cores):
  python launch/stratify.py --config=configs/stratify.py:dc,mnist --workdir=/tmp/strata \
      --config.selection.indicator=loss --config.selection.num_strata=5 \
      --config.selection.utility.trials=2 --config.selection.utility.epochs=3 \
      --config.selection.utility.model.width=32 --config.model.width=32 --config.batch_real=64 \
      --config.iterations=100 --config.eval.augment=none --config.eval.epochs=300 \
      --config.eval.num_models=2 --config.eval.max_test=2000
Paper: CIFAR-10 DC IPC 1, 10 loss strata: S1 13.0 ... S10 29.8 (random strata ~28); on
MNIST both ends drop (diversity vanishes in the lowest-loss strata, Fig. 6).

Fields beyond the distillation config of configs/<algorithm>.py:
  selection.indicator, selection.num_strata (10), selection.utility.*
  repeats   runs per stratum (1)
  strata    which strata to run (() = all)
  analysis.*  diversity / outlier features
"""

from gold.configs import common
from gold.configs.sweep import algorithm_config, analysis, parse_arg, utility_settings


def get_config(arg: str = "dc,mnist"):
    algorithm, dataset, options = parse_arg(arg)
    config = algorithm_config(algorithm, dataset)
    config.selection.indicator = "loss"
    config.selection.num_strata = 10
    config.selection.utility = utility_settings(dataset)
    config.repeats = 1
    config.strata = ()
    config.analysis = analysis()
    return common.apply_options(config, options)
