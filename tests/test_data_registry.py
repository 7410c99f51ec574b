"""Registry facts: names, shapes, classes, statistics."""

import pytest

from gold.data import DatasetError, get_info, list_datasets

EXPECTED = {
    "mnist": ((28, 28, 1), 10, 60000, 10000),
    "fashion_mnist": ((28, 28, 1), 10, 60000, 10000),
    "cifar10": ((32, 32, 3), 10, 50000, 10000),
    "cifar10_jpeg": ((32, 32, 3), 10, 50000, 10000),
    "cifar100": ((32, 32, 3), 100, 50000, 10000),
    "svhn": ((32, 32, 3), 10, 73257, 26032),
    "tinyimagenet": ((64, 64, 3), 200, 100000, 10000),
    "imagenet64": ((64, 64, 3), 1000, 1281167, 50000),
    "kinetics400": ((8, 64, 64, 3), 400, None, None),
    "digits": ((8, 8, 1), 10, 1437, 360),
}


def test_every_dataset_is_registered_with_consistent_fields():
    assert set(list_datasets()) == set(EXPECTED)
    for name, (shape, k, n_train, n_test) in EXPECTED.items():
        info = get_info(name)
        assert (info.name, info.image_shape, info.num_classes) == (name, shape, k)
        assert (info.num_train, info.num_test) == (n_train, n_test)
        assert len(info.class_names) == k and len(set(info.class_names)) == k
        assert len(info.mean) == len(info.std) == info.channels == shape[-1]
        assert all(0 < s < 1 for s in info.std) and all(0 < m < 1 for m in info.mean)
    assert get_info("kinetics400").is_video and not get_info("cifar10").is_video


def test_reference_statistics_and_names():
    assert get_info("cifar10").mean == (0.4914, 0.4822, 0.4465)
    assert get_info("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert get_info("cifar10_jpeg").mean == get_info("cifar10").mean
    assert get_info("cifar100").std == (0.2673, 0.2564, 0.2762)
    assert get_info("svhn").mean == (0.4377, 0.4438, 0.4728)
    assert (get_info("mnist").mean, get_info("mnist").std) == ((0.1307,), (0.3081,))
    assert (get_info("fashion_mnist").mean, get_info("fashion_mnist").std) == ((0.2861,), (0.3530,))
    assert get_info("cifar10").class_names[0] == "airplane" and get_info("cifar10").class_names[-1] == "truck"
    c100 = get_info("cifar100").class_names
    assert c100[:3] == ("apple", "aquarium_fish", "baby") and c100[-1] == "worm"
    assert list(c100) == sorted(c100)  # the official fine-label order is alphabetical
    assert get_info("mnist").class_names == tuple("0123456789")
    assert get_info("tinyimagenet").generic_class_names and not get_info("cifar10").generic_class_names


def test_get_info_is_case_insensitive_and_rejects_unknown_names():
    assert get_info("CIFAR10") is get_info("cifar10")
    with pytest.raises(DatasetError) as e:
        get_info("cifar11")
    assert "cifar11" in str(e.value)
    for name in list_datasets():
        assert name in str(e.value)
