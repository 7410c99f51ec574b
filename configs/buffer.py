"""Expert trajectories for MTT (ref mtt-distillation `buffer.py`).

Run (paper / ref setting, CIFAR-10 with ZCA for MTT IPC 1 and 10):
  python launch/buffer.py --config=configs/buffer.py:cifar10 --workdir=/data/buffers/cifar10_zca
  (100 experts x 50 epochs; the ref trains them one by one, here 10 at a time vmapped)
Then distil with `--config.buffer_dir=/data/buffers/cifar10_zca` (configs/mtt.py).

`--config=configs/buffer.py:mnist,runlocal`: 2 experts x 3 epochs at width 32 on 100 images
per class (seconds). CPU-sized MNIST buffer (26 min on 2 busy cores; see configs/mtt.py):
  python launch/buffer.py --config=configs/buffer.py:mnist --workdir=/tmp/mtt_runs/buffer_mnist1k_w32 \
      --config.model.width=32 --config.num_experts=5 --config.epochs=4 \
      --config.experts_per_chunk=1 --config.data.train_per_class=1000

Settings (ref `buffer.py` defaults, README: "50 epochs with the default learning rate for
all of our experts"): SGD lr_teacher 0.01, momentum 0, weight decay 0, batch 256, no lr
decay, DSA (strategy color_crop_cutout_flip_scale_rotate, per-sample parameters, one
op-group per batch) on every training batch, parameters saved before training and after
every epoch. ZCA (reg 0.1) on CIFAR-10/100 by default, as the ref's `--zca` runs; MTT
CIFAR-10 IPC 50 uses no ZCA: train that buffer with `--config.data.zca=False`.

Selection: the experts see the SAME real samples as the distillation (paper: "drop the
same samples"): use the same `seed` and `selection.*` values as the MTT run
(`gold.distill.mtt` checks it and refuses a mismatch). `min_per_class` must match the
distillation's floor when it binds (the loop keeps >= ipc per class with real init).

Interrupted? Rerun the same command: finished chunks are kept, missing ones trained.
`--config.num_experts` may grow on a rerun (adds experts); nothing else may change.
"""

import ml_collections

from gold import config_utils
from gold.configs import common
from gold.configs import dc

# ZCA by default where the ref MTT runs use it (IPC 1/10 on CIFAR, CIFAR-100 IPC 1/50).
_ZCA_DEFAULT = ("cifar10", "cifar10_jpeg", "cifar100")


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Expert-buffer settings for `dataset` (argument `dataset[,runlocal]`)."""
    dataset, options = common.parse_arg(arg, "cifar10")
    config = ml_collections.ConfigDict()
    config.data = common.data(dataset)
    config.data.zca = dataset in _ZCA_DEFAULT
    config.data.train_per_class = 0  # > 0: first n training images per class (tiny runs)
    config.data.test_per_class = 0
    config.model = common.model(dataset=dataset)
    config.seed = 0
    config.selection = dc.selection()
    config.min_per_class = 1       # selection floor per class (set to the MTT ipc if it binds)
    config.num_experts = 100       # ref --num_experts
    config.epochs = 50             # ref --train_epochs
    config.lr = 0.01               # ref --lr_teacher
    config.momentum = 0.0          # ref: SGD(momentum=0, weight_decay=0)
    config.weight_decay = 0.0
    config.batch_size = 256        # ref --batch_train
    config.dsa_strategy = config_utils.dsa_strategy(dataset)  # "none" trains without augmentation
    config.experts_per_chunk = 10  # experts per vmapped program and per file (ref save_interval)
    config.expert_mode = "auto"    # auto (vmap on GPU/TPU, loop on CPU) | vmap | sequential
    config.dtype = "float32"       # float32 | bfloat16 (half the disk / memory)
    config.test_batch_size = 1000
    config.max_test = 0            # > 0: test the experts on the first n test images only
    return common.apply_options(config, options)
