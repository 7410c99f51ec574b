"""DM: distribution matching (paper supp. 12.3, ref main_DM.py).

Run:
  python launch/distill.py --config=configs/dm.py:cifar10 --workdir=/tmp/dm --config.ipc=1
Paper: CIFAR-10 DM IPC 1 26.0 +- 0.8 full data, 29.7 +- 0.3 loss-kept 5%.

CPU-sized MNIST run:
  python launch/distill.py --config=configs/dm.py:mnist --workdir=/tmp/dm_cpu \
      --config.model.width=32 --config.batch_real=64 --config.iterations=1000 \
      --config.eval.augment=none --config.eval.epochs=300

Paper settings: 20,000 iterations (10,000 TinyImageNet); SGD on images lr 1.0 momentum
0.5; real batch 256 per class (halved while >= twice the largest kept class); real
init, drawn after dropping; Siamese DSA (ref strategy) on the real and synthetic batch
of each class; a fresh random network per iteration, never trained; loss = sum over
classes of the squared distance between mean embeddings. Evaluation: 1000 epochs with
DSA augmentation (ref `epoch_eval_train` 1000 for DM), SGD lr 0.01 momentum 0.9.
`dsa_strategy='none'` turns augmentation off (paper: no DSA on Kinetics).
"""

import ml_collections

from gold.configs import common
from gold.configs import dc


def get_config(dataset: str = "cifar10") -> ml_collections.ConfigDict:
    """Paper DM settings for `dataset`."""
    config = dc.base(dataset, "dm")
    config.iterations = 10000 if dataset == "tinyimagenet" else 20000
    if dataset == "digits":  # the README demo on embedded 8x8 digits (a few CPU minutes)
        config.iterations = 200
    config.init = "real"
    config.lr_img = 1.0
    config.momentum_img = 0.5
    config.lr_net = 0.01  # listed by the paper; DM never trains its networks
    config.dsa_strategy = dc.DSA_STRATEGY
    config.eval = common.evaluation(dataset, augment="dsa", epochs=1000)
    config.checkpoint_every = 1000
    config.log_every = 100
    return config
