"""Datasets as arrays for gold.

Public API:
  registry    `DatasetInfo`, `get_info(name)`, `list_datasets()`
  loading     `load_dataset(name, data_dir=None, *, zca=False, ...) -> Dataset`,
              `load_raw(...) -> RawData` (pixels in [0, 255], no normalisation),
              `find_source(...)`; sources tried in order npz, raw, folder, tfds, embedded
  transforms  `normalize`, `denormalize`, `ZCA`, `fit_zca`, `apply_zca`, `invert_zca`
  sampling    `by_class`, `class_batch_size`, `ClassIndex`, `sample_class_batch`,
              `sample_all_classes`
  errors      `DatasetError` (a ValueError)
"""

from gold.data.cache import default_cache_dir
from gold.data.dataset import Dataset, load_dataset
from gold.data.errors import DatasetError
from gold.data.registry import DatasetInfo, get_info, list_datasets
from gold.data.sampler import ClassIndex, by_class, class_batch_size, sample_all_classes, sample_class_batch
from gold.data.sources import RawData, default_data_dir, find_source, load_raw
from gold.data.transforms import ZCA, apply_zca, denormalize, fit_zca, invert_zca, normalize

__all__ = [
    "ClassIndex", "Dataset", "DatasetError", "DatasetInfo", "RawData", "ZCA",
    "apply_zca", "by_class", "class_batch_size", "default_cache_dir", "default_data_dir",
    "denormalize", "find_source", "fit_zca", "get_info", "invert_zca", "list_datasets",
    "load_dataset", "load_raw", "normalize", "sample_all_classes", "sample_class_batch",
]
