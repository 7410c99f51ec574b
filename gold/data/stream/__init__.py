"""Data that stays on disk: random-access sources and streamed batches (grain).

* ``records``: fixed-shape uint8 samples in ``array_record`` shards plus an ``index.npz``
  (ids, labels, shape); converters from the downsampled-ImageNet npz release and from a
  tfds ``data_source`` (``imagenet_resized/64x64``); :class:`RecordSource`.
* ``video``: :class:`VideoFolderSource` over ``<root>/<split>/<class>/<clip>.npy|.mp4``,
  decoded to ``frames x size x size`` clips, with an on-disk decode cache.
* ``batches``: the selection as an index filter before any read; class-balanced step
  batches (:class:`BalancedPlan`, :func:`balanced_batches`) and shuffled epochs
  (:func:`epoch_batches`), the held-out split in record order (:func:`ordered_batches`)
  as grain ``MapDataset`` s; :func:`normalize` (uint8 -> model input, on the device).
"""

from gold.data.stream.batches import (ArraySource, BalancedPlan, Batch, CountingSource, balanced_batches,
                                      epoch_batches, epoch_order, fixed_batches, kept_positions, normalize,
                                      ordered_batches, read_batch)
from gold.data.stream.records import (RecordIndex, RecordSource, convert_imagenet64_npz, convert_tfds,
                                      read_index, write_records)
from gold.data.stream.video import VideoFolderSource, decode_container

__all__ = [
    "ArraySource", "BalancedPlan", "Batch", "CountingSource", "RecordIndex", "RecordSource",
    "VideoFolderSource", "balanced_batches", "convert_imagenet64_npz", "convert_tfds", "decode_container",
    "epoch_batches", "epoch_order", "fixed_batches", "kept_positions", "normalize", "ordered_batches",
    "read_batch", "read_index", "write_records",
]
