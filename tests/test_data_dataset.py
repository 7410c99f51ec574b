"""load_dataset: normalisation, ZCA, per-class caps and stable ids, subset, to_pixels."""

import numpy as np
import pytest

from gold.data import Dataset, DatasetError, apply_zca, get_info, load_dataset, load_raw


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_dataset_contract(digits):
    assert isinstance(digits, Dataset)
    assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.ids.dtype == np.int64
    np.testing.assert_array_equal(digits.ids, np.arange(1437))
    assert digits.num_classes == 10 and digits.class_names == tuple("0123456789")
    assert digits.normalized and digits.zca is None and digits.source.startswith("embedded:")
    # the registry's digits statistics are those of this training split
    assert abs(float(digits.x_train.mean())) < 1e-3 and abs(float(digits.x_train.std()) - 1) < 1e-3
    raw = load_raw("digits")
    np.testing.assert_allclose(digits.to_pixels(digits.x_train), raw.x_train / 255, atol=1e-6)


def test_normalisation_uses_registry_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    ds = load_dataset("cifar10", tmp_path, strict_counts=False)
    info = get_info("cifar10")
    np.testing.assert_allclose(ds.x_train[..., 2], (x[..., 2] / 255 - info.mean[2]) / info.std[2], atol=1e-5)
    plain = load_dataset("cifar10", tmp_path, strict_counts=False, normalize=False)
    np.testing.assert_allclose(plain.x_train, x / 255, atol=1e-7)
    assert not plain.normalized


def test_zca_defaults_to_pixels_in_unit_range_and_applies_train_statistics(tmp_path):
    ds = load_dataset("digits", zca=True, cache=False)
    assert not ds.normalized and ds.zca is not None and ds.zca.reg == 0.1
    raw = load_raw("digits")
    np.testing.assert_allclose(ds.x_test, apply_zca(ds.zca, raw.x_test / 255), atol=1e-5)
    np.testing.assert_allclose(ds.zca.mean, (raw.x_train / 255).reshape(1437, -1).mean(0), atol=1e-6)
    np.testing.assert_allclose(ds.to_pixels(ds.x_test), raw.x_test / 255, atol=1e-4)
    both = load_dataset("digits", zca=True, normalize=True, zca_reg=0.01, cache=False)
    assert both.normalized and both.zca.reg == 0.01
    np.testing.assert_allclose(both.to_pixels(both.x_train), raw.x_train / 255, atol=1e-4)


def test_per_class_cap_keeps_official_ids(digits):
    small = load_dataset("digits", train_per_class=5, test_per_class=2)
    assert len(small.y_train) == 50 and len(small.y_test) == 20
    assert np.all(np.bincount(small.y_train) == 5)
    np.testing.assert_array_equal(small.x_train, digits.x_train[small.ids])
    np.testing.assert_array_equal(small.y_train, digits.y_train[small.ids])
    for c in range(10):  # the first five of each class in official order
        np.testing.assert_array_equal(small.ids[small.y_train == c], np.flatnonzero(digits.y_train == c)[:5])


def test_subset_keeps_ids_and_test_split(digits):
    picked = np.array([5, 1, 900])
    sub = digits.subset(picked)
    np.testing.assert_array_equal(sub.ids, picked)
    np.testing.assert_array_equal(sub.x_train, digits.x_train[picked])
    assert sub.x_test is digits.x_test
    again = sub.subset([2, 0])
    np.testing.assert_array_equal(again.ids, [900, 5])
    with pytest.raises(DatasetError, match="outside"):
        digits.subset([1437])
    with pytest.raises(DatasetError, match="train_per_class must be None or >= 1"):
        load_dataset("digits", train_per_class=0)


def test_video_zca_is_refused():
    with pytest.raises(DatasetError, match="video"):
        load_dataset("kinetics400", zca=True)


def test_video_dataset_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 8, 64, 64, 3), dtype=np.uint8)
    y = np.array([0, 399, 5, 5])
    np.savez(tmp_path / "kinetics400.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = load_dataset("kinetics400", tmp_path, strict_counts=False)
    assert ds.x_train.shape == (4, 8, 64, 64, 3) and ds.image_shape == (8, 64, 64, 3)
    np.testing.assert_allclose(ds.to_pixels(ds.x_train), x / 255, atol=1e-6)
