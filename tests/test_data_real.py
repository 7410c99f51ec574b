"""The real shipped data in $GOLD_DATA_DIR (fails, never skips, when it is not configured)."""

import io
import json
import time
import zipfile

import numpy as np
from PIL import Image

from gold.data import get_info, load_dataset, load_raw


def test_real_mnist_npz(gold_data_dir):
    meta = json.loads((gold_data_dir / "mnist.json").read_text())
    ds = load_dataset("mnist", gold_data_dir)
    assert ds.source == f"npz:{gold_data_dir / 'mnist.npz'}"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), meta["counts_per_class"]["train"])
    np.testing.assert_array_equal(np.bincount(ds.y_test), meta["counts_per_class"]["test"])
    np.testing.assert_array_equal(ds.ids, np.arange(60000))
    # MNIST's registry statistics normalise its own training set
    assert abs(float(ds.x_train.mean())) < 1e-3 and abs(float(ds.x_train.std()) - 1) < 1e-3
    pixels = ds.to_pixels(ds.x_train[:100])
    assert abs(float(pixels.min())) < 1e-6 and abs(float(pixels.max()) - 1) < 1e-6


def test_real_cifar10_jpeg_zip_few_files_per_class(gold_data_dir, tmp_path):
    """The real zip, decoding 3 + 2 files per class; the full 60k-image load is timed in the report."""
    t0 = time.perf_counter()
    raw = load_raw("cifar10_jpeg", gold_data_dir, train_per_class=3, test_per_class=2, cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 20
    info = get_info("cifar10_jpeg")
    assert raw.full_counts == (50000, 10000)  # strict counts checked on the archive listing
    assert raw.class_names == info.class_names
    assert raw.x_train.shape == (30, 32, 32, 3) and raw.x_test.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(raw.y_train, np.repeat(np.arange(10), 3))
    # class-by-class order, 5000 per class, files in natural order
    np.testing.assert_array_equal(raw.train_ids, (np.arange(10)[:, None] * 5000 + np.arange(3)).ravel())
    np.testing.assert_array_equal(raw.test_ids, (np.arange(10)[:, None] * 1000 + np.arange(2)).ravel())
    with zipfile.ZipFile(gold_data_dir / "cifar10_jpeg.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("train/cat/") and n.endswith(".jpg"))
        expected = np.asarray(Image.open(io.BytesIO(zf.read(names[1]))).convert("RGB"))
    np.testing.assert_array_equal(raw.x_train[3 * 3 + 1], expected)
    ds = load_dataset("cifar10_jpeg", gold_data_dir, train_per_class=3, test_per_class=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(ds.ids, raw.train_ids)
    assert ds.source == f"folder:{gold_data_dir / 'cifar10_jpeg.zip'}"
