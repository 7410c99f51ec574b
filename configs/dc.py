"""DC: dataset condensation with gradient matching (paper supp. 12.3, ref main.py).

Run (paper setting, MNIST IPC 1, loss-kept 5%):
  python launch/distill.py --config=configs/dc.py:mnist --workdir=/tmp/dc_mnist \
      --config.ipc=1 --config.selection.indicator=loss --config.selection.ratio=0.05
Paper: MNIST DC IPC 1 91.8 +- 0.2 full data, 91.4 +- 0.3 loss-kept 5% (ConvNetD3,
reference MNIST evaluation: 1000 epochs with crop/scale/rotate augmentation).

CPU-sized run (~10 min on 2 cores; measured numbers in BENCHMARKS.md):
  python launch/distill.py --config=configs/dc.py:mnist --workdir=/tmp/dc_cpu \
      --config.model.width=32 --config.batch_real=64 --config.iterations=200 \
      --config.eval.augment=none --config.eval.epochs=300
`--config.iterations=0` evaluates the initial set (with `--config.init=real`: the
random-real baseline).

Paper settings (all visible below): 1000 iterations; SGD on images lr 0.1 momentum
0.5; network lr 0.01 (ref: plain SGD, no momentum), inner-loop batch 256 of synthetic
images; (outer, inner) loops (1, 1) IPC 1, (10, 50) IPC 10, (50, 10) IPC 50 (ref
get_loops also has 20/30/40); real batch 256 per class, halved while >= twice the
largest kept class; noise init; distance "ours" (sum over layers / output channels of
1 - cos). Evaluation: 5 ConvNets (the tables: 5 x 20), SGD lr 0.01 momentum 0.9 wd 5e-4,
batch 256, 300 epochs, lr x0.1 at half; MNIST-like datasets train their evaluation
networks with the reference's crop/scale/rotate augmentation for 1000 epochs.

Runtime pruning (paper 5.1, supp. 12.6; off by default):
  --config.runtime_pruning.enabled=True --config.runtime_pruning.ratio=0.3
`ratio` is the PRUNED fraction of every real batch (paper: "pruning 30%" = keep 70%);
it starts once 40% of the outer loops of an iteration are done (`start`,
`start_unit='outer_loop'`; 'iteration' counts iterations instead). At IPC 1 the paper
runs 100 iterations with 10 outer loops (`--config.iterations=100
--config.outer_loop=10`), since one outer loop never trains the network.
"""

import ml_collections

from gold.configs import common

# Reference get_loops: (ipc, outer_loop, inner_loop).
LOOPS_BY_IPC = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15), (50, 50, 10))
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # ref ParamDiffAug / DSA default


def selection() -> ml_collections.ConfigDict:
    """`selection.*` (DESIGN.md CLI contract): which real samples the run may see."""
    return ml_collections.ConfigDict({
        "indicator": "none",    # none|random|loss|el2n|forgetting|density|cluster|init_distance|monte_carlo|file
        "ratio": 1.0,           # kept fraction per class, 0 < ratio <= 1
        "utility_path": "",     # a saved utility.npz (or an official score .json)
        "stratum": 0,           # 1..num_strata (1 = lowest utility); 0 = off
        "num_strata": 10,
        "policy": "greedy",     # greedy | greedy_diverse
    })


def runtime_pruning() -> ml_collections.ConfigDict:
    """`runtime_pruning.*` (paper 5.1, Code 1; supp. 12.6)."""
    return ml_collections.ConfigDict({
        "enabled": False,
        "ratio": 0.3,               # PRUNED fraction of each real batch (keep 1 - ratio)
        "tau": 1.0,                 # softmax temperature (not given in the paper)
        "start": 0.4,               # fraction of outer loops (or iterations) before pruning
        "start_unit": "outer_loop",  # outer_loop | iteration
    })


def base(dataset: str, algorithm: str) -> ml_collections.ConfigDict:
    """Fields shared by every distillation config (run loop, data, model, selection)."""
    config = ml_collections.ConfigDict()
    config.algorithm = algorithm
    config.data = common.data(dataset)
    config.data.train_per_class = 0  # > 0: first n training images per class (tiny runs)
    config.data.test_per_class = 0   # > 0: first n test images per class
    config.model = common.model(dataset=dataset)
    config.model.conv_impl = "auto"  # auto (shifted-matmul weight grad on CPU) | shifted | xla
    config.seed = 0
    config.ipc = 1
    config.iterations = 1000
    config.batch_real = 256
    config.init = "noise"
    config.class_loop = "map"   # map (lax.map over classes) | unroll (Python loop in jit)
    config.selection = selection()
    config.runtime_pruning = runtime_pruning()
    config.eval_every = 0        # iterations between intermediate evaluations (0 = final only)
    config.checkpoint_every = 50
    config.log_every = 10
    return config


def get_config(dataset: str = "mnist") -> ml_collections.ConfigDict:
    """Paper DC settings for `dataset` (IPC is `config.ipc`)."""
    config = base(dataset, "dc")
    config.lr_img = 0.1
    config.momentum_img = 0.5
    config.lr_net = 0.01
    config.momentum_net = 0.0
    config.batch_train = 256
    config.outer_loop = 0        # 0 = from LOOPS_BY_IPC
    config.inner_loop = 0
    config.loops_by_ipc = LOOPS_BY_IPC
    config.dis_metric = "ours"   # ours | mse | cos | l1
    config.dsa = False
    config.dsa_strategy = DSA_STRATEGY
    config.bn_batch_per_class = 16  # real images per class that set BatchNorm statistics
    if common.mnist_like(dataset):
        config.eval = common.evaluation(dataset, augment="dc_mnist", epochs=1000)
    else:
        config.eval = common.evaluation(dataset, augment="none", epochs=300)
    return config
