"""CAFE: feature alignment with a dynamic bi-level loop (and its DSA variant).

Run (paper setting, CIFAR-10 IPC 1; the DSA variant with `configs/cafe.py:cifar10,dsa`):
  python launch/distill.py --config=configs/cafe.py:cifar10 --workdir=/tmp/cafe_c10 --config.ipc=1
Paper (Wang et al., CVPR 2022): CIFAR-10 IPC 1 / 10 / 50 30.3 / 46.3 / 55.5; DSA variant
31.6 / 50.9 / 62.3.

CPU-sized MNIST run (measured numbers in bench/notes/cafe_linba.md):
  python launch/distill.py --config=configs/cafe.py:mnist --workdir=/tmp/cafe_cpu \
      --config.model.width=32 --config.batch_real=64 --config.eval.augment=none \
      --config.eval.epochs=300 --config.iterations=100 --config.acc_batch_per_class=32

Hyper-parameters are declared once in `gold.distill.cafe.CAFESettings` (ref `distill.py`
defaults: 2000 iterations, noise init, images by SGD lr 0.1 momentum 0.5 halved at
1200 / 1600 / 1800, network SGD lr 0.01 batch 256, layer weights 0.1 / 0.1 / 1 / 1,
discrimination weight 0.01, stall / move thresholds 0.04 / 0.03 over windows of 10
real-accuracy measurements on 128 images per class). Evaluation (ref; presets `cafe`,
`cafe_dsa`): the DC evaluation for 600 epochs without augmentation, 1000 with DSA (the
DSA variant) or with the DC reference's MNIST crop / scale / rotate (MNIST-like data:
`get_daparam` turns it on for MNIST).
"""

import ml_collections

from gold.configs import common
from gold.configs import dc
from gold.distill import cafe as cafe_algorithm


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Reference CAFE settings for `arg` = "dataset[,dsa][,runlocal]"."""
    positional, options = common.parse_arg(arg, "cifar10")
    dataset, _, variant = positional.partition(",")
    if variant not in ("", "dsa"):
        raise ValueError(f"unknown CAFE variant {variant!r}; use 'dataset' or 'dataset,dsa'")
    config = dc.base(dataset, "cafe", cafe_algorithm.CAFESettings)
    if variant == "dsa":
        config.eval = common.evaluation(dataset, preset="cafe_dsa")
    else:
        config.dsa_strategy = "none"
        config.eval = common.evaluation(dataset, preset="cafe")
        if common.mnist_like(dataset):  # ref get_daparam: crop / scale / rotate, 1000 epochs
            config.eval.augment, config.eval.epochs = "dc_mnist", 1000
    if dataset == "digits":  # embedded 8x8 digits: tiny windows keep a step to seconds
        config.acc_batch_per_class, config.window = 32, 3
        config.max_image_steps, config.max_net_epochs = 10, 10
    config.checkpoint_every = 100
    config.log_every = 10
    return common.apply_options(config, options)
