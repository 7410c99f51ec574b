"""LinBa: linear bases (addressing matrix x bases) by back-propagation through training.

Run (paper setting, CIFAR-10 IPC 1 budget: 16 bases of 16x16x3, 115 coefficient rows
per class):
  python launch/distill.py --config=configs/linba.py:cifar10 --workdir=/tmp/linba_c10 --config.ipc=1
Paper (Deng & Russakovsky, NeurIPS 2022, Table 1): CIFAR-10 IPC 1 / 10 / 50 66.4 / 71.2 / 73.6.

CPU-sized MNIST run (IPC 1 budget: 29 rows per class of 16 bases at 14x14; measured
numbers in bench/notes/cafe_linba.md):
  python launch/distill.py --config=configs/linba.py:mnist --workdir=/tmp/linba_cpu \
      --config.model.width=32 --config.batch_real=64 --config.eval.augment=none \
      --config.eval.epochs=300 --config.iterations=200 --config.unroll_steps=20 \
      --config.minibatch_per_class=10

Hyper-parameters are declared once in `gold.distill.linba.LinBaSettings` (ref README
command for bases and its yml: 150 unrolled SGD steps, lr 0.01, momentum 0.9, 32 rows
per class per step; bases and coefficients by SGD lr 0.1 momentum 0.5, gradient
global-norm clip 2; xavier-uniform init; real batch of 64 per class). Evaluation (ref
`tools/evaluator.py`, `trainer.py`; the `linba` evaluation preset): 300 epochs, batch 640,
SGD lr 0.01 momentum 0.9, constant lr, no weight decay, no augmentation.
"""

import ml_collections

from gold.configs import common
from gold.configs import dc
from gold.distill import linba as linba_algorithm


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Reference LinBa settings for `arg` = "dataset[,runlocal]" (IPC is `config.ipc`, the
    storage budget)."""
    dataset, options = common.parse_arg(arg, "cifar10")
    config = dc.base(dataset, "linba", linba_algorithm.LinBaSettings)
    config.batch_real = 64  # the reference's generalisation batch per class
    config.eval = common.evaluation(dataset, preset="linba")
    config.checkpoint_every = 100
    config.log_every = 10
    return common.apply_options(config, options)
