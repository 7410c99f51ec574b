"""DC / DSA / DM steps, runtime pruning and the real-batch plumbing (tiny, real MNIST)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.configs import dc as dc_config
from gold.configs import dm as dm_config
from gold.configs import dsa as dsa_config
from gold.distill import common, dc, dm, loop


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
    algo = dc.make(tiny(dc_config.get_config("mnist"), gold_data_dir), real)
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
    assert int(s1.iteration) == 1
    assert (algo.settings["outer_loop"], algo.settings["inner_loop"]) == (1, 1)


def test_dsa_is_dc_with_a_switch_and_runs(real, gold_data_dir):
    cfg = tiny(dsa_config.get_config("mnist"), gold_data_dir)
    algo = loop.get_algorithm("dsa").make(cfg, real)
    assert algo.name == "dsa" and algo.settings["dsa"] and loop.get_algorithm("dsa") is dc
    state = algo.init(jax.random.key(0), real)
    state, m = jax.jit(algo.step)(state, jax.random.key(1), real)
    assert np.isfinite(float(m["loss"]))


def test_dc_batchnorm_outer_inner_loops_and_real_init(real, gold_data_dir):
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir, ipc=2)
    cfg.outer_loop, cfg.inner_loop, cfg.init = 2, 1, "real"
    cfg.model.norm = "batchnorm"
    algo = dc.make(cfg, real)
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


def test_dm_step_decreases_its_loss(real, gold_data_dir):
    cfg = tiny(dm_config.get_config("mnist"), gold_data_dir)
    cfg.dsa_strategy = "none"  # same network + same batch -> comparable losses
    algo = dm.make(cfg, real)
    before, after, _, _ = _same_key_losses(algo, real)
    assert after < before


def test_runtime_prune_weights_draw_only_valid_entries_and_respect_ratio():
    b = 20
    losses = jnp.linspace(0.0, 5.0, b)
    mask = jnp.ones(b).at[15:].set(0.0)  # 5 padding entries
    counts = np.zeros(b)
    for i in range(200):
        w = np.asarray(dc.masked_prune_weights(jax.random.key(i), losses, mask, 0.7, 1.0))
        kept = np.flatnonzero(w)
        assert len(kept) == 14  # round(0.7 * 20), all inside the 15 valid entries
        assert kept.max() < 15
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
        counts[kept] += 1
    assert counts[0] > counts[14]  # low loss kept more often than high loss


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
    kept = np.flatnonzero(np.asarray(dc.masked_prune_weights(key, losses, mask, 0.5, 1.0)))
    assert len(kept) == 4
    ref = jax.grad(lambda p: jnp.mean(per_sample(p)[kept]))({"w": w})
    np.testing.assert_allclose(g_pruned["w"], ref["w"], rtol=1e-5)
    g_off, _ = dc.real_gradient(per_sample, {"w": w}, mask, (key, 0.5, 1.0, jnp.array(False)))
    np.testing.assert_allclose(g_off["w"], g_plain["w"], rtol=1e-6)


def test_runtime_pruning_switch_changes_the_step(real, dc_algo, gold_data_dir):
    algo, step = dc_algo
    cfg = tiny(dc_config.get_config("mnist"), gold_data_dir)
    cfg.runtime_pruning.enabled = True
    cfg.runtime_pruning.start = 0.0
    algo_p = dc.make(cfg, real)
    assert algo_p.settings["prune"] and algo_p.settings["prune_keep"] == pytest.approx(0.7)
    key = jax.random.key(5)
    _, m_p = jax.jit(algo_p.step)(algo_p.init(jax.random.key(0), real), key, real)
    _, m = step(algo.init(jax.random.key(0), real), key, real)
    assert np.isfinite(float(m_p["loss"])) and float(m_p["loss"]) != float(m["loss"])
    cfg.runtime_pruning.start = 1.0  # never reached with one outer loop: same as off
    algo_late = dc.make(cfg, real)
    assert algo_late.settings["prune_start_outer"] == 1
    cfg.runtime_pruning.ratio = 1.0
    with pytest.raises(ValueError, match="PRUNED fraction"):
        dc.make(cfg, real)
