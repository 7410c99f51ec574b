"""Critical-sample-ratio sweep (paper Sec. 3.1, Fig. 2, supp. 12.3): launch/sweep.py.

Run (CPU size, MNIST DC IPC 1, random vs loss on a short grid; ~1 h each on 2 cores):
  python launch/sweep.py --config=configs/sweep.py:dc,mnist --workdir=/tmp/sweep_random \
      --config.selection.indicator=random --config.ratios="(0.001,0.01,0.1)" --config.repeats=2 \
      --config.model.width=32 --config.batch_real=64 --config.iterations=100 \
      --config.eval.augment=none --config.eval.epochs=300 --config.eval.num_models=2 \
      --config.eval.max_test=2000
  (same with --config.selection.indicator=loss --config.selection.utility.trials=2
   --config.selection.utility.epochs=3 --config.selection.utility.model.width=32)
Paper (full 1000-iteration DC, 5 repeats): CIFAR-10 DC IPC 1 gamma(random) = 10%,
gamma(loss) = 0.5%; MNIST full 91.8 +- 0.2.

The argument is '<algorithm>,<dataset>[,runlocal]' (default algorithm dc; runlocal
shrinks everything to CPU size): the distillation config of configs/<algorithm>.py, plus
  ratios        kept fractions (default: the paper grid 0.02% .. 90%)
  repeats       runs per ratio (5; seeds seed, seed+1, ...)
  full_repeats  full-data runs (0 = repeats)
  gamma_rule    at_least (mean >= mu - sigma, the paper's numbers) | within (|mean - mu| <= sigma)
  gamma_monotone  gamma must be followed by comparable ratios only
  selection.indicator  random | loss | ... | craig | gradmatch | glister | herding | kmeans
  selection.utility.*  settings of an indicator computed once for the whole sweep
  analysis.*    diversity / outlier features (see configs/sweep.py)
"""

import importlib

import ml_collections

from gold.configs import common
from gold.experiments.gamma import PAPER_RATIOS
from gold.utility.defaults import default_settings

# ---------------------------------------------------------------------------------------
# Helpers shared by the experiment configs (sweep, stratify, monte_carlo, evaluate): an
# experiment config is a distillation config (configs/<algorithm>.py) plus the
# experiment's own fields, so every distillation field (ipc, iterations, model.width,
# eval.*, selection.*) is overridden the same way as for launch/distill.py.


def parse_arg(arg: str, default_algorithm: str = "dc") -> tuple[str, str, frozenset]:
    """``'dc,mnist'`` / ``'dc:mnist'`` / ``'mnist'`` (each optionally followed by
    ``,runlocal``) -> (algorithm, dataset, options)."""
    positional, options = common.parse_arg(arg, "mnist")
    parts = positional.split(",")
    if len(parts) == 1:
        return default_algorithm, parts[0], options
    if len(parts) == 2:
        return parts[0], parts[1], options
    raise ValueError(f"config argument must be '<algorithm>,<dataset>[,runlocal]' or "
                     f"'<dataset>[,runlocal]', got {arg!r}")


def algorithm_config(algorithm: str, dataset: str) -> ml_collections.ConfigDict:
    """``configs/<algorithm>.py:get_config(dataset)``.

    Raises:
      ValueError: no config file for ``algorithm``.
    """
    try:
        module = importlib.import_module(f"gold.configs.{algorithm}")
    except ModuleNotFoundError as err:
        raise ValueError(f"no config for algorithm {algorithm!r} (configs/{algorithm}.py)") from err
    return module.get_config(dataset)


def utility_settings(dataset: str) -> ml_collections.ConfigDict:
    """``selection.utility``: how an indicator is computed when no ``utility_path`` is
    given (paper defaults of ``dataset``; e.g. MNIST 50 trials x 50 epochs, slow on a
    CPU: shrink with ``--config.selection.utility.trials=2 ...epochs=2``), plus the
    classifier ``model`` and the coreset options."""
    cfg = ml_collections.ConfigDict(default_settings(dataset))
    cfg.model = common.model(dataset=dataset)
    cfg.gradients = "last_layer"  # coreset gradient embedding: last_layer | bias
    cfg.val_size = 1000           # GLISTER validation samples
    cfg.lam = 0.5                 # GradMatch ridge weight
    cfg.eta = 0.01                # GLISTER look-ahead step
    return cfg


def analysis() -> ml_collections.ConfigDict:
    """``analysis.*``: diversity / outlier measurement of each point's kept samples."""
    return ml_collections.ConfigDict({
        "features": "auto",   # auto (utility features, else train one classifier) | utility | none
        "outlier_std": 2.0,   # outlier: distance to class centre > mean + outlier_std * std
    })


def get_config(arg: str = "dc,mnist"):
    algorithm, dataset, options = parse_arg(arg)
    config = algorithm_config(algorithm, dataset)
    config.ratios = PAPER_RATIOS
    config.repeats = 5
    config.full_repeats = 0
    config.gamma_rule = "at_least"
    config.gamma_monotone = False
    config.selection.indicator = "random"
    config.selection.utility = utility_settings(dataset)
    config.analysis = analysis()
    return common.apply_options(config, options)
