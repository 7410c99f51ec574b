"""DM: distribution matching (paper supp. 12.3, ref main_DM.py).

Run:
  python launch/distill.py --config=configs/dm.py:cifar10 --workdir=/tmp/dm --config.ipc=1
Paper: CIFAR-10 DM IPC 1 26.0 +- 0.8 full data, 29.7 +- 0.3 loss-kept 5%.

CPU-sized MNIST run (or `configs/dm.py:mnist,runlocal`):
  python launch/distill.py --config=configs/dm.py:mnist --workdir=/tmp/dm_cpu \
      --config.model.width=32 --config.batch_real=64 --config.iterations=1000 \
      --config.eval.augment=none --config.eval.epochs=300

Hyper-parameters are declared once in `gold.distill.dm.DMSettings` (paper: 20,000
iterations; SGD on images lr 1.0 momentum 0.5; real init, drawn after dropping;
Siamese DSA on the real and synthetic batch of each class; a fresh random network per
iteration, never trained; loss = sum over classes of the squared distance between mean
embeddings). Here: 10,000 iterations on TinyImageNet, the digits demo's 200, the
dataset's DSA strategy (no flip for digits). Real batch 256 per class (halved while
>= twice the largest kept class). Evaluation: 1000 epochs with DSA (the run's
strategy), SGD lr 0.01 momentum 0.9. `dsa_strategy='none'` turns augmentation off
(paper: no DSA on Kinetics); evaluation then uses the dataset's default augmentation.
"""

import ml_collections

from gold.configs import common
from gold.configs import dc
from gold.distill import dm as dm_algorithm


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Paper DM settings for `arg` = "dataset[,runlocal]"."""
    dataset, options = common.parse_arg(arg, "cifar10")
    config = dc.base(dataset, "dm", dm_algorithm.DMSettings)
    if dataset == "tinyimagenet":
        config.iterations = 10000
    if dataset == "digits":  # the README demo on embedded 8x8 digits (a few CPU minutes)
        config.iterations = 200
    config.eval = common.evaluation(dataset, augment="dsa", epochs=1000)
    config.checkpoint_every = 1000
    config.log_every = 100
    return common.apply_options(config, options)
