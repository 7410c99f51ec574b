"""DSA: DC + Differentiable Siamese Augmentation (paper supp. 12.3, ref main.py --method DSA).

Run:
  python launch/distill.py --config=configs/dsa.py:cifar10 --workdir=/tmp/dsa --config.ipc=1
Paper: CIFAR-10 DSA IPC 1 28.8 +- 0.7 full data, 30.9 +- 0.1 loss-kept 20%.

The same module as DC (`gold/distill/dc.py`, `algorithm='dsa'` sets `dsa=True`): one DSA
parameter draw per class, applied to that class's real and synthetic batch (Siamese),
per-sample DSA while training the network on the synthetic set between outer loops,
and evaluation networks trained with DSA for 1000 epochs. Strategy
color_crop_cutout_flip_scale_rotate (ref; the paper's text lists color, crop, cutout,
scale, rotate), one op group per call. Everything else as configs/dc.py.
"""

import ml_collections

from gold.configs import common
from gold.configs import dc


def get_config(dataset: str = "cifar10") -> ml_collections.ConfigDict:
    """Paper DSA settings for `dataset`."""
    config = dc.get_config(dataset)
    config.algorithm = "dsa"
    config.dsa = True
    config.dsa_strategy = dc.DSA_STRATEGY
    config.eval = common.evaluation(dataset, augment="dsa", epochs=1000)
    return config
