"""Decoded-array and ZCA cache: hit, identity, invalidation, atomic writes, corrupt entries."""

import os

import numpy as np
import pytest

from gold.data import load_dataset, load_raw
from gold.data.sources import folder
from test_data_sources import folder_files, write_dir, write_zip


@pytest.fixture
def zip_dir(tmp_path):
    files, _ = folder_files("cifar10")
    write_zip(tmp_path / "cifar10.zip", files)
    return tmp_path


def no_read(*args, **kwargs):
    raise AssertionError("the source was decoded again instead of read from the cache")


def test_second_load_comes_from_the_cache_and_is_identical(zip_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    assert [p.suffix for p in cache.iterdir()] == [".npz"]  # one entry, no temporary left
    monkeypatch.setattr(folder, "read", no_read)
    second = load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    for field in ("x_train", "y_train", "x_test", "y_test", "train_ids", "test_ids"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert (first.class_names, first.origin, first.full_counts) == \
        (second.class_names, second.origin, second.full_counts)


def test_env_var_sets_the_default_cache_dir(zip_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GOLD_CACHE_DIR", str(tmp_path / "env_cache"))
    load_raw("cifar10", zip_dir, strict_counts=False)
    assert len(list((tmp_path / "env_cache").glob("cifar10-*.npz"))) == 1


def test_changed_source_file_invalidates_the_entry(zip_dir, tmp_path):
    cache = tmp_path / "cache"
    load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    files, _ = folder_files("cifar10")
    files["train/cat/1.png"] = files["train/dog/1.png"]
    write_zip(zip_dir / "cifar10.zip", files)
    os.utime(zip_dir / "cifar10.zip", ns=(1, 1))
    changed = load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    cat1 = 3 * 3 + 0  # class 3 (cat), first file in natural order is 1.png
    dog1 = 3 * 5 + 0
    np.testing.assert_array_equal(changed.x_train[cat1], changed.x_train[dog1])
    assert len(list(cache.glob("*.npz"))) == 2


def test_directory_source_is_fingerprinted_file_by_file(tmp_path):
    files, _ = folder_files("cifar10")
    write_dir(tmp_path / "cifar10", files)
    cache = tmp_path / "cache"
    load_raw("cifar10", tmp_path, strict_counts=False, cache_dir=cache)
    (tmp_path / "cifar10" / "test" / "cat" / "2.png").write_bytes(files["test/dog/2.png"])
    load_raw("cifar10", tmp_path, strict_counts=False, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2


def test_corrupt_entry_is_rebuilt_with_a_warning(zip_dir, tmp_path):
    cache = tmp_path / "cache"
    first = load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = load_raw("cifar10", zip_dir, strict_counts=False, cache_dir=cache)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert entry.stat().st_size > 1000  # rewritten


def test_cache_off_writes_nothing(zip_dir, tmp_path):
    load_raw("cifar10", zip_dir, strict_counts=False, cache=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_zca_is_cached_by_training_pixels(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset("digits", zca=True, cache_dir=cache)
    assert len(list(cache.glob("digits-zca-*.npz"))) == 1
    import gold.data.dataset as dataset_module
    monkeypatch.setattr(dataset_module, "fit_zca", no_read)
    second = load_dataset("digits", zca=True, cache_dir=cache)
    np.testing.assert_array_equal(first.zca.whiten, second.zca.whiten)
    np.testing.assert_array_equal(first.x_test, second.x_test)
    with pytest.raises(AssertionError, match="decoded again"):  # other pixels: another entry
        load_dataset("digits", zca=True, cache_dir=cache, train_per_class=50)
