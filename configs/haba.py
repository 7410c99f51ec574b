"""HaBa: MTT on factorised data, bases x hallucinators (ref Huage001/DatasetFactorization).

Run (CIFAR-10; first MTT's expert buffer, configs/buffer.py, with the same data / ZCA):
  python launch/buffer.py --config=configs/buffer.py:cifar10 --workdir=/data/buffers/cifar10_zca
  python launch/distill.py --config=configs/haba.py:cifar10 --workdir=/tmp/haba_c10_ipc1 \
      --config.buffer_dir=/data/buffers/cifar10_zca
Paper (HaBa, NeurIPS 2022): CIFAR-10 48.3 / 69.9 / 74.0 at IPC 1 / 10 / 50.

CPU-sized MNIST run (BENCHMARKS.md / bench/notes/haba.md; the buffer of the MTT row):
  python launch/distill.py --config=configs/haba.py:mnist --workdir=/tmp/haba_mnist \
      --config.buffer_dir=/tmp/bench_runs/buffer_mnist --config.model.width=32 \
      --config.data.train_per_class=1000 --config.iterations=200

Everything MTT sets comes from `configs/mtt.py` (data, ZCA by IPC, model, the per-IPC
table syn_steps / expert_epochs / max_start_epoch / lr_img / lr_lr / syn_lr_init /
batch_syn, evaluation: 5 ConvNets, 1000 epochs, DSA, the learned lr). The ref's HaBa
scripts (run_cifar10_ipc{1,10,50}_style5.sh) use MTT's CIFAR-10 values at IPC 1 and 10
and, at IPC 50, syn_steps 30, expert_epochs 2, max_start_epoch 20, lr_img 100, lr_lr
1e-5, syn_lr_init 0.01 with ZCA (the row below). MNIST is not in the ref: MTT's MNIST
rows with lr_img 100 and lr_hallucinator 0.1 (chosen here, see HABA_ROWS and
LR_HALLUCINATOR). HaBa's own settings, declared once in
`gold.distill.haba.HaBaSettings` (ref `distill_fac.py` + scripts): 5 hallucinators,
lr_hallucinator 100 (`--lr_style`), momentum 0.95 on bases and hallucinators and 0.9 on
the learned lr, the lr clipped at 0.001, adversarial weight 0.1 (`--lambda_club_content`),
extractor weights CE 1, likelihood 0.1, contrastive 0.1 (temperature 0.07), extractor
SGD lr 0.001 momentum 0.9, real-initialised bases.

Storage: `ipc` is the budget (numbers of `ipc` pixel images per class); the default
`bases_per_class=0` takes the most bases that fit next to the hallucinators, at least
1 (gold.distill.hallucinator.bases_for_budget): CIFAR-10 IPC 1 / 10 / 50 -> 1 (over
budget: 2.9 images' worth per class, as in the ref) / 9 / 49 bases; MNIST (width-free:
bases 784 numbers, a hallucinator 1,372) IPC 1 / 10 / 50 -> 1 (1.88 images' worth) /
9 / 49. The ref's `--ipc` is the number of bases: `--config.bases_per_class=10`
reproduces its IPC-10 script exactly. `result.json` reports `storage_per_class`.
"""

import ml_collections

from gold import config_utils
from gold.configs import common
from gold.configs import mtt as mtt_config
from gold.distill import haba as haba_algorithm
from gold.distill import mtt as mtt_algorithm
from gold.distill import settings as gsettings

# rows that differ from MTT's table: (dataset, ipc) -> (syn_steps, expert_epochs,
# max_start_epoch, lr_img, lr_lr, syn_lr_init, zca, batch_syn). CIFAR-10 IPC 50: the ref
# script. MNIST (chosen here): MTT's rows with lr_img / 10, the same effective step
# lr / (1 - momentum) under HaBa's momentum 0.95 as MTT's 1000 under 0.5.
HABA_ROWS = {
    ("cifar10", 50): (30, 2, 20, 100.0, 1e-5, 0.01, True, 0),
    ("mnist", 1): (50, 2, 2, 100.0, 1e-7, 0.01, False, 0),
    ("mnist", 10): (30, 2, 10, 100.0, 1e-5, 0.01, False, 0),
    ("mnist", 50): (30, 2, 20, 100.0, 1e-5, 0.01, False, 0),
}
# lr_hallucinator chosen here per dataset (the ref's 100 is for ZCA'd CIFAR-10): on
# MNIST its one-channel convolutions sum their gradient over every pixel of every base,
# and 100 (or 1) grows the decoded pixels without bound within 10 iterations
# (bench/notes/haba.md); 0.1 keeps them bounded.
LR_HALLUCINATOR = {"mnist": 0.1}


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """`arg` = "dataset[,ipc][,runlocal]": MTT's config for it with HaBa's settings."""
    positional, options = common.parse_arg(arg, "cifar10")
    dataset = positional.partition(",")[0]
    config = mtt_config.get_config(positional)
    config.algorithm = "haba"
    mtt_defaults = gsettings.to_config(mtt_algorithm.MTTSettings)
    for name, value in gsettings.to_config(haba_algorithm.HaBaSettings).items():
        if name not in mtt_defaults or mtt_defaults[name] != value:
            config[name] = value
    rows = {r[0]: r for r in config.per_ipc}
    family = mtt_config._ALIASES.get(dataset, dataset)
    config.lr_hallucinator = LR_HALLUCINATOR.get(family, config.lr_hallucinator)
    for (name, ipc), (*values, zca, batch_syn) in HABA_ROWS.items():
        if name == family:
            rows[ipc] = (ipc, *values, batch_syn)
            if config.ipc == ipc:
                config.data.zca = zca
    config.per_ipc = tuple(rows[i] for i in sorted(rows))
    config.dsa_strategy = config_utils.dsa_strategy(dataset)
    return common.apply_options(config, options)
