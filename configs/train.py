"""Train a classifier on a real dataset (the full-data reference accuracy).

Run:
  python launch/train.py --config=configs/train.py:mnist --workdir=/tmp/train \
      --config.model.width=32 --config.epochs=1
Expected: >= 95% test accuracy on MNIST after one epoch at width 32 (~1 min on 2 CPUs).
Writes config.json, metrics.csv, TensorBoard events, checkpoints/ (every
`checkpoint_every` epochs) and result.json; rerunning the same command resumes.
`--config=configs/train.py:mnist,runlocal` shrinks the run to CPU size.
"""

import ml_collections

from gold.configs import common

# dataset -> (epochs, batch_size, lr)
_DEFAULTS = {
    "digits": (30, 64, 0.01),
    "mnist": (5, 256, 0.01),
    "fashion_mnist": (10, 256, 0.01),
    "cifar10": (50, 256, 0.01),
    "cifar10_jpeg": (50, 256, 0.01),
    "cifar100": (50, 256, 0.01),
    "svhn": (30, 256, 0.01),
    "tinyimagenet": (50, 256, 0.01),
}


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
    dataset, options = common.parse_arg(arg, "digits")
    epochs, batch_size, lr = _DEFAULTS.get(dataset, (30, 256, 0.01))
    config = ml_collections.ConfigDict()
    config.data = common.data(dataset)
    config.model = common.model(dataset=dataset)
    config.seed = 0
    config.epochs = epochs
    config.batch_size = batch_size
    config.optimizer = "sgd"
    config.lr = lr
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.augment = "none"
    config.checkpoint_every = 1  # epochs between checkpoints (0 = none)
    return common.apply_options(config, options)
