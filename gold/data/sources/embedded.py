"""Source (e): datasets shipped with an installed package, no download.

``digits``: scikit-learn's 1,797 8x8 digits. Values 0..16 are scaled to [0, 255]
(float32, so ``x / 255`` gives exactly the documented ``value / 16`` in [0, 1]). The
split is fixed and stratified: a ``numpy.random.default_rng(0)`` permutation of each
class puts ``round(360 * n_c / 1797)`` samples (largest remainder, total 360) in test;
train (1,437) and test keep the original sklearn order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gold.data.registry import DatasetInfo
from gold.data.sources.base import Location, RawData

SOURCE = "embedded"
CACHEABLE = False
NUM_TEST = 360
SEED = 0


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this source provides."""
    return "scikit-learn load_digits (only 'digits')"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """Only `digits` is embedded."""
    return Location(SOURCE, (), "sklearn.datasets.load_digits") if info.name == "digits" else None


def digits_split(labels: np.ndarray, num_test: int = NUM_TEST, seed: int = SEED) -> np.ndarray:
    """Boolean test mask ``[N]``: stratified, deterministic, `num_test` samples in total."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * num_test / len(labels)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")  # largest remainders get the rest
    take[order[: num_test - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        test[idx[rng.permutation(len(idx))[:k]]] = True
    return test


def read(info: DatasetInfo, loc: Location, **_) -> RawData:
    """Load the digits and split them."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) * np.float32(255.0 / 16.0))[..., None]
    y = bunch.target.astype(np.int64)
    test = digits_split(y)
    return RawData.from_arrays(x[~test], y[~test], x[test], y[test], loc.describe())
