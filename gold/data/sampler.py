"""Class index and the class-balanced real-batch sampler used inside distillation steps.

`ClassIndex` stores the training indices of every class in a padded table so that
`sample_class_batch` can draw a class's real batch inside ``jit`` (static batch size,
traced class id). The batch size follows the DC/DM rule of the paper (supp. 12.3):
start from the requested size (256) and halve it until it is less than twice the
largest class (`class_batch_size`). A class smaller than the batch gives all of its
samples once, in random order, and then repeats that order to fill the static batch;
`ClassIndex.valid_mask` marks the first ``min(n, count)`` distinct draws, which is
exactly the batch the PyTorch reference (``permutation(indices)[:n]``) would use.
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gold.data.errors import DatasetError

__all__ = ["by_class", "class_batch_size", "ClassIndex", "sample_class_batch", "sample_all_classes"]

PAD = -1  # table entries past a class's count


def by_class(labels, num_classes: int) -> list[np.ndarray]:
    """Indices of each class, sorted ascending: ``out[c]`` is int64 ``[n_c]``.

    Raises:
      DatasetError: a label outside ``0 .. num_classes-1``.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"labels span [{labels.min()}, {labels.max()}], outside 0..{num_classes - 1}")
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return [order[bounds[c]:bounds[c + 1]].astype(np.int64) for c in range(num_classes)]


def class_batch_size(requested: int, class_sizes: Sequence[int]) -> int:
    """Real batch per class after the paper's halving rule.

    "The batch size for each class is 256 and when the sample ratio is low, we half the
    batch size until it is less than twice the largest class size" (paper supp. 12.3,
    DC/DSA and DM): ``b = requested; while b >= 2 * max(class_sizes): b //= 2``. So the
    result is < 2 * largest class (e.g. 256 -> 64 for a largest class of 48; unchanged
    256 for CIFAR-10's 5,000). Classes smaller than the result use all their samples.

    Args:
      requested: the configured batch per class (e.g. ``batch_real`` 256), >= 1.
      class_sizes: number of (kept) training samples of each class.
    """
    largest = int(max(class_sizes, default=0))
    if requested < 1 or largest < 1:
        raise DatasetError(f"class_batch_size needs requested >= 1 and a non-empty class "
                           f"(got {requested}, largest class {largest})")
    b = int(requested)
    while b >= 2 * largest:
        b //= 2
    return b


@flax.struct.dataclass
class ClassIndex:
    """Padded per-class index table (a pytree: pass it into ``jit``).

    Attributes:
      table: int32 ``[K, max_count]``; row c holds class c's dataset indices ascending,
        padded with -1.
      counts: int32 ``[K]`` samples per class.
    """

    table: jax.Array
    counts: jax.Array

    @classmethod
    def from_labels(cls, labels, num_classes: int) -> "ClassIndex":
        """Build from int labels ``[N]`` (indices refer to positions in `labels`)."""
        groups = by_class(labels, num_classes)
        width = max(1, max(len(g) for g in groups))
        table = np.full((num_classes, width), PAD, np.int32)
        for c, g in enumerate(groups):
            table[c, : len(g)] = g
        return cls(jnp.asarray(table), jnp.asarray([len(g) for g in groups], jnp.int32))

    @property
    def num_classes(self) -> int:
        """K."""
        return self.table.shape[0]

    def sample(self, key: jax.Array, c, n: int) -> jax.Array:
        """`sample_class_batch` on this index."""
        return sample_class_batch(key, self.table, self.counts, c, n)

    def valid_mask(self, c, n: int) -> jax.Array:
        """bool ``[n]``: True for the first ``min(n, counts[c])`` (distinct) draws."""
        return jnp.arange(n) < self.counts[c]


def sample_class_batch(key: jax.Array, table: jax.Array, counts: jax.Array, c, n: int) -> jax.Array:
    """Draw `n` dataset indices of class `c` without replacement (jit-friendly).

    Each valid table position gets a uniform random key; the `n` smallest keys
    (``lax.top_k``) are a uniformly random ordered subset of the class. If the class
    has fewer than `n` samples, the draw is a random permutation of the whole class,
    repeated cyclically to length `n` (see `ClassIndex.valid_mask`).

    Args:
      key: PRNG key.
      table: int32 ``[K, max_count]`` padded index table (`ClassIndex.table`).
      counts: int32 ``[K]`` (`ClassIndex.counts`); a class with count 0 yields -1s.
      c: class id, Python int or traced int32 scalar.
      n: batch size, static Python int >= 1.

    Returns:
      int32 ``[n]`` indices into the dataset, all of class `c`.
    """
    width = table.shape[1]
    count = counts[c]
    keys = jax.random.uniform(key, (width,))
    keys = jnp.where(jnp.arange(width) < count, keys, 2.0)  # padding sorts last
    _, pos = jax.lax.top_k(-keys, min(n, width))
    pos = pos[jnp.arange(n) % jnp.maximum(count, 1)]
    return table[c, pos]


def sample_all_classes(key: jax.Array, index: ClassIndex, n: int) -> jax.Array:
    """`n` indices for every class with independent keys: int32 ``[K, n]``."""
    keys = jax.random.split(key, index.num_classes)
    return jax.vmap(lambda k, c: sample_class_batch(k, index.table, index.counts, c, n))(
        keys, jnp.arange(index.num_classes))
