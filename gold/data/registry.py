"""Static facts about every supported dataset: `DatasetInfo` and `get_info`.

Channel statistics are per channel in [0, 1] pixel units (the values the reference
implementations of DC/DSA/DM/MTT use). `num_train` / `num_test` are the official split
sizes; ``None`` means the size is not fixed (e.g. Kinetics, whose clips disappear over
time) and is not checked.
"""

from __future__ import annotations

import dataclasses

from gold.data.errors import DatasetError

__all__ = ["DatasetInfo", "get_info", "list_datasets"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Shape, classes and statistics of one dataset.

    Attributes:
      name: canonical lower-case name, e.g. ``"cifar10"``.
      image_shape: ``(H, W, C)`` for images, ``(T, H, W, C)`` for videos.
      num_classes: number of classes K; labels are ``0 .. K-1``.
      class_names: K names in label order. Generic ``class_000``-style names mean the
        real names come from the data source at load time (folder names, tfds).
      mean, std: per-channel pixel statistics in [0, 1] units, length C.
      num_train, num_test: official split sizes (``None`` = not fixed, not checked).
      description: one line on where the data comes from.
    """

    name: str
    image_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int | None
    num_test: int | None
    description: str = ""

    @property
    def is_video(self) -> bool:
        """True for ``(T, H, W, C)`` clips."""
        return len(self.image_shape) == 4

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.image_shape[-1]

    @property
    def generic_class_names(self) -> bool:
        """True when `class_names` are placeholders (``class_000`` ...)."""
        return self.class_names == _generic(self.num_classes)


def _generic(k: int) -> tuple[str, ...]:
    width = max(3, len(str(k - 1)))
    return tuple(f"class_{i:0{width}d}" for i in range(k))


_DIGITS = tuple(str(i) for i in range(10))
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR100 = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split())

_CIFAR10_STATS = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
_IMAGENET_STATS = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

_REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", (28, 28, 1), 10, _DIGITS, (0.1307,), (0.3081,), 60000, 10000,
                    "MNIST handwritten digits"),
        DatasetInfo("fashion_mnist", (28, 28, 1), 10, _FASHION, (0.2861,), (0.3530,), 60000, 10000,
                    "Fashion-MNIST Zalando article images"),
        DatasetInfo("cifar10", (32, 32, 3), 10, _CIFAR10, **_CIFAR10_STATS,
                    num_train=50000, num_test=10000, description="CIFAR-10 (official pixels)"),
        DatasetInfo("cifar10_jpeg", (32, 32, 3), 10, _CIFAR10, **_CIFAR10_STATS,
                    num_train=50000, num_test=10000,
                    description="CIFAR-10 lossy JPEG copy (image folder); order: class by class"),
        DatasetInfo("cifar100", (32, 32, 3), 100, _CIFAR100,
                    (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), 50000, 10000,
                    "CIFAR-100, fine labels"),
        DatasetInfo("svhn", (32, 32, 3), 10, _DIGITS,
                    (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 73257, 26032,
                    "SVHN cropped digits (train split, no extra)"),
        DatasetInfo("tinyimagenet", (64, 64, 3), 200, _generic(200), **_IMAGENET_STATS,
                    num_train=100000, num_test=10000, description="Tiny ImageNet (val used as test)"),
        DatasetInfo("imagenet64", (64, 64, 3), 1000, _generic(1000), **_IMAGENET_STATS,
                    num_train=1281167, num_test=50000,
                    description="ImageNet-1K downsampled to 64x64 (val used as test)"),
        DatasetInfo("kinetics400", (8, 64, 64, 3), 400, _generic(400), **_IMAGENET_STATS,
                    num_train=None, num_test=None,
                    description="Kinetics-400 clips, 8 frames of 64x64 (ImageNet statistics)"),
        DatasetInfo("digits", (8, 8, 1), 10, _DIGITS, (0.3055,), (0.3761,), 1437, 360,
                    "scikit-learn 8x8 digits, values 0..16 scaled to [0, 1], fixed split"),
    )
}


def list_datasets() -> tuple[str, ...]:
    """Names accepted by `get_info` / `load_dataset`, sorted."""
    return tuple(sorted(_REGISTRY))


def get_info(name: str) -> DatasetInfo:
    """Registry entry of `name` (case-insensitive).

    Raises:
      DatasetError: unknown name; the message lists the valid names.
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return _REGISTRY[key]
