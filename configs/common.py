"""Shared config blocks (DESIGN.md CLI contract). Every `get_config` starts here."""

import math
import os

import ml_collections

from gold import data as gdata

# Datasets whose 28x28 grayscale images use the DC reference's MNIST evaluation
# augmentation (crop / scale / rotate, 1000 epochs).
_MNIST_LIKE = ("mnist", "fashion_mnist")


def data(name: str) -> ml_collections.ConfigDict:
    """`data.name`, `data.dir` (default $GOLD_DATA_DIR), `data.zca`."""
    return ml_collections.ConfigDict(
        {"name": name, "dir": os.environ.get("GOLD_DATA_DIR", ""), "zca": False}
    )


def convnet_depth(dataset: str) -> int:
    """ConvNet depth for `dataset`'s resolution: the literature's ConvNetD3 at 28/32
    pixels, D4 at 64, D5 at 128, i.e. pool until 4x4 features (`log2(side) - 2`).

    The embedded 8x8 digits therefore get ConvNetD1. Measured (DC IPC 1, real init,
    20 iterations, 2 models x 100 epochs): D3 falls from 72% to 8% (its last block
    works on 2x2 maps and the image gradient explodes), D2 reaches 87.6%; noise init,
    200 iterations: D1 90.1% vs 75.6% random-real (BENCHMARKS.md).
    """
    side = int(gdata.get_info(dataset).image_shape[-2])  # unknown name: DatasetError
    return max(1, round(math.log2(side)) - 2)


def model(name: str = "convnet", width: int = 128, depth: int = 3, norm: str = "instancenorm",
          dataset: str = "") -> ml_collections.ConfigDict:
    """`model.name`, `model.width`, `model.depth`, `model.norm` (ConvNet knobs).

    With `dataset`, `depth` follows its resolution (:func:`convnet_depth`).
    """
    if dataset:
        depth = convnet_depth(dataset)
    return ml_collections.ConfigDict({"name": name, "width": width, "depth": depth, "norm": norm})


def evaluation(dataset: str, augment: str = "none", epochs: int = 300) -> ml_collections.ConfigDict:
    """`eval.*`: K models, epochs, SGD, augmentation, model ('' = same as `model`)."""
    return ml_collections.ConfigDict(
        {
            "num_models": 5,
            "epochs": epochs,
            "batch_size": 256,
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "augment": augment,
            "model": "",
            "test_batch_size": 1000,
            "max_test": 0,
        }
    )


def mnist_like(dataset: str) -> bool:
    """True for 28x28 grayscale datasets."""
    return dataset in _MNIST_LIKE
