"""Every source reads tiny files written in its real format, pixel-exact; bad input -> DatasetError."""

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gold.data import DatasetError, find_source, get_info, load_raw
from gold.data.sources.base import natural_key


def tiny(name, per_class=3, seed=0, k=None):
    """Random uint8 images of `name`'s shape, every class present, shuffled order."""
    info = get_info(name)
    k = k or info.num_classes
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(k), per_class)).astype(np.int64)
    x = rng.integers(0, 256, (len(y), *info.image_shape), dtype=np.uint8)
    return x, y


def load(name, path, **kw):
    """load_raw on tiny data: no cache, no official counts."""
    return load_raw(name, path, strict_counts=False, cache=False, **kw)


def assert_same(raw, xtr, ytr, xte, yte, dtype=np.uint8):
    np.testing.assert_array_equal(raw.x_train, xtr)
    np.testing.assert_array_equal(raw.y_train, ytr)
    np.testing.assert_array_equal(raw.x_test, xte)
    np.testing.assert_array_equal(raw.y_test, yte)
    np.testing.assert_array_equal(raw.train_ids, np.arange(len(ytr)))
    assert raw.x_train.dtype == dtype and raw.y_train.dtype == np.int64


# ------------------------------------------------------------------------------- writers
def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist_idx(folder: Path, seed=0, compress=True, name="mnist"):
    folder.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = tiny(name, 4, seed), tiny(name, 2, seed + 1)
    ext = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", xtr[..., 0], compress)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", ytr, compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", xte[..., 0], compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", yte, compress)
    return xtr, ytr, xte, yte


def cifar_batch(x, y, label_key):
    """The official pickle: py2 protocol 2, numpy 1 module names, bytes keys, CHW rows."""
    batch = {b"batch_label": b"tiny", label_key: [int(v) for v in y],
             b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"filenames": [b"f.png"] * len(y)}
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core", b"numpy.core")


def cifar_files(name):
    """{member: bytes} of a tiny official-layout CIFAR set, and the arrays."""
    if name == "cifar10":
        parts = [tiny(name, 1, seed) for seed in range(6)]
        files = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(*parts[i], b"labels") for i in range(5)}
        files["cifar-10-batches-py/test_batch"] = cifar_batch(*parts[5], b"labels")
        files["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": []}, protocol=2)
        train = parts[:5]
        test = parts[5]
    else:
        train, test = [tiny(name, 2, 0)], tiny(name, 1, 1)
        files = {"cifar-100-python/train": cifar_batch(*train[0], b"fine_labels"),
                 "cifar-100-python/test": cifar_batch(*test, b"fine_labels")}
    xtr = np.concatenate([p[0] for p in train])
    ytr = np.concatenate([p[1] for p in train])
    return files, (xtr, ytr, *test)


def write_tar(path: Path, files: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def folder_files(name, class_dirs=None, per_class=3):
    """{relative path: png bytes} in train/<class>/<i>.png (numbers chosen so that natural != lexical order)."""
    info = get_info(name)
    dirs = class_dirs or info.class_names
    files, expected = {}, {}
    for split, seed in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for label, cls in enumerate(dirs):
            for j in (2, 10, 1)[:per_class]:
                img = rng.integers(0, 256, info.image_shape, dtype=np.uint8)
                files[f"{split}/{cls}/{j}.png"] = png(img)
                xs.append((j, img))
            xs_sorted = sorted(xs[-per_class:], key=lambda t: t[0])
            xs[-per_class:] = xs_sorted
            ys += [label] * per_class
        expected[split] = (np.stack([t[1] for t in xs]), np.asarray(ys))
    return files, expected


def write_dir(root: Path, files: dict) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def write_zip(path: Path, files: dict, prefix: str = "") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(prefix + rel, data)


# ------------------------------------------------------------------------------- formats
def test_npz_round_trip_and_keras_layout(tmp_path):
    (xtr, ytr), (xte, yte) = tiny("mnist", 3, 0), tiny("mnist", 2, 1)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    raw = load("mnist", tmp_path)
    assert_same(raw, xtr, ytr, xte, yte)
    assert raw.origin == f"npz:{tmp_path / 'mnist.npz'}"
    # Keras' mnist.npz has no channel axis and uint8 labels
    np.savez(tmp_path / "mnist.npz", x_train=xtr[..., 0], y_train=ytr.astype(np.uint8),
             x_test=xte[..., 0], y_test=yte.astype(np.uint8))
    assert_same(load("mnist", tmp_path), xtr, ytr, xte, yte)


@pytest.mark.parametrize("layout,compress", [("", True), ("mnist", False), ("mnist/raw", True), ("MNIST/raw", True)])
def test_mnist_idx_files(tmp_path, layout, compress):
    arrays = write_mnist_idx(tmp_path / layout, compress=compress)
    raw = load("mnist", tmp_path)
    assert_same(raw, *arrays)
    assert raw.origin.startswith("raw:")


def test_fashion_mnist_idx_in_its_own_folder(tmp_path):
    arrays = write_mnist_idx(tmp_path / "fashion_mnist", seed=5, name="fashion_mnist")
    write_mnist_idx(tmp_path / "mnist", seed=9)  # a different dataset beside it is not picked
    assert_same(load("fashion_mnist", tmp_path), *arrays)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tarball_and_extracted_batches(tmp_path, name):
    files, arrays = cifar_files(name)
    tar_name = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[name]
    write_tar(tmp_path / tar_name, files)
    raw = load(name, tmp_path)
    assert_same(raw, *arrays)
    assert find_source(name, tmp_path).detail == "cifar_tar"
    write_dir(tmp_path / name, files)  # extracted folder in <dir>/<name>/ wins
    assert find_source(name, tmp_path).detail == "cifar_dir"
    assert_same(load(name, tmp_path), *arrays)


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    (xtr, ytr), (xte, yte) = tiny("svhn", 3, 0), tiny("svhn", 2, 1)
    for fname, x, y in (("train_32x32.mat", xtr, ytr), ("test_32x32.mat", xte, yte)):
        mat_y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]
        scipy.io.savemat(tmp_path / fname, {"X": x.transpose(1, 2, 3, 0), "y": mat_y})
    assert_same(load("svhn", tmp_path), xtr, ytr, xte, yte)


def test_imagenet64_downsampled_batches(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for i, fname in enumerate([f"Imagenet64_train_npz/train_data_batch_{b}.npz" for b in range(1, 11)]
                              + ["Imagenet64_val_npz/val_data.npz"]):
        x = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
        y = np.array([i, 999 - i])
        (tmp_path / fname).parent.mkdir(exist_ok=True)
        np.savez(tmp_path / fname, data=x.transpose(0, 3, 1, 2).reshape(2, -1), labels=y + 1)
        parts.append((x, y))
    raw = load("imagenet64", tmp_path)
    assert_same(raw, np.concatenate([p[0] for p in parts[:10]]), np.concatenate([p[1] for p in parts[:10]]),
                *parts[10])


@pytest.mark.parametrize("kind", ["dir", "zip", "zip_wrapped"])
def test_image_folder_dir_and_zip(tmp_path, kind):
    files, expected = folder_files("cifar10")
    if kind == "dir":
        write_dir(tmp_path / "cifar10", files)
    else:
        write_zip(tmp_path / "cifar10.zip", files, prefix="cifar10/" if kind == "zip_wrapped" else "")
    raw = load("cifar10", tmp_path)
    assert_same(raw, *expected["train"], *expected["test"])
    assert raw.class_names == get_info("cifar10").class_names  # registry order, not alphabetical
    assert raw.full_counts == (30, 30)


def test_image_folder_unknown_class_names_sort_naturally_and_cap_keeps_ids(tmp_path):
    dirs = [f"c{i}" for i in (0, 1, 10, 2, 3, 4, 5, 6, 7, 8)]  # not the registry's names
    files, _ = folder_files("mnist", class_dirs=dirs)
    write_zip(tmp_path / "mnist.zip", files)
    raw = load("mnist", tmp_path)
    assert raw.class_names == tuple(sorted(dirs, key=natural_key))
    assert raw.class_names[:4] == ("c0", "c1", "c2", "c3") and raw.class_names[-1] == "c10"
    capped = load("mnist", tmp_path, train_per_class=2, test_per_class=1)
    assert len(capped.y_train) == 20 and len(capped.y_test) == 10
    np.testing.assert_array_equal(capped.x_train, raw.x_train[capped.train_ids])
    np.testing.assert_array_equal(capped.y_train, raw.y_train[capped.train_ids])
    np.testing.assert_array_equal(capped.train_ids, np.sort(np.concatenate([[3 * c, 3 * c + 1] for c in range(10)])))


def test_tfds_source_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds  # the [tfds] extra of the test command
    with tfds.testing.mock_data(num_examples=12):
        raw = load_raw("cifar10", tmp_path, strict_counts=False)  # nothing on disk: auto reaches tfds
        assert raw.origin == "tfds:cifar10"
        assert raw.x_train.shape == (12, 32, 32, 3) and raw.x_test.shape == (12, 32, 32, 3)
        assert raw.y_train.min() >= 0 and raw.y_train.max() < 10
        wnids = load_raw("imagenet64", None, source="tfds", strict_counts=False, cache=False)
        assert wnids.class_names[0].startswith("n0") and len(wnids.class_names) == 1000
        with pytest.raises(DatasetError, match="strict_counts"):
            load_raw("cifar10", tmp_path, source="tfds")


def test_auto_without_any_source_lists_every_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # an empty tfds store
    with pytest.raises(DatasetError) as e:
        load_raw("cifar100", tmp_path)
    message = str(e.value)
    for expected in (str(tmp_path), "cifar100.npz", "cifar-100-python.tar.gz", "cifar100.zip",
                     "tfds 'cifar100'", "embedded"):
        assert expected in message


def test_embedded_digits_split_is_fixed_and_stratified():
    raw = load_raw("digits", None)
    again = load_raw("digits", None)
    assert_same(raw, again.x_train, again.y_train, again.x_test, again.y_test, np.float32)
    assert (len(raw.y_train), len(raw.y_test)) == (1437, 360)
    from sklearn.datasets import load_digits
    counts = np.bincount(load_digits().target)
    np.testing.assert_allclose(np.bincount(raw.y_test), counts * 360 / 1797, atol=1)
    assert raw.x_train.max() == 255.0


# ---------------------------------------------------------------------------- bad input
def test_missing_dir_and_nothing_found_name_the_place_and_the_files(tmp_path):
    with pytest.raises(DatasetError, match="nope"):
        load_raw("mnist", tmp_path / "nope")
    with pytest.raises(DatasetError) as e:
        load_raw("mnist", tmp_path, source="raw")
    assert str(tmp_path) in str(e.value) and "train-images-idx3-ubyte" in str(e.value)
    with pytest.raises(DatasetError) as e:
        find_source("cifar100", tmp_path, source="npz")
    assert "cifar100.npz" in str(e.value)
    with pytest.raises(DatasetError, match="valid: auto"):
        load_raw("mnist", tmp_path, source="ftp")


def test_corrupt_gzip_and_truncated_idx(tmp_path):
    write_mnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        load("mnist", tmp_path)
    write_mnist_idx(tmp_path)
    data = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*holds"):
        load("mnist", tmp_path)


def test_incomplete_idx_set_lists_missing_files(tmp_path):
    write_mnist_idx(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-images-idx3-ubyte"):
        load("mnist", tmp_path)


def _npz(path, x, y, xt=None, yt=None, **extra):
    np.savez(path, x_train=x, y_train=y, x_test=x if xt is None else xt, y_test=y if yt is None else yt, **extra)


def test_truncated_and_wrong_npz(tmp_path):
    x, y = tiny("mnist", 3)
    _npz(tmp_path / "mnist.npz", x, y)
    data = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="mnist.npz"):
        load("mnist", tmp_path)
    _npz(tmp_path / "mnist.npz", *tiny("cifar10", 2))  # wrong image shape
    with pytest.raises(DatasetError, match=r"mnist.npz.*\(N, 28, 28, 1\)"):
        load("mnist", tmp_path)
    _npz(tmp_path / "mnist.npz", x, y + 1)  # label 10 in a 10-class dataset
    with pytest.raises(DatasetError, match=r"mnist.npz.*10 classes"):
        load("mnist", tmp_path)
    _npz(tmp_path / "mnist.npz", x, y, class_names=np.array(list("abc")))
    with pytest.raises(DatasetError, match=r"3 classes, but mnist has 10"):
        load("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y)
    with pytest.raises(DatasetError, match=r"mnist.npz: missing arrays \['x_test', 'y_test'\]"):
        load("mnist", tmp_path)


def test_strict_counts_reject_partial_data(tmp_path):
    x, y = tiny("mnist", 3)
    _npz(tmp_path / "mnist.npz", x, y)
    with pytest.raises(DatasetError, match=r"mnist.npz: train split has 30 samples, but mnist has 60000"):
        load_raw("mnist", tmp_path)
    _npz(tmp_path / "digits.npz", x[:, :8, :8], y[y < 9], x[:, :8, :8], y)  # length mismatch
    with pytest.raises(DatasetError, match="digits.npz"):
        load("digits", tmp_path)


def test_folder_with_wrong_class_count_or_bad_images(tmp_path):
    files, _ = folder_files("cifar10")
    nine = {k: v for k, v in files.items() if "/truck/" not in k}
    write_zip(tmp_path / "cifar10.zip", nine)
    with pytest.raises(DatasetError, match=r"cifar10.zip: found 9 class folders.*10 classes"):
        load("cifar10", tmp_path)
    files["train/cat/10.png"] = b"not an image"
    write_zip(tmp_path / "cifar10.zip", files)
    with pytest.raises(DatasetError, match=r"cifar10.zip:train/cat/10.png: cannot decode"):
        load("cifar10", tmp_path)
    files["train/cat/10.png"] = png(np.zeros((28, 28, 3), np.uint8))
    write_zip(tmp_path / "cifar10.zip", files)
    with pytest.raises(DatasetError, match=r"train/cat/10.png: image has shape \(28, 28, 3\)"):
        load("cifar10", tmp_path)
    files["test/unicorn/1.png"] = files.pop("train/cat/10.png")
    write_zip(tmp_path / "cifar10.zip", files)
    with pytest.raises(DatasetError, match=r"\['unicorn'\] of the test split"):
        load("cifar10", tmp_path)
    (tmp_path / "cifar10.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="cifar10.zip: not a readable zip"):
        load("cifar10", tmp_path)


def test_corrupt_cifar_tarball_and_unsafe_pickle(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 broken")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load("cifar10", tmp_path)
    files, _ = cifar_files("cifar10")
    files["cifar-10-batches-py/data_batch_3"] = pickle.dumps({b"data": print}, protocol=2)
    write_dir(tmp_path / "cifar10", files)
    with pytest.raises(DatasetError, match="data_batch_3.*not allowed"):
        load("cifar10", tmp_path)


def test_corrupt_or_wrong_svhn_mat(tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB garbage")
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(DatasetError, match="train_32x32.mat"):
        load("svhn", tmp_path)
    x, y = tiny("svhn", 1)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": (y + 5)[:, None]})
    with pytest.raises(DatasetError, match=r"train_32x32.mat: labels span"):
        load("svhn", tmp_path)
