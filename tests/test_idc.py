"""IDC (gold.distill.idc) on the embedded digits: matching math against a hand-computed
reference, runtime pruning inside the batch, a step that lowers its own loss, settings
that cannot take effect, the configs, and an end-to-end run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import config_utils
from gold import data as gdata
from gold import nn as gnn
from gold import selection as gsel
from gold.configs import idc as idc_config
from gold.distill import artifacts, common, idc, loop, registry


def tiny_cfg(**overrides):
    """configs/idc.py:digits shrunk to seconds (same code path)."""
    cfg = idc_config.get_config("digits")
    cfg.model.width = 8
    cfg.model.conv_impl = "xla"
    cfg.batch_real = 16
    cfg.inner_loop, cfg.n_data, cfg.batch_train = 2, 32, 16
    cfg.data.train_per_class, cfg.data.test_per_class = 30, 5
    cfg.eval.num_models, cfg.eval.epochs, cfg.eval.augment = 1, 2, "none"
    for name, value in overrides.items():
        cfg[name] = value
    return cfg


@pytest.fixture(scope="module")
def real():
    ds = gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)
    return common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 16)


@pytest.fixture(scope="module")
def net():
    """A tiny ConvNet (conv kernels, norm scales, a dense classifier) and its logits."""
    model = config_utils.build_model(tiny_cfg().model, 10, (8, 8, 1))
    variables = jax.jit(lambda k: gnn.init_variables(model, k, (8, 8, 1)))(jax.random.key(0))
    logits = jax.jit(lambda p, x: model.apply({**variables, "params": p}, x, train=False))
    return variables["params"], logits


def _images(seed, n):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 1)), jnp.float32)


@pytest.mark.parametrize("metric", ["l1", "mse"])
def test_matching_loss_is_the_summed_distance_over_conv_kernels(net, metric):
    params, logits = net
    xr, xs, c = _images(0, 6), _images(1, 3), 4
    ce = lambda p, x: jnp.mean(gnn.per_sample_cross_entropy(logits(p, x), jnp.full((x.shape[0],), c)))
    gr, gs = jax.grad(ce)(params, xr), jax.grad(ce)(params, xs)
    leaves = [(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(gr), jax.tree.leaves(gs))]
    assert {a.ndim for a, _ in leaves} >= {1, 2, 4}  # conv kernels, biases / scales, dense
    d = (lambda a, b: np.abs(a - b).sum()) if metric == "l1" else (lambda a, b: np.square(a - b).sum())
    want = sum(d(a, b) for a, b in leaves if a.ndim == 4)
    got = jax.jit(lambda x, y: idc.matching_loss(logits, params, x, jnp.ones(6), y, c, metric))(xr, xs)
    assert float(got) == pytest.approx(want, rel=1e-4)
    assert want < sum(d(a, b) for a, b in leaves)  # the dense layer / biases do count otherwise


def test_runtime_pruning_draws_only_from_the_batch_and_respects_the_ratio(net):
    """Pruned: the real gradient is the mean over round(0.7 * 12) = 8 kept entries, all of
    them among the 12 valid entries of the 16-entry batch (padding never drawn)."""
    params, logits = net
    xr, xs, c = _images(2, 16), _images(3, 4), 7
    mask = jnp.ones(16).at[12:].set(0.0)
    losses = gnn.per_sample_cross_entropy(logits(params, xr), jnp.full((16,), c))
    pruned_loss = jax.jit(lambda key, on: idc.matching_loss(
        logits, params, xr, mask, xs, c, "mse", (key, 0.7, 1.0, on)))
    plain_loss = jax.jit(lambda x, m: idc.matching_loss(logits, params, x, m, xs, c, "mse"))
    for seed in range(3):
        key = jax.random.key(seed)
        w = np.asarray(gsel.runtime_prune_weights(key, losses, 0.7, 1.0, mask=mask))
        kept = np.flatnonzero(w)
        assert len(kept) == gsel.runtime_keep_count(12, 0.7) == 8 and kept.max() < 12
        pruned = pruned_loss(key, jnp.array(True))
        subset = plain_loss(xr[kept], jnp.ones(8))
        assert float(pruned) == pytest.approx(float(subset), rel=1e-4)
    off = pruned_loss(key, jnp.array(False))
    full = plain_loss(xr[:12], jnp.ones(12))
    assert float(off) == pytest.approx(float(full), rel=1e-4)


def test_step_lowers_its_loss_and_decodes_a_normalised_multi_formation(real):
    algo = registry.build(tiny_cfg(), real)
    s = algo.settings
    assert (s["images_per_class"], s["image_lr"], s["net_steps_per_update"]) == (4, 5e-4, 2)
    state = algo.init(jax.random.key(0), real)
    stored = np.asarray(state.params["images"]["x"])
    assert stored.shape == (10, 8, 8, 1) and stored.min() >= 0 and stored.max() <= 1
    step, key = jax.jit(algo.step), jax.random.key(7)
    s1, m0 = step(state, key, real)
    _, m1 = step(s1, key, real)  # same network, batches and augmentation
    assert float(m1["loss"]) < float(m0["loss"])
    syn = algo.synthetic(s1)
    assert syn.x.shape == (40, 8, 8, 1)
    np.testing.assert_array_equal(syn.y, np.repeat(np.arange(10), 4))
    # decoded = normalised (with the digits statistics) upsampled crops of clipped pixels
    info = gdata.get_info("digits")
    x1 = np.clip(np.asarray(s1.params["images"]["x"]), 0, 1)
    top_left = jax.image.resize(x1[:1, :4, :4], (1, 8, 8, 1), "bilinear")
    np.testing.assert_allclose(syn.x[0], (top_left[0] - info.mean[0]) / info.std[0], atol=1e-5)


@pytest.mark.parametrize("overrides,pattern", [
    ({"inner_loop": 1}, "never trained"),
    ({"n_data": 0}, "cutmix_prob > 0"),
    ({"cutmix_prob": 1.5}, "cutmix_prob"),
    ({"dis_metric": "l2"}, "dis_metric"),
    ({"factor": 0}, "factor"),
])
def test_settings_that_cannot_take_effect_are_refused(real, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        registry.build(tiny_cfg(**overrides), real)


def test_pruning_that_never_starts_zca_batchnorm_and_convless_nets_are_refused(real):
    cfg = tiny_cfg()
    cfg.runtime_pruning.enabled, cfg.runtime_pruning.start = True, 1.0
    with pytest.raises(ValueError, match="never start"):
        registry.build(cfg, real)
    cfg = tiny_cfg()
    cfg.data.zca = True
    with pytest.raises(ValueError, match="ZCA"):
        registry.build(cfg, real)
    cfg = tiny_cfg()
    cfg.model.norm = "batchnorm"
    with pytest.raises(ValueError, match="BatchNorm"):
        registry.build(cfg, real)
    cfg = tiny_cfg()
    cfg.model.name = "mlp"  # no conv kernels: a zero distance would never move the images
    with pytest.raises(ValueError, match="conv kernels only"):
        registry.build(cfg, real)


def test_configs_follow_the_reference_per_dataset():
    c10 = idc_config.get_config("cifar10")
    assert (c10.dis_metric, c10.lr_img, c10.n_data, c10.factor, c10.batch_real) == ("mse", 5e-3, 2000, 2, 64)
    assert (c10.iterations, c10.inner_loop, c10.dsa_strategy) == (2000, 100, "color_crop_cutout")
    assert (c10.eval.batch_size, c10.eval.epochs, c10.eval.cutmix, c10.eval.schedule) == (64, 1000, 0.5, "multistep")
    mn = idc_config.get_config("mnist")
    assert (mn.dis_metric, mn.lr_img, mn.dsa_strategy, mn.cutmix_prob) == ("l1", 1e-4, "color_crop", 0.0)
    assert (mn.eval.cutmix, mn.eval.dsa_strategy) == (0.0, "color_crop_scale_rotate")
    pr = idc_config.get_config("cifar10,prune")
    assert (pr.factor, pr.iterations, pr.runtime_pruning.enabled) == (3, 500, True)
    assert pr.lr_img == pytest.approx(1.5e-2) and pr.runtime_pruning.ratio == pytest.approx(0.15)
    assert idc_config.get_config("cifar100,prune").runtime_pruning.ratio == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown"):
        idc_config.get_config("cifar10,prnue")


def test_end_to_end_tiny_run_factor3_capped_and_pruned(tmp_path):
    """launch-equivalent run: IPC 2, f=3 (8x8 digits pad to 9: 3x3 crops), 18 decoded
    images per class of which 8 enter each matching, pruning from the first update."""
    cfg = tiny_cfg(iterations=2, ipc=2, factor=3, batch_syn_max=8)
    cfg.runtime_pruning.enabled, cfg.runtime_pruning.start = True, 0.0
    res = loop.run(cfg, str(tmp_path))
    assert 0.0 <= res["accuracy_mean"] <= 100.0 and len(res["accuracies"]) == 1
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["algorithm"] == "idc" and saved["iterations"] == 2
    syn = artifacts.load_synthetic(str(tmp_path / "synthetic.npz"))
    s = syn.meta["settings"]
    assert (s["images_per_class"], s["synthetic_per_matching"], s["prune_start_inner"]) == (18, 8, 0)
    assert syn.x.shape == (180, 8, 8, 1) and syn.algorithm == "idc"
    np.testing.assert_array_equal(np.bincount(np.asarray(syn.y)), np.full(10, 18))
