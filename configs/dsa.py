"""DSA: DC + Differentiable Siamese Augmentation (paper supp. 12.3, ref main.py --method DSA).

Run:
  python launch/distill.py --config=configs/dsa.py:cifar10 --workdir=/tmp/dsa --config.ipc=1
Paper: CIFAR-10 DSA IPC 1 28.8 +- 0.7 full data, 30.9 +- 0.1 loss-kept 20%.

The same builder as DC (`gold/distill/dc.py`, registered as `dsa`): one DSA parameter
draw per class, applied to that class's real and synthetic batch (Siamese), per-sample
DSA while training the network on the synthetic set between outer loops, and
evaluation networks trained with DSA (the run's strategy) for 1000 epochs. Strategy
color_crop_cutout_flip_scale_rotate (ref), without flip for digit datasets (MNIST,
SVHN, digits: a flipped digit is another digit). Everything else as configs/dc.py.
"""

import ml_collections

from gold.configs import common
from gold.configs import dc
from gold.distill import dc as dc_algorithm


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Paper DSA settings for `arg` = "dataset[,runlocal]"."""
    dataset, options = common.parse_arg(arg, "cifar10")
    config = dc.base(dataset, "dsa", dc_algorithm.DCSettings)
    config.eval = common.evaluation(dataset, augment="dsa", epochs=1000)
    return common.apply_options(config, options)
