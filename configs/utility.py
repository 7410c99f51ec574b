"""Compute a per-sample utility indicator (paper 4.2, supp. 12.4) on a dataset.

Run (MNIST, ~2-3 min on 2 CPU cores with 2 trials x 2 epochs at width 32):
  python launch/utility.py --config=configs/utility.py:mnist --config.data.dir=$GOLD_DATA_DIR \
      --config.indicator=loss --config.trials=2 --config.epochs=2 --config.model.width=32 \
      --workdir=/tmp/u
Writes /tmp/u/utility.npz (60,000 scores, higher = more useful), utility.json,
metrics.csv (one row per epoch), TensorBoard events, checkpoints/ and result.json.
Rerunning the same command resumes from the newest checkpoint (every
`checkpoint_every` epochs); a workdir holding another config is refused.
`--config=configs/utility.py:mnist,runlocal` shrinks the run to CPU size.

The dataset argument picks the paper's defaults (gold.utility.defaults): e.g. MNIST 50
trials x 50 epochs, Adam lr 3e-4, batch 512, kNN K 100, K-means K 128. The paper does
not name the optimiser; its learning rates are Adam's range, so Adam is the default.

Fields: indicator (loss | el2n | forgetting | density | cluster | init_distance), trials,
epochs, lr, batch_size, optimizer (adam | adamw | sgd), weight_decay, momentum,
trials_per_chunk (trials trained at once; 0 = all), trial_mode (vmap | unroll | auto:
unroll on CPU, vmap on GPU), sigma (Gaussian smoothing of the loss
curve, epochs), epoch (how many epochs of the curve to use; -1 = all), el2n_epoch (0 =
ceil(epochs / 10)), knn_k, num_clusters, kmeans_iters, ipc (real-init images per class
for init_distance), init_indices_path (the real-init indices a distillation will use;
'' = drawn with fold_in(key, 2)), save_features (store GAP features for greedy_diverse /
diversity analysis), checkpoint_every (epochs; 0 = none), data.*, model.*,
seed.
"""

import ml_collections

from gold.configs import common
from gold.utility.defaults import default_settings


def get_config(arg: str = "mnist") -> ml_collections.ConfigDict:
    dataset, options = common.parse_arg(arg, "mnist")
    config = ml_collections.ConfigDict()
    config.data = common.data(dataset)
    config.model = common.model(dataset=dataset)
    config.seed = 0
    config.indicator = "loss"
    for key, value in default_settings(dataset).items():
        config[key] = value
    config.init_indices_path = ""
    config.checkpoint_every = 1  # epochs between checkpoints of the trials (0 = none)
    return common.apply_options(config, options)
