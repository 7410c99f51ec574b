"""End to end on tiny real MNIST: buffer (with a random 50% selection) -> MTT -> evaluation
with the learned lr; the same selection is enforced on both stages."""

import os

import numpy as np
import pytest

from gold.configs import buffer as buffer_config
from gold.configs import mtt as mtt_config
from gold.distill import buffer as gbuf
from gold.distill import load_synthetic
from gold.distill import loop

PER_CLASS = 30  # 300 training images, 150 kept


def _selection(config, ratio):
    config.selection.indicator = "random" if ratio < 1 else "none"
    config.selection.ratio = ratio


def test_buffer_then_mtt_on_tiny_mnist(tmp_path, gold_data_dir):
    assert (gold_data_dir / "mnist.npz").is_file(), f"no mnist.npz in {gold_data_dir}"
    bcfg = buffer_config.get_config("mnist")
    bcfg.data.train_per_class = PER_CLASS
    bcfg.data.test_per_class = 5
    bcfg.model.width = 16
    bcfg.num_experts = 2
    bcfg.epochs = 2
    bcfg.experts_per_chunk = 2
    bcfg.batch_size = 32
    bcfg.dsa_strategy = "flip"  # one cheap op-group: the test is compile-bound
    _selection(bcfg, 0.5)
    buf_dir = str(tmp_path / "buffer")
    bres = gbuf.run(bcfg, buf_dir)
    assert bres["num_experts"] == 2 and bres["num_real"] == 150
    assert os.path.exists(os.path.join(buf_dir, "experts_00000.npz"))

    cfg = mtt_config.get_config("mnist")
    cfg.data.train_per_class = PER_CLASS
    cfg.data.test_per_class = 10
    cfg.model.width = 16
    cfg.buffer_dir = buf_dir
    cfg.iterations = 3
    cfg.syn_steps = 4
    cfg.max_start_epoch = 1
    cfg.expert_epochs = 1
    cfg.checkpoint_every = 2
    cfg.log_every = 1
    cfg.dsa_strategy = "flip"
    cfg.eval.num_models = 2
    cfg.eval.epochs = 5
    cfg.eval.augment = "none"
    _selection(cfg, 0.5)
    res = loop.run(cfg, str(tmp_path / "mtt"))
    assert res["algorithm"] == "mtt" and res["num_real"] == 150 and res["iterations"] == 3
    assert np.isfinite(res["final_loss"]) and 0.0 <= res["accuracy_mean"] <= 100.0
    syn = load_synthetic(str(tmp_path / "mtt" / "synthetic.npz"))
    assert syn.x.shape == (10, 28, 28, 1) and syn.algorithm == "mtt"
    assert syn.lr == pytest.approx(res["learned_lr"]) and syn.lr != 0.01  # learned, stored, used
    assert os.path.exists(tmp_path / "mtt" / "synthetic.png")

    # The same buffer with the full data (another selection) is refused.
    _selection(cfg, 1.0)
    with pytest.raises(gbuf.BufferError, match="other real samples"):
        loop.run(cfg, str(tmp_path / "mtt_full"))
