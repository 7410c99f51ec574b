"""Massive ores: ImageNet-1K 64x64 and Kinetics-400 streamed from disk (paper Table 11).

Run (utility -> selection -> class-split DM -> evaluation, every stage resumable):
  python launch/stream.py --config=configs/stream.py:imagenet64 --workdir=/tmp/in64 \
      --config.stream.dir=/data/imagenet64_records --config.ipc=1
  python launch/stream.py --config=configs/stream.py:kinetics400 --workdir=/tmp/k400 \
      --config.stream.dir=/data/kinetics400 --config.ipc=1
`stream.dir` is a record set (`gold.data.stream.records`: convert the downsampled-ImageNet
npz batches or a prepared tfds `imagenet_resized/64x64` once) for `imagenet64`, and a
clip folder `<dir>/train/<class>/<clip>.npy|.mp4` for `kinetics400`. The evaluation streams
the held-out split from `<stream.dir>/<stream.test_split>` (`val`: the validation record set,
or `<dir>/val/<class>/<clip>`); `--config.eval.num_models=0` skips it.

Paper settings (supp. 12.3 / 12.4): ImageNet DM 5,000 iterations, lr_img 5.0, classes in
4 / 8 / 20 groups at IPC 1 / 10 / 50; with selection 50% kept (loss utility, greedy) and
2,000 / 3,000 / 3,000 iterations. Kinetics DM 5,000 iterations, lr_img 5.0, real batch
128, no DSA, ConvNetD3 + GRU, 8 / 20 groups at IPC 1 / 10; with selection 50% kept and
4,000 iterations. Loss utility: ImageNet 30 trials x 20 epochs, lr 3e-3, batch 256;
Kinetics 10 trials x 20 epochs, lr 1e-2, batch 128 (Adam, as `configs/utility.py`).
Paper results (Table 11, DM): ImageNet-1K IPC 1 / 10 / 50 1.58 / 3.86 / 8.22 in 22.4 / 24.7 /
35.0 h on full data, 1.82 / 5.11 / 9.23 in 9.8 / 15.1 / 20.4 h with selection; Kinetics-400
IPC 1 / 10 2.78 / 9.48 (37.3 / 43.5 h) vs 2.88 / 9.56 (29.4 / 32.1 h). Not reproduced here
(no such data or accelerator in this environment); see bench/notes/stream.md for timings.
"""

import ml_collections

from gold.configs import common
from gold.configs import dm

# dataset -> (iterations, lr_img, batch_real, dsa, model, groups by ipc, utility settings)
_PAPER = {
    "imagenet64": dict(iterations=5000, lr_img=5.0, batch_real=256, dsa=True,
                       model=common.model(depth=4), groups={1: 4, 10: 8, 50: 20},
                       utility=dict(trials=30, epochs=20, lr=3e-3, batch_size=256)),
    "kinetics400": dict(iterations=5000, lr_img=5.0, batch_real=128, dsa=False,
                        model=common.model(name="convnet_gru", depth=3), groups={1: 8, 10: 20},
                        utility=dict(trials=10, epochs=20, lr=1e-2, batch_size=128)),
}


def get_config(arg: str = "imagenet64") -> ml_collections.ConfigDict:
    """Streamed DM settings for `arg` = "imagenet64|kinetics400[,runlocal]"."""
    dataset, options = common.parse_arg(arg, "imagenet64")
    if dataset not in _PAPER:
        raise ValueError(f"configs/stream.py takes imagenet64 or kinetics400, got {dataset!r}")
    paper = _PAPER[dataset]
    config = dm.get_config(dataset)
    config.iterations = paper["iterations"]
    config.lr_img = paper["lr_img"]
    config.batch_real = paper["batch_real"]
    config.model = paper["model"]
    config.model.conv_impl = "auto"
    if not paper["dsa"]:  # clips: no DSA in the distillation nor in the evaluation
        config.dsa_strategy = "none"
        config.eval.augment = "none"
    if config.model.name == "convnet_gru":  # a test batch of ~1,000 frames, as 1,000 images
        config.eval.test_batch_size = 128
    config.stream = ml_collections.ConfigDict({
        "dir": "",            # record set (imagenet64) or clip folder root (kinetics400)
        "frames": 8,          # clips: frames per decoded clip
        "size": 64,           # clips: frame height = width
        "cache_dir": "",      # clips: decode cache ('' = <workdir>/decode_cache)
        "num_groups": 0,      # class groups (0 = the paper's for the ipc)
        "read_threads": 2,    # grain read threads
        "checkpoint_every": 100,
        "test_split": "val",  # the evaluation's held-out split: <dir>/val (records or clip folders)
    })
    config.group_table = tuple(sorted(paper["groups"].items()))
    config.selection.indicator = "loss"
    config.selection.ratio = 0.5
    # the loss indicator's network: config.model at depth 3 (supp. 12.4: ConvNetD3, + GRU for video)
    config.utility = ml_collections.ConfigDict({**paper["utility"], "optimizer": "adam", "depth": 3,
                                                "trial_mode": "auto", "chunk_batches": 200})
    if "runlocal" in options:
        config.iterations, config.batch_real = 10, 8
        config.model.width = 16
        config.utility.update(trials=2, epochs=2)
        config.stream.checkpoint_every = 5
        config.eval.update(num_models=2, epochs=20)
    return config
