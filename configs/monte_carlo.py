"""Monte-Carlo utility indicator (paper 4.2 b, supp. 7, 12.4): launch/monte_carlo.py.

Run (CPU size: MNIST pool of 100 images per class, 64 subsets of 5%, DC IPC 1, short
runs; ~20 min on 2 cores, measured numbers in BENCHMARKS.md):
  python launch/monte_carlo.py --config=configs/monte_carlo.py:dc,mnist --workdir=/tmp/mc \
      --config.data.train_per_class=100 --config.monte_carlo.subset_ratio=0.05 \
      --config.monte_carlo.trials=64 --config.monte_carlo.chunk=16 \
      --config.monte_carlo.sequential_check=2 --config.model.width=32 --config.iterations=50 \
      --config.eval.augment=none --config.eval.epochs=100 --config.eval.num_models=2 \
      --config.eval.max_test=1000
Writes utility.npz (indicator monte_carlo, usable as selection.utility_path), trials.npz,
result.json (seconds per trial batched vs sequential, split-half Spearman vs trials),
convergence.csv/md/png.

Paper defaults (supp. 12.4, chosen by the dataset argument): CIFAR-10 M/N 0.05 x 1000
trials, CIFAR-100 0.3 x 500, MNIST 0.008 x 1000, SVHN 0.3 x 500; DC at IPC 1.

Fields beyond the DC config (configs/dc.py):
  monte_carlo.trials            K subsets
  monte_carlo.subset_ratio      M / N
  monte_carlo.balanced          False = uniform subsets (paper), True = M / C per class
  monte_carlo.chunk             subsets per vmapped program
  monte_carlo.crn               False = independent trials (paper); True = common random numbers
                                (every trial shares one key: same networks, inits, eval nets)
  monte_carlo.sequential_check  also run the first n subsets one by one (speed, agreement)
  monte_carlo.convergence       trials per half for the split-half curve (() = powers of 2)
  monte_carlo.mode              hybrid (one compiled step run per subset + vmapped evaluation of
                                the chunk; default, fastest measured) | vmap (steps vmapped too) |
                                sequential
"""

import ml_collections

from gold.configs import common
from gold.configs.sweep import algorithm_config, parse_arg
from gold.experiments.monte_carlo import PAPER_SETTINGS


def get_config(arg: str = "dc,mnist"):
    algorithm, dataset, options = parse_arg(arg)
    config = algorithm_config(algorithm, dataset)
    config.ipc = 1
    ratio, trials = PAPER_SETTINGS.get(dataset, (0.05, 1000))
    config.monte_carlo = ml_collections.ConfigDict({
        "trials": trials,
        "subset_ratio": ratio,
        "balanced": False,
        "chunk": 16,
        "crn": False,
        "sequential_check": 0,
        "convergence": (),
        "mode": "hybrid",
    })
    return common.apply_options(config, options)
