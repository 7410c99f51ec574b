"""FRePo: neural feature regression with a pool of online models (Zhou et al., NeurIPS
2022; ref yongchao97/FRePo `script/distill.py`).

The argument is "dataset[,ipc][,mse|dc][,runlocal]" (default IPC 1, mse). Default
(`mse`): labels learned with the label-margin term (ref `--learn_label=True`) and
evaluated with FRePo's own evaluation (the `frepo` preset: Adam 3e-4, MSE 0.5 * sum on
the centred labels, 500 warm-up steps then cosine to 0.01 x lr, batch min(M, 500),
1000 / 2000 / 5000 steps for 10 / 100 / 500 images, DSA-style augmentation). `dc`: hard
labels and, beside it, the DC reference evaluation (cross-entropy; MNIST-like:
crop/scale/rotate, 1000 epochs; else 300 epochs without augmentation).

Run:
  python launch/distill.py --config=configs/frepo.py:cifar10,1 --workdir=/tmp/frepo_c10
Paper (critical-samples Table 16): gamma(loss) of FRePo at IPC 1: 80% (CIFAR-10) /
60% (MNIST); supp. remark 8: the ref's defaults, lr 0.001, 500,000 steps.

CPU-sized MNIST runs (or `configs/frepo.py:mnist,runlocal`):
  python launch/distill.py --config=configs/frepo.py:mnist,1,dc --workdir=/tmp/frepo_cpu \
      --config.model.width=32 --config.batch_real=64 --config.iterations=300 \
      --config.lr_img=0.01 --config.eval.augment=none --config.eval.epochs=300
  (learned labels: `:mnist,1` and `--config.eval.augment=none`, the preset's 1000 steps)

Hyper-parameters are declared once in `gold.distill.frepo.FRePoSettings` (ref): a pool
of 10 online ConvNets (config.model's depth and width, BatchNorm as in the ref README's
`--normalization=batch`), each trained by Adam lr 3e-4 with MSE on up to 500 synthetic
images per step and re-initialised after 100 updates (initial ages staggered); KRR on
their penultimate features (reg 1e-6 * trace / S); support labels centred one-hot /
sqrt(K/10), learned; loss 0.5 * sum of squares + the label-margin term; LAMB lr 1e-3
(paper; ref 3e-4) with cosine decay to 0.1 x lr over `iterations`; real init. The ref's
real batch is 1024 uniformly drawn images; here `batch_real` = 1024 // K per class,
class-balanced. Non-MNIST data: ZCA (reg 0.1, stored with the synthetic set) and the
support doubled by horizontal flips (ref `use_flip`).

"""

import ml_collections

from gold import data as gdata
from gold.configs import common
from gold.configs import dc
from gold.configs import kip as kip_config
from gold.distill import frepo as frepo_algorithm

REF_BATCH = 1024  # ref kernel.batch_size (real images per step, drawn uniformly)


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """Ref FRePo settings for `arg` = "dataset[,ipc][,mse|dc][,runlocal]"."""
    dataset, ipc, evaluation, options = kip_config.parse(arg, "cifar10")
    config = dc.base(dataset, "frepo", frepo_algorithm.FRePoSettings)
    config.ipc = ipc
    config.batch_real = max(1, REF_BATCH // gdata.get_info(dataset).num_classes)
    config.data.zca = kip_config.uses_zca(dataset)
    config.flip_support = kip_config.uses_zca(dataset)  # ref use_flip: every non-MNIST dataset
    kip_config.label_evaluation(config, dataset, evaluation)
    config.label_margin_weight = 1.0 if config.learn_labels else 0.0
    if dataset == "digits":  # the embedded 8x8 demo
        config.iterations = 200
    config.checkpoint_every = 100
    config.log_every = 20
    return common.apply_options(config, options)
