"""Shared config blocks. Every `get_config` starts here.

Config arguments follow big_vision's pattern: `--config=configs/train.py:mnist,runlocal`
passes `'mnist,runlocal'` to `get_config`, which splits it with :func:`parse_arg` and
finishes with :func:`apply_options`. The option `runlocal` shrinks the run to CPU size
with the same code path (:func:`runlocal`).
"""

import math
import os
from typing import Any, Optional

import ml_collections

from gold import data as gdata

# Datasets whose 28x28 grayscale images use the DC reference's MNIST evaluation
# augmentation (crop / scale / rotate, 1000 epochs).
_MNIST_LIKE = ("mnist", "fashion_mnist")


# Options a config argument may carry after its positional parts.
OPTIONS = ("runlocal",)


def parse_arg(arg: str, default: str = "") -> tuple[str, frozenset]:
    """Split a config argument into its positional part and its options.

    `'mnist,runlocal'` -> `('mnist', {'runlocal'})`; `'dc,mnist'` -> `('dc,mnist', {})`;
    `''` -> `(default, {})`. Option words are those of :data:`OPTIONS`.
    """
    parts = [p.strip() for p in (arg or "").replace(":", ",").split(",") if p.strip()]
    options = frozenset(p for p in parts if p in OPTIONS)
    positional = ",".join(p for p in parts if p not in OPTIONS)
    return positional or default, options


def _set_existing(config: Any, path: str, value: Any) -> None:
    """Set dotted `path` of `config` to `value` (or `value(old)`) if the field exists."""
    node = config
    *parents, leaf = path.split(".")
    for p in parents:
        if p not in node or not hasattr(node[p], "keys"):
            return
        node = node[p]
    if leaf in node:
        node[leaf] = value(node[leaf]) if callable(value) else value


# Dotted field -> value (or function of the current value) applied by runlocal to the
# fields a config has.
_RUNLOCAL = {
    "data.train_per_class": 100,
    "data.test_per_class": 50,
    "model.width": 32,
    "iterations": lambda v: min(int(v), 10),
    "batch_real": lambda v: min(int(v), 32),
    "checkpoint_every": lambda v: min(int(v), 5) if v else v,
    "log_every": lambda v: min(int(v), 5),
    "eval_every": 0,
    "eval.num_models": lambda v: min(int(v), 1) if v else v,
    "eval.epochs": lambda v: min(int(v), 20) if v else v,
    "eval.warmup_epochs": lambda v: min(int(v), 2) if v else v,
    "eval.max_test": 500,
    # utility (top level of configs/utility.py, selection.utility.* of the experiments)
    "trials": lambda v: min(int(v), 2),
    "trials_per_chunk": 0,
    "selection.utility.trials": lambda v: min(int(v), 2),
    "selection.utility.epochs": lambda v: min(int(v), 3),
    "selection.utility.model.width": 32,
    # classifier / utility / buffer epochs
    "epochs": lambda v: min(int(v), 3),
    # buffer, and MTT's segments (must fit the 3-epoch runlocal buffer)
    "num_experts": lambda v: min(int(v), 2),
    "syn_steps": 5,
    "expert_epochs": 1,
    "max_start_epoch": 2,
    "experts_per_chunk": 1,
    "max_test": 500,
    # experiments
    "repeats": 1,
    "full_repeats": lambda v: min(int(v), 1),
    "ratios": lambda v: (tuple(v)[len(v) // 2], tuple(v)[-1]) if len(v) > 1 else tuple(v),
    "selection.num_strata": lambda v: min(int(v), 3),
    "monte_carlo.trials": lambda v: min(int(v), 8),
    "monte_carlo.chunk": lambda v: min(int(v), 4),
    "monte_carlo.subset_ratio": lambda v: max(float(v), 0.2),
    "monte_carlo.sequential_check": 0,
    "models": lambda v: tuple(v)[:2],
}


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink `config` in place to a run of seconds to a few minutes on a CPU.

    Same code path, smaller numbers, applied only to the fields `config` has: 100 train /
    50 test images per class, ConvNet width 32, <= 10 iterations, 1 evaluation model x
    20 epochs on 500 test images, utility 2 trials x 3 epochs, classifier / expert
    epochs <= 3, 2 experts, 1 repeat, the 2 largest sweep ratios, 3 strata, 8
    Monte-Carlo subsets, sweep ratios: the grid's middle and largest. Returns `config`.
    """
    for path, value in _RUNLOCAL.items():
        _set_existing(config, path, value)
    return config


def apply_options(config: ml_collections.ConfigDict, options: frozenset) -> ml_collections.ConfigDict:
    """Apply the options :func:`parse_arg` found (`runlocal`); returns `config`."""
    if "runlocal" in options:
        runlocal(config)
    return config


def data(name: str) -> ml_collections.ConfigDict:
    """`data.name`, `data.dir` (default $GOLD_DATA_DIR), `data.zca`, and the per-class
    caps `data.train_per_class` / `data.test_per_class` (0 = all)."""
    return ml_collections.ConfigDict(
        {"name": name, "dir": os.environ.get("GOLD_DATA_DIR", ""), "zca": False,
         "train_per_class": 0, "test_per_class": 0}
    )


def convnet_depth(dataset: str) -> int:
    """ConvNet depth for `dataset`'s resolution: the literature's ConvNetD3 at 28/32
    pixels, D4 at 64, D5 at 128, i.e. pool until 4x4 features (`log2(side) - 2`).

    The embedded 8x8 digits therefore get ConvNetD1: a D3 works on 2x2 maps in its last
    block and distillation on it collapses (measured in BENCHMARKS.md, README demo).
    """
    side = int(gdata.get_info(dataset).image_shape[-2])  # unknown name: DatasetError
    return max(1, round(math.log2(side)) - 2)


def model(name: str = "convnet", width: int = 128, depth: int = 3, norm: str = "instancenorm",
          dataset: str = "") -> ml_collections.ConfigDict:
    """`model.name`, `model.width`, `model.depth`, `model.norm` (ConvNet knobs).

    With `dataset`, `depth` follows its resolution (:func:`convnet_depth`), and a video
    dataset gets the frame-wise ConvNet + GRU (`convnet_gru`, paper supp. 12.4).
    """
    if dataset:
        depth = convnet_depth(dataset)
        if gdata.get_info(dataset).is_video:
            name = "convnet_gru"
    return ml_collections.ConfigDict({"name": name, "width": width, "depth": depth, "norm": norm})


def evaluation(dataset: str, augment: Optional[str] = None, epochs: Optional[int] = None, *,
               preset: str = "dc", ipc: int = 0, **overrides: Any) -> ml_collections.ConfigDict:
    """`eval.*`: every field of the named evaluation `preset` (`gold.evaluate.PRESETS`: dc,
    frepo, idc, linba, cafe, cafe_dsa; `frepo` needs `ipc`), so `--show_config` shows
    them all; `augment` / `epochs` / `overrides` (any `gold.evaluate.EvalProtocol`
    field) replace the preset's values. Plus `model` ('' = same as `model`) and
    `max_test`. `dsa_strategy` '' = the run's strategy; `lr_decay_epochs` () = the
    schedule's default.

    Raises:
      ValueError: an unknown preset or field.
    """
    from gold import evaluate as gev

    fields = gev.preset_fields(preset, dataset, ipc)
    fields["dsa_strategy"] = gev.PRESETS[preset].fields(dataset, ipc).get("dsa_strategy", "")
    given = dict(overrides, **{k: v for k, v in (("augment", augment), ("epochs", epochs)) if v is not None})
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"unknown evaluation fields {unknown}; valid: {sorted(fields)}")
    fields.update(given)
    fields["lr_decay_epochs"] = tuple(fields["lr_decay_epochs"] or ())
    fields["lr_decay_fractions"] = tuple(fields["lr_decay_fractions"])
    return ml_collections.ConfigDict({**fields, "model": "", "max_test": 0})


def reference_evaluation(dataset: str) -> ml_collections.ConfigDict:
    """`eval.*` of the DC reference without DSA: MNIST-like data train the evaluation
    networks with crop / scale / rotate for 1000 epochs, other data without augmentation
    for 300."""
    if mnist_like(dataset):
        return evaluation(dataset, augment="dc_mnist", epochs=1000)
    return evaluation(dataset, augment="none", epochs=300)


def mnist_like(dataset: str) -> bool:
    """True for 28x28 grayscale datasets."""
    return dataset in _MNIST_LIKE
