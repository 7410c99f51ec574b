"""Source (b): official raw files, one reader per format.

mnist / fashion_mnist: IDX (`idx`); cifar10 / cifar100: python pickles (`cifar`);
svhn: .mat (`svhn`); imagenet64: downsampled npz batches (`imagenet64`). Other
datasets have no raw format here.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from gold.data.registry import DatasetInfo
from gold.data.sources import cifar, idx, imagenet64, svhn
from gold.data.sources.base import Location, RawData

SOURCE = "raw"
CACHEABLE = True
FORMATS: dict[str, ModuleType] = {
    "mnist": idx, "fashion_mnist": idx, "cifar10": cifar, "cifar100": cifar,
    "svhn": svhn, "imagenet64": imagenet64,
}


def expected(info: DatasetInfo, data_dir: Path | None) -> str:
    """What this source looks for."""
    fmt = FORMATS.get(info.name)
    return fmt.expected(info, data_dir) if fmt else f"no official raw format supported for {info.name}"


def locate(info: DatasetInfo, data_dir: Path | None) -> Location | None:
    """Dispatch to the dataset's format."""
    fmt = FORMATS.get(info.name)
    return fmt.locate(info, data_dir) if fmt else None


def read(info: DatasetInfo, loc: Location, **_) -> RawData:
    """Dispatch to the dataset's format."""
    return FORMATS[info.name].read(info, loc)
