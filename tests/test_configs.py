"""configs/: shared blocks every get_config starts from."""

import pytest

from gold.configs import common
from gold.configs import dc as dc_config
from gold.configs import dm as dm_config
from gold import data as gdata


@pytest.mark.parametrize("dataset,depth", [
    ("digits", 1), ("mnist", 3), ("fashion_mnist", 3), ("cifar10", 3), ("svhn", 3),
    ("tinyimagenet", 4), ("imagenet64", 4), ("kinetics400", 4)])
def test_convnet_depth_follows_the_resolution_rule(dataset, depth):
    # log2(side) - 2: ConvNetD3 at 28/32 px, D4 at 64 px (paper's TinyImageNet net), D1 at 8 px
    assert common.convnet_depth(dataset) == depth
    assert dc_config.get_config(dataset).model.depth == depth
    assert dm_config.get_config(dataset).model.depth == depth


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(gdata.DatasetError, match="unknown dataset"):
        common.convnet_depth("mnistt")
