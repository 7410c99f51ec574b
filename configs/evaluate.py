"""Cross-architecture evaluation of saved synthetic sets (paper supp. 10, Table 17).

Run (two MNIST DC IPC 1 sets, e.g. full data and loss-kept 5%, on the paper's six
architectures; CPU size ~10 min):
  python launch/evaluate.py --config=configs/evaluate.py --workdir=/tmp/xarch \
      --config.synthetic=/tmp/dc_full,/tmp/dc_loss5 --config.eval.epochs=300 \
      --config.eval.augment=none --config.eval.num_models=2 --config.eval.max_test=2000
Paper Table 17 (MNIST DC IPC 1, ConvNet-distilled): ConvNet 91.8, LeNet 89.2, AlexNet
84.4, VGG 88.8, ResNet 91.1, MLP 64.0 (full data); loss-kept 3-10% is as good or better.

Fields:
  synthetic   comma-separated synthetic.npz files or distillation workdirs
  labels      row labels (() = from each set's metadata: 'loss 5%', 'dc full', ...)
  models      architectures (default mlp, convnet, lenet, alexnet, vgg11, resnet18)
  eval.*      0 / '' = keep the protocol stored with the set; else override it
              (num_models, epochs, batch_size, lr, augment, test_batch_size), and
              max_test > 0 tests on the first max_test test images only
  data.dir    where the set's dataset lives (default $GOLD_DATA_DIR)
  seed        evaluation networks' PRNG seed
"""

import ml_collections

from gold.configs import common
from gold.experiments.cross_arch import PAPER_MODELS


def get_config(arg: str = ""):
    """Argument: '' or 'runlocal' (1 model x 20 epochs on 2 architectures)."""
    _, options = common.parse_arg(arg)
    config = ml_collections.ConfigDict()
    config.synthetic = ""
    config.labels = ()
    config.models = PAPER_MODELS
    config.seed = 0
    config.data = ml_collections.ConfigDict({"dir": common.data("").dir})
    config.eval = ml_collections.ConfigDict({
        "num_models": 0, "epochs": 0, "batch_size": 0, "lr": 0.0, "augment": "",
        "test_batch_size": 0, "max_test": 0,
    })
    return common.apply_options(config, options)
