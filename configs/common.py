"""Shared config blocks (DESIGN.md CLI contract). Every `get_config` starts here."""

import os

import ml_collections

# Datasets whose 28x28 grayscale images use the DC reference's MNIST evaluation
# augmentation (crop / scale / rotate, 1000 epochs).
_MNIST_LIKE = ("mnist", "fashion_mnist")


def data(name: str) -> ml_collections.ConfigDict:
    """`data.name`, `data.dir` (default $GOLD_DATA_DIR), `data.zca`."""
    return ml_collections.ConfigDict(
        {"name": name, "dir": os.environ.get("GOLD_DATA_DIR", ""), "zca": False}
    )


def model(name: str = "convnet", width: int = 128, depth: int = 3, norm: str = "instancenorm") -> ml_collections.ConfigDict:
    """`model.name`, `model.width`, `model.depth`, `model.norm` (ConvNet knobs)."""
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
