"""DC: dataset condensation with gradient matching (paper supp. 12.3, ref main.py).

Run (paper setting, MNIST IPC 1, loss-kept 5%):
  python launch/distill.py --config=configs/dc.py:mnist --workdir=/tmp/dc_mnist \
      --config.ipc=1 --config.selection.indicator=loss --config.selection.ratio=0.05
Paper: MNIST DC IPC 1 91.8 +- 0.2 full data, 91.4 +- 0.3 loss-kept 5% (ConvNetD3,
reference MNIST evaluation: crop/scale/rotate augmentation, 1000 epochs).

CPU-sized run: `--config=configs/dc.py:mnist,runlocal` (same code path, small numbers),
or width 32 with the paper's loop (BENCHMARKS.md lists measured settings):
  python launch/distill.py --config=configs/dc.py:mnist --workdir=/tmp/dc_cpu \
      --config.model.width=32 --config.batch_real=64 --config.iterations=200 \
      --config.eval.augment=none --config.eval.epochs=300
`--config.iterations=0` evaluates the initial set (with `--config.init=real`: the
random-real baseline). `--show_config` lists every field with its meaning.

The algorithm's hyper-parameters are declared once, with their defaults and docs, in
`gold.distill.dc.DCSettings` (paper: 1000 iterations; SGD on images lr 0.1 momentum
0.5; network lr 0.01 without momentum, batch 256 of synthetic images; (outer, inner)
loops by IPC from the reference get_loops; noise init; distance "ours"). This file
sets only what differs per dataset. Real batch 256 per class, halved while >= twice
the largest kept class. Evaluation: 5 ConvNets, SGD lr 0.01 momentum 0.9 wd 5e-4,
batch 256, 300 epochs (the reference's schedule); MNIST-like datasets train their
evaluation networks with the reference's crop/scale/rotate augmentation for 1000.

Runtime pruning (paper 5.1, supp. 12.6; off by default):
  --config.runtime_pruning.enabled=True --config.runtime_pruning.ratio=0.3
`ratio` is the PRUNED fraction of every real batch (paper: "pruning 30%" = keep 70%);
it starts once 40% of the outer loops of an iteration are done. At IPC 1 the paper
runs 10 outer loops per iteration and 100 iterations (`--config.iterations=100`; the
10 outer loops follow from `PRUNING_LOOPS_BY_IPC`); a setting under which pruning
could never start is refused.
"""

import ml_collections

from gold import config_utils
from gold.configs import common
from gold.distill import dc as dc_algorithm
from gold.distill import settings as gsettings


def selection() -> ml_collections.ConfigDict:
    """`selection.*`: which real samples a run may see (shared by every stage)."""
    return ml_collections.ConfigDict({
        "indicator": "none",    # none|random|loss|el2n|forgetting|density|cluster|init_distance|monte_carlo|file
        "ratio": 1.0,           # kept fraction per class, 0 < ratio <= 1
        "utility_path": "",     # a saved utility.npz (or an official score .json)
        "stratum": 0,           # 1..num_strata (1 = lowest utility); 0 = off
        "num_strata": 10,
        "policy": "greedy",     # greedy | greedy_diverse
    })


def base(dataset: str, algorithm: str, settings_cls: type) -> ml_collections.ConfigDict:
    """A distillation config: the run loop's fields (data, model, selection, evaluation,
    cadence) plus the algorithm's settings with their declared defaults."""
    config = ml_collections.ConfigDict()
    config.algorithm = algorithm
    config.data = common.data(dataset)
    config.data.train_per_class = 0  # > 0: first n training images per class (tiny runs)
    config.data.test_per_class = 0   # > 0: first n test images per class
    config.model = common.model(dataset=dataset)
    config.model.conv_impl = "auto"  # auto (shifted-matmul weight grad on CPU) | shifted | xla
    config.seed = 0
    config.batch_real = 256
    config.selection = selection()
    config.eval_every = 0        # iterations between intermediate evaluations (0 = final only)
    config.checkpoint_every = 50
    config.log_every = 10
    config.max_abs_ratio = 1000.0  # stop when a synthetic pixel exceeds this x the largest real one
    # devices per mesh axis (gold.parallel); 0 = auto: all devices on the axis each use prefers
    config.mesh = ml_collections.ConfigDict({"data": 0, "model": 0, "class": 0})
    config.class_groups = 0  # > 0: distil this many class groups apart and merge (DM; class_split)
    config.update(gsettings.to_config(settings_cls))
    if "dsa_strategy" in config:
        config.dsa_strategy = config_utils.dsa_strategy(dataset)
    return config


def get_config(arg: str = "mnist") -> ml_collections.ConfigDict:
    """Paper DC settings for `arg` = "dataset[,runlocal]" (IPC is `config.ipc`)."""
    dataset, options = common.parse_arg(arg, "mnist")
    config = base(dataset, "dc", dc_algorithm.DCSettings)
    config.eval = common.reference_evaluation(dataset)
    return common.apply_options(config, options)
