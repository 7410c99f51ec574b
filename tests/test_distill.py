"""DC / DSA / DM steps, runtime pruning and the real-batch plumbing (tiny, real MNIST)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import config_utils
from gold.configs import dc as dc_config
from gold.configs import dm as dm_config
from gold.configs import dsa as dsa_config
from gold.distill import common, dc, loop, registry


def tiny(config, data_dir, ipc=1):
    """A CPU-test-sized version of a paper config: width 8, depth 1, 30 images/class."""
    config.data.dir = str(data_dir)
    config.data.train_per_class = 30
    config.data.test_per_class = 10
    config.model.width = 8
    config.model.depth = 1
    config.model.conv_impl = "xla"  # shorter compiles; the fast-wgrad conv has its own tests
    config.batch_real = 16
    config.ipc = ipc
    return config


@pytest.fixture(scope="module")
def real(gold_data_dir):
    ds = loop.load_data(tiny(dc_config.get_config("mnist"), gold_data_dir).data)
    return common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 16)


@pytest.fixture(scope="module")
def dc_algo(real, gold_data_dir):
    """Plain DC at IPC 1 and its jitted step (compiled once for several tests)."""
    algo = registry.build(tiny(dc_config.get_config("mnist"), gold_data_dir), real)
    return algo, jax.jit(algo.step)


def _same_key_losses(algo, real, steps=1, step=None):
    """Loss at the initial images and after `steps` updates, with the SAME network and
    real batch (same step key), i.e. the step decreases its own objective."""
    state = algo.init(jax.random.key(0), real)
    step = jax.jit(algo.step) if step is None else step
    key = jax.random.key(7)
    s1, m0 = step(state, key, real)
    for _ in range(steps - 1):
        s1, _ = step(s1, key, real)
    _, m1 = step(s1, key, real)
    return float(m0["loss"]), float(m1["loss"]), state, s1


def test_real_data_batch_halving_and_class_batch(real):
    assert real.num_real == 300 and real.num_classes == 10
    assert real.batch == 16  # 16 < 2 * 30: unchanged
    small = common.make_real_data(np.asarray(real.x[:40]), np.asarray(real.y[:40]), 10, 256)
    counts = small.class_counts()
    assert small.batch < 2 * counts.max() <= 2 * small.batch  # halved 256 -> below 2 * largest
    c = int(np.argmin(counts))
    x, w = common.real_class_batch(small, jax.random.key(0), c)
    assert x.shape == (small.batch, 28, 28, 1)
    assert float(w.sum()) == min(small.batch, counts[c])
    with pytest.raises(ValueError, match="no real samples"):
        common.make_real_data(np.asarray(real.x[:5]), np.zeros(5, np.int32), 10, 16)


def test_dc_step_decreases_its_matching_loss(real, dc_algo):
    algo, step = dc_algo
    before, after, s0, s1 = _same_key_losses(algo, real, step=step)
    assert after < before
    assert algo.synthetic(s1).x.shape == (10, 28, 28, 1)
    assert not np.allclose(algo.synthetic(s0).x, algo.synthetic(s1).x)
    assert int(s1.iteration) == 0  # the engine counts iterations, not the step
    assert (algo.settings["outer_loop"], algo.settings["inner_loop"]) == (1, 1)


def test_dsa_is_dc_with_siamese_augmentation_and_runs(real, gold_data_dir):
    cfg = tiny(dsa_config.get_config("mnist"), gold_data_dir)
    algo = registry.build(cfg, real)
    assert algo.name == "dsa" and registry.get("dsa").settings is registry.get("dc").settings
    state = algo.init(jax.random.key(0), real)
    state, m = jax.jit(algo.step)(state, jax.random.key(1), real)
    assert np.isfinite(float(m["loss"]))


def test_dc_batchnorm_outer_inner_loops_and_real_init(real, gold_data_dir):
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir, ipc=2)
    cfg.outer_loop, cfg.inner_loop, cfg.init = 2, 1, "real"
    cfg.model.norm = "batchnorm"
    algo = registry.build(cfg, real)
    assert (algo.settings["outer_loop"], algo.settings["inner_loop"]) == (2, 1)
    assert algo.settings["has_batchnorm"]
    state = algo.init(jax.random.key(0), real)
    x0 = np.asarray(algo.synthetic(state).x)
    # real init: every synthetic image is one of the real images of its class
    xr, yr = np.asarray(real.x).reshape(300, -1), np.asarray(real.y)
    for i, lab in enumerate(np.asarray(algo.synthetic(state).y)):
        assert np.any(np.all(xr[yr == lab] == x0[i].reshape(-1), axis=1))
    state, m = jax.jit(algo.step)(state, jax.random.key(1), real)
    assert np.isfinite(float(m["loss"])) and not np.allclose(algo.synthetic(state).x, x0)
    assert dc.loops_for_ipc(10) == (10, 50) and dc.loops_for_ipc(50) == (50, 10)
    with pytest.raises(ValueError, match="ipc=3"):
        dc.loops_for_ipc(3)
    cfg.outer_loop, cfg.ipc = 0, 3  # no table row: refused when the algorithm is built
    with pytest.raises(ValueError, match="ipc=3"):
        registry.build(cfg, real)


def test_real_init_is_traceable_and_checked_when_built(real, gold_data_dir):
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir, ipc=2)
    algo = registry.build(cfg, real)
    states = jax.vmap(algo.init, in_axes=(0, None))(jax.random.split(jax.random.key(0), 3), real)
    assert states.params["images"]["x"].shape == (3, 20, 28, 28, 1)
    cfg.ipc = 31  # 30 per class kept
    with pytest.raises(ValueError, match="31 distinct images per class"):
        registry.build(cfg, real)


def test_dm_step_decreases_its_loss(real, gold_data_dir):
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir)
    cfg.dsa_strategy = "none"  # same network + same batch -> comparable losses
    algo = registry.build(cfg, real)
    before, after, _, _ = _same_key_losses(algo, real)
    assert after < before


@pytest.mark.parametrize("module", [dc_config, dm_config])
def test_class_loops_give_the_same_step(real, gold_data_dir, module):
    """map / unroll over the classes: the same keys per class, the same numbers."""
    states = {}
    for class_loop in common.CLASS_LOOPS:
        cfg = tiny(module.get_config("mnist"), gold_data_dir)
        cfg.class_loop = class_loop
        algo = registry.build(cfg, real)
        state, metrics = jax.jit(algo.step)(algo.init(jax.random.key(0), real), jax.random.key(3), real)
        states[class_loop] = (np.asarray(state.params["images"]["x"]), float(metrics["loss"]))
    x_map, loss_map = states["map"]
    for class_loop in ("unroll",):
        x, loss = states[class_loop]
        assert loss == pytest.approx(loss_map, rel=1e-4)
        np.testing.assert_allclose(x, x_map, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("module", [dc_config, dsa_config, dm_config])
def test_dsa_strategy_never_flips_digits(module):
    """Fidelity: the DC/DSA reference uses no flip for MNIST-like data and SVHN; natural
    images keep the reference's flip. Distillation and evaluation alike."""
    for dataset in ("mnist", "digits", "svhn"):
        cfg = module.get_config(dataset)
        assert "flip" not in cfg.dsa_strategy
        protocol = config_utils.eval_protocol(cfg)
        assert protocol.dsa_strategy == cfg.dsa_strategy
    cfg = module.get_config("cifar10")
    assert cfg.dsa_strategy == "color_crop_cutout_flip_scale_rotate"


def test_evaluation_uses_the_runs_dsa_strategy(gold_data_dir):
    """Fidelity: eval_protocol passed no strategy, so evaluation always flipped."""
    cfg = dm_config.get_config("cifar10")
    cfg.dsa_strategy = "crop_scale"
    p = config_utils.eval_protocol(cfg)
    assert (p.augment, p.dsa_strategy) == ("dsa", "crop_scale")
    assert p.to_dict()["dsa_strategy"] == "crop_scale"  # stored with synthetic.npz
    cfg.dsa_strategy = "none"  # reference: args.dsa False -> the dataset's default augmentation
    assert config_utils.eval_protocol(cfg).augment == "none"
    cfg = dm_config.get_config("mnist")
    cfg.dsa_strategy = "none"
    assert config_utils.eval_protocol(cfg).augment == "dc_mnist"


def test_real_gradient_with_pruning_is_gradient_of_kept_mean():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32)
    per_sample = lambda p: jnp.sum((x @ p["w"]) ** 2, axis=1)
    mask = jnp.ones(8)
    g_plain, losses = dc.real_gradient(per_sample, {"w": w}, mask)
    ref = jax.grad(lambda p: jnp.mean(per_sample(p)))({"w": w})
    np.testing.assert_allclose(g_plain["w"], ref["w"], rtol=1e-5)
    key = jax.random.key(3)
    g_pruned, _ = dc.real_gradient(per_sample, {"w": w}, mask, (key, 0.5, 1.0, jnp.array(True)))
    from gold import selection as gsel
    kept = np.flatnonzero(np.asarray(gsel.runtime_prune_weights(key, losses, 0.5, 1.0, mask=mask)))
    assert len(kept) == 4
    ref = jax.grad(lambda p: jnp.mean(per_sample(p)[kept]))({"w": w})
    np.testing.assert_allclose(g_pruned["w"], ref["w"], rtol=1e-5)
    g_off, _ = dc.real_gradient(per_sample, {"w": w}, mask, (key, 0.5, 1.0, jnp.array(False)))
    np.testing.assert_allclose(g_off["w"], g_plain["w"], rtol=1e-6)


def test_pruned_count_uses_the_valid_entries_of_a_padded_batch():
    """Fidelity: B=16 with 10 valid entries and keep 0.7 keeps 7 (Code 1), not all 10."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 5)), jnp.float32)
    per_sample = lambda p: jnp.sum((x @ p) ** 2, axis=1)
    mask = jnp.ones(16).at[10:].set(0.0)
    p = jnp.ones((5, 2), jnp.float32)
    for seed in range(5):
        key = jax.random.key(seed)
        g, losses = dc.real_gradient(per_sample, p, mask, (key, 0.7, 1.0, jnp.array(True)))
        from gold import selection as gsel
        w = np.asarray(gsel.runtime_prune_weights(key, losses, 0.7, 1.0, mask=mask))
        kept = np.flatnonzero(w)
        assert len(kept) == 7 and kept.max() < 10
        np.testing.assert_allclose(g, jax.grad(lambda q: jnp.mean(per_sample(q)[kept]))(p), rtol=1e-5)


def test_runtime_pruning_switch_changes_the_step(real, dc_algo, gold_data_dir):
    algo, step = dc_algo
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir)
    cfg.runtime_pruning.enabled = True
    cfg.runtime_pruning.start = 0.0
    algo_p = registry.build(cfg, real)
    assert algo_p.settings["runtime_pruning"]["ratio"] == pytest.approx(0.3)
    key = jax.random.key(5)
    _, m_p = jax.jit(algo_p.step)(algo_p.init(jax.random.key(0), real), key, real)
    _, m = step(algo.init(jax.random.key(0), real), key, real)
    assert np.isfinite(float(m_p["loss"])) and float(m_p["loss"]) != float(m["loss"])
    cfg.runtime_pruning.ratio = 1.0
    with pytest.raises(ValueError, match="PRUNED fraction"):
        registry.build(cfg, real)


def test_runtime_pruning_at_ipc1_follows_the_paper_or_is_refused(real, gold_data_dir):
    """Fidelity: with one outer loop, pruning at 40% of the outer loops never started
    (a silent no-op). The paper runs IPC 1 with 10 outer loops (supp. 12.6)."""
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir)
    cfg.runtime_pruning.enabled = True
    algo = registry.build(cfg, real)
    assert (algo.settings["outer_loop"], algo.settings["prune_start_outer"]) == (10, 4)
    cfg.outer_loop = 1  # explicitly one outer loop: pruning could never start
    with pytest.raises(ValueError, match="never start"):
        registry.build(cfg, real)
    cfg.outer_loop, cfg.runtime_pruning.start = 0, 1.0
    with pytest.raises(ValueError, match="never start"):
        registry.build(cfg, real)
