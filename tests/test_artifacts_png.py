"""synthetic.png layout: classes as labelled columns, wrapped rows, grey and RGB, any IPC."""

import numpy as np
import pytest
from PIL import Image

from gold.distill import artifacts
from gold.evaluate import EvalProtocol


def _set(num_classes, ipc, channels, hw=8):
    # Image i of class c is a constant (c + 1) / (num_classes + 1): easy to find on the canvas.
    y = np.repeat(np.arange(num_classes), ipc)
    x = np.broadcast_to(((y + 1) / (num_classes + 1))[:, None, None, None],
                        (len(y), hw, hw, channels)).astype(np.float32)
    return artifacts.SyntheticSet(
        x=x, y=y, lr=None, dataset="toy", num_classes=num_classes,
        class_names=tuple(f"class{c}" for c in range(num_classes)), ipc=ipc, algorithm="dc",
        mean=(0.0,) * channels, std=(1.0,) * channels, normalized=False, zca=None,
        protocol=EvalProtocol(), meta={})


def test_image_grid_puts_classes_in_columns_and_wraps():
    syn = _set(12, 1, 1, hw=4)
    g = artifacts.image_grid(syn.x, syn.y, 12, classes_per_row=5, pad=1, label_height=3)
    # tile: width 1 image (4 + 1 pad) + 2 pad = 7, height 3 label + 1 * (4 + 1) = 8
    assert g.image.shape == (3 * 8 + 1, 5 * 7, 3) and g.label_width == 5
    for c in range(12):
        top, left = (c // 5) * 8 + 3 + 1, (c % 5) * 7 + 1 + 1
        expect = int((c + 1) / 13 * 255 + 0.5)
        np.testing.assert_array_equal(g.image[top:top + 4, left:left + 4], expect)
        assert g.label_anchors[c] == ((c % 5) * 7 + 1 + 2.5, (c // 5) * 8 + 3)
    assert np.all(g.image[-8:, 2 * 7:] == 255)  # no classes 12..14: white


def test_image_grid_stacks_ipc_down_a_column_then_adds_columns():
    syn = _set(2, 13, 3, hw=2)
    g = artifacts.image_grid(syn.x, syn.y, 2, images_per_column=10, pad=0)
    assert g.image.shape == (10 * 2, 2 * (2 * 2), 3)  # 10 rows; 2 sub-columns per class
    expect = [int((c + 1) / 3 * 255 + 0.5) for c in range(2)]
    np.testing.assert_array_equal(g.image[:20, 0:2], expect[0])  # images 0..9 of class 0
    np.testing.assert_array_equal(g.image[:6, 2:4], expect[0])   # images 10..12
    assert np.all(g.image[6:, 2:4] == 255)
    np.testing.assert_array_equal(g.image[:20, 4:6], expect[1])


@pytest.mark.parametrize("num_classes,ipc,channels", [(10, 1, 1), (10, 10, 1), (100, 1, 3), (10, 3, 3)])
def test_save_png_readable_layout(tmp_path, num_classes, ipc, channels):
    path = tmp_path / "synthetic.png"
    artifacts.save_png(str(path), _set(num_classes, ipc, channels))
    with Image.open(path) as img:
        w, h = img.size
    per_row = min(num_classes, 10)
    rows = -(-num_classes // per_row)
    assert w >= per_row * 64  # every image at least 64 screen pixels wide
    assert h >= rows * min(ipc, 10) * 64
    if ipc == 1 and num_classes == 10:
        assert w > 5 * h  # one row of classes, not one column
