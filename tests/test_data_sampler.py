"""by_class, the batch-halving rule and the jit-friendly class batch sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.data import ClassIndex, DatasetError, by_class, class_batch_size, sample_all_classes, sample_class_batch


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(4), [50, 7, 20, 1])).astype(np.int32)


def test_by_class_gives_sorted_complete_indices(labels):
    groups = by_class(labels, 5)
    assert [len(g) for g in groups] == [50, 7, 20, 1, 0]
    for c, g in enumerate(groups):
        assert np.all(labels[g] == c) and np.all(np.diff(g) > 0) and g.dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(len(labels)))
    with pytest.raises(DatasetError, match="outside 0..2"):
        by_class(labels, 3)


@pytest.mark.parametrize("requested,sizes,expected", [
    (256, [5000] * 10, 256),   # CIFAR-10: unchanged
    (256, [48] * 10, 64),      # 256 -> 128 -> 64 < 96
    (256, [64, 3], 64),        # 128 is not < 128: halve once more
    (256, [65], 128),          # 128 < 130
    (256, [128], 256 // 2),    # 256 >= 256 -> 128
    (1, [1], 1),
    (256, [1], 1),
])
def test_class_batch_size_halving_rule(requested, sizes, expected):
    b = class_batch_size(requested, sizes)
    assert b == expected and b < 2 * max(sizes)


def test_class_batch_size_rejects_empty():
    with pytest.raises(DatasetError):
        class_batch_size(256, [0, 0])


def test_class_index_table(labels):
    index = ClassIndex.from_labels(labels, 5)
    assert index.table.shape == (5, 50) and index.table.dtype == jnp.int32
    np.testing.assert_array_equal(index.counts, [50, 7, 20, 1, 0])
    np.testing.assert_array_equal(index.table[1, :7], by_class(labels, 5)[1])
    assert np.all(np.asarray(index.table[1, 7:]) == -1)


def test_sample_draws_class_c_without_replacement_under_jit(labels):
    index = ClassIndex.from_labels(labels, 5)
    draw = jax.jit(jax.vmap(sample_class_batch, in_axes=(0, None, None, None, None)), static_argnums=4)
    keys = jax.random.split(jax.random.key(0), 8)
    n = 7
    for c in (0, 2, 1):  # 7 of 50, 7 of 20, all 7 of class 1
        for idx in np.asarray(draw(keys, index.table, index.counts, c, n)):
            assert idx.shape == (n,) and np.all(labels[idx] == c)
            assert len(np.unique(idx)) == n
    one = jax.jit(lambda key: index.sample(key, 0, 16))
    a = one(jax.random.key(0))
    assert not np.array_equal(a, one(jax.random.key(1)))
    np.testing.assert_array_equal(a, one(jax.random.key(0)))  # same key, same batch


def test_small_class_gives_all_samples_then_repeats(labels):
    index = ClassIndex.from_labels(labels, 5)
    sample = jax.jit(index.sample, static_argnums=2)
    idx = np.asarray(sample(jax.random.key(3), 1, 16))
    members = by_class(labels, 5)[1]
    np.testing.assert_array_equal(np.sort(idx[:7]), members)
    np.testing.assert_array_equal(idx[7:14], idx[:7])
    np.testing.assert_array_equal(index.valid_mask(1, 16), np.arange(16) < 7)
    single = by_class(labels, 5)[3][0]  # a class of one sample fills the batch with it
    assert np.all(np.asarray(sample(jax.random.key(0), 3, 16)) == single)


def test_traced_class_id_and_all_classes(labels):
    index = ClassIndex.from_labels(labels, 4)

    @jax.jit
    def per_class(key):
        return jax.lax.map(lambda c: sample_class_batch(jax.random.fold_in(key, c), index.table,
                                                        index.counts, c, 6), jnp.arange(4))

    out = np.asarray(per_class(jax.random.key(0)))
    assert out.shape == (4, 6)
    for c in range(4):
        assert np.all(labels[out[c]] == c)
    both = np.asarray(jax.jit(sample_all_classes, static_argnums=2)(jax.random.key(1), index, 6))
    assert both.shape == (4, 6) and all(np.all(labels[both[c]] == c) for c in range(4))


def test_draws_are_uniform_over_the_class(labels):
    index = ClassIndex.from_labels(labels, 5)
    keys = jax.random.split(jax.random.key(0), 2000)
    idx = np.asarray(jax.jit(jax.vmap(lambda k: index.sample(k, 2, 5)))(keys)).ravel()
    freq = np.bincount(idx, minlength=len(labels))[by_class(labels, 5)[2]]
    expected = 2000 * 5 / 20
    assert freq.sum() == 10000
    assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected))  # every member drawn ~500 times
