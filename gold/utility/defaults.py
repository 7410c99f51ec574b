"""Per-dataset default settings of the utility indicators (paper supp. 12.4).

The single source of these numbers: ``configs/utility.py`` and on-the-fly computation in
:func:`gold.selection.select_from_config` both read :func:`default_settings`.

| dataset | trials x epochs | lr | batch | kNN K | K-means K |
|---|---|---|---|---|---|
| cifar10 (+ cifar10_jpeg) | 50 x 100 | 3e-3 | 512 | 100 | 128 |
| cifar100 | 50 x 250 | 5e-3 | 512 | 20 | 16 |
| mnist (+ fashion_mnist) | 50 x 50 | 3e-4 | 512 | 100 | 128 |
| svhn | 50 x 100 | 1e-3 | 512 | 100 | 128 |
| tinyimagenet | 50 x 100 | 5e-3 | 512 | 20 | 16 |
| imagenet64 | 30 x 20 | 3e-3 | 256 | 20 | 16 |
| kinetics400 | 10 x 20 | 1e-2 | 128 | 20 | 16 |
| digits (sklearn 8x8, not in the paper; demo-sized) | 4 x 10 | 3e-3 | 128 | 20 | 16 |

The optimiser is not stated in the paper; these learning rates are Adam's range, so
``optimizer='adam'`` (no weight decay). ImageNet / Kinetics kNN and K-means K are not
given in the paper (their classes hold ~1,300 / ~500 samples); 20 / 16 follow the
paper's choice for its other small-class datasets.
"""

from __future__ import annotations

# name -> (trials, epochs, lr, batch_size, knn_k, num_clusters)
_PAPER = {
    "cifar10": (50, 100, 3e-3, 512, 100, 128),
    "cifar100": (50, 250, 5e-3, 512, 20, 16),
    "mnist": (50, 50, 3e-4, 512, 100, 128),
    "svhn": (50, 100, 1e-3, 512, 100, 128),
    "tinyimagenet": (50, 100, 5e-3, 512, 20, 16),
    "imagenet64": (30, 20, 3e-3, 256, 20, 16),
    "kinetics400": (10, 20, 1e-2, 128, 20, 16),
    "digits": (4, 10, 3e-3, 128, 20, 16),
}
_ALIASES = {"cifar10_jpeg": "cifar10", "fashion_mnist": "mnist"}

INDICATORS: tuple[str, ...] = ("loss", "el2n", "forgetting", "density", "cluster", "init_distance")
LOSS_FAMILY: tuple[str, ...] = ("loss", "el2n", "forgetting")
FEATURE_FAMILY: tuple[str, ...] = ("density", "cluster", "init_distance")


def default_settings(dataset: str) -> dict:
    """Paper defaults of every utility setting for ``dataset`` (unknown names get the
    CIFAR-10 numbers).

    Keys: ``trials, epochs, lr, batch_size, optimizer, weight_decay, momentum,
    trials_per_chunk, trial_mode, sigma, epoch, el2n_epoch, knn_k, num_clusters, kmeans_iters, ipc,
    save_features``.
    """
    name = _ALIASES.get(dataset.lower(), dataset.lower())
    trials, epochs, lr, batch, knn_k, clusters = _PAPER.get(name, _PAPER["cifar10"])
    return {
        "trials": trials,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "momentum": 0.9,
        "trials_per_chunk": 10,
        "trial_mode": "auto",
        "sigma": 3.0,
        "epoch": -1,
        "el2n_epoch": 0,
        "knn_k": knn_k,
        "num_clusters": clusters,
        "kmeans_iters": 100,
        "ipc": 1,
        "save_features": True,
    }


__all__ = ["FEATURE_FAMILY", "INDICATORS", "LOSS_FAMILY", "default_settings"]
