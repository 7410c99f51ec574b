"""gold.distill.mtt: the step, its loss, configs and every bad-buffer error (fake buffers)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold.configs import mtt as mtt_config
from gold import config_utils
from gold import models as gmodels
from gold import workdir as gwork
from gold.distill import buffer as gbuf
from gold.distill import common
from gold.distill import mtt
from gold.distill import registry
from gold.distill.unroll import flat_apply_fn

K = 10
SHAPE = (8, 8, 1)  # tiny images: the step compiles in seconds


def _real(per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K * per_class, *SHAPE)).astype(np.float32)
    y = np.repeat(np.arange(K), per_class).astype(np.int32)
    return common.make_real_data(x, y, K, 256)


def _config(buffer_dir, **overrides):
    config = mtt_config.get_config("mnist")
    config.model.width = 4
    config.model.depth = 1
    config.buffer_dir = str(buffer_dir)
    config.syn_steps = 3
    config.dsa_strategy = "flip_crop"
    for k, v in overrides.items():
        config[k] = v
    return config


def _num_params(config):
    model = config_utils.build_model(config.model, K, SHAPE)
    return flat_apply_fn(model, SHAPE)[1]


def write_fake_buffer(d, real, config, *, epochs=3, num_experts=2, per_chunk=1, chunks=None,
                      dataset="mnist", width=None, seed=0):
    """A buffer directory as launch/buffer.py writes it, with random trajectories."""
    os.makedirs(d, exist_ok=True)
    model_cfg = config.model.copy_and_resolve_references()
    if width is not None:
        model_cfg.width = width
    p = flat_apply_fn(config_utils.build_model(model_cfg, K, SHAPE), SHAPE)[1]
    rng = np.random.default_rng(seed)
    traj = (0.05 * rng.normal(size=(num_experts, epochs + 1, p))).astype(np.float32)
    traj = np.cumsum(traj, axis=1)
    chunks = list(range(gbuf.num_chunks(num_experts, per_chunk))) if chunks is None else chunks
    entries = {}
    for i in chunks:
        lo, hi = gbuf.chunk_bounds(i, per_chunk, num_experts)
        gbuf.write_chunk(d, i, traj[lo:hi], np.zeros((hi - lo, epochs)), np.zeros(hi - lo),
                         np.arange(lo, hi), "float32")
        entries[str(i)] = {"file": gbuf.chunk_file(i), "start": lo, "stop": hi, "seconds": 0.0,
                           "test_accuracy": [0.0] * (hi - lo), "final_train_loss": [0.0] * (hi - lo)}
    n = real.num_real
    gbuf.save_selection(d, np.arange(n), np.arange(n), np.asarray(real.x), np.asarray(real.y), K)
    manifest = {
        "format_version": gbuf.FORMAT_VERSION, "dataset": dataset,
        "data_subset": {"train_per_class": 0, "test_per_class": 0}, "zca": False,
        "model": {"name": model_cfg.name,
                  "overrides": dict(sorted(config_utils.model_overrides(model_cfg).items()))},
        "num_params": p, "input_shape": list(SHAPE), "num_classes": K, "epochs": epochs,
        "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 256,
        "dsa_strategy": "color_crop", "seed": 0, "dtype": "float32",
        "experts_per_chunk": per_chunk,
        "selection": {"indicator": "none", "ratio": 1.0, "utility_path": "", "stratum": 0,
                      "num_strata": 10, "policy": "greedy", "min_per_class": 1, "num_kept": n,
                      "indices_sha256": gbuf.indices_sha256(np.arange(n))},
        "num_experts": num_experts, "chunks": entries,
    }
    gwork.write_json(os.path.join(d, gbuf.MANIFEST), manifest)
    return traj


# ------------------------------------------------------------------------- pure parts
def test_registry_and_matching_loss():
    spec = registry.get("mtt")
    assert spec.make is mtt.make and spec.needs_buffer and spec.settings is mtt.MTTSettings
    start, target = jnp.zeros(4), jnp.ones(4)
    assert float(mtt.matching_loss(target, start, target)) == 0.0
    assert float(mtt.matching_loss(start, start, target)) == pytest.approx(1.0)
    assert float(mtt.matching_loss(0.5 * target, start, target)) == pytest.approx(0.25)


def test_minibatch_indices_cover_the_set():
    idx = np.asarray(mtt.minibatch_indices(jax.random.key(0), 6, 3, 5))
    assert idx.shape == (5, 3)
    flat = idx.reshape(-1)
    for p in range(2):  # two complete permutations, then a partial one
        assert sorted(flat[6 * p:6 * p + 6]) == list(range(6))
    full = np.asarray(mtt.minibatch_indices(jax.random.key(1), 6, 6, 3))
    assert all(sorted(r) == list(range(6)) for r in full)


def test_config_resolves_per_ipc_values():
    c = mtt_config.get_config("cifar10")
    assert c.data.zca and c.ipc == 1
    assert registry.read_settings(c).resolved["syn_steps"] == 50
    c.ipc = 10
    v = registry.read_settings(c).resolved
    assert (v["syn_steps"], v["expert_epochs"], v["max_start_epoch"]) == (30, 2, 20)
    assert v["lr_img"] == 100.0 and v["syn_lr_init"] == 0.001 and v["lr_lr"] == 1e-5
    c.lr_img = 1000.0  # explicit values win
    assert registry.read_settings(c).resolved["lr_img"] == 1000.0
    assert not mtt_config.get_config("cifar10,50").data.zca
    assert mtt_config.get_config("mnist").eval.augment == "dsa"
    # fidelity: the paper's 10,000 iterations; real init; no flip on digits
    m = mtt_config.get_config("mnist")
    assert (m.iterations, m.init, m.expert_order) == (10000, "real", "cycle")
    assert "flip" not in m.dsa_strategy and "flip" in c.dsa_strategy


def test_experts_are_walked_in_shuffled_passes():
    """Fidelity: the reference shuffles its experts and walks through them; every pass
    visits each expert exactly once, in a new order."""
    key = jax.random.key(3)
    order = np.asarray(jax.vmap(lambda i: mtt.expert_at(key, i, 5))(jnp.arange(15)))
    for p in range(3):
        assert sorted(order[5 * p: 5 * p + 5]) == [0, 1, 2, 3, 4]
    assert not (np.array_equal(order[:5], order[5:10]) and np.array_equal(order[5:10], order[10:]))


# ------------------------------------------------------------------ the matching loss
def _tiny_student():
    model = gmodels.get_model("convnet", 3, (8, 8, 1), width=4, depth=1)
    apply, p = flat_apply_fn(model, (8, 8, 1))
    theta = 0.1 * jax.random.normal(jax.random.key(0), (p,))
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    y = jnp.arange(6) % 3
    idx = mtt.minibatch_indices(jax.random.key(2), 6, 3, 4)
    keys = jax.random.split(jax.random.key(3), 4)
    return apply, theta, x, y, idx, keys


def test_loss_is_zero_when_the_student_lands_on_the_target():
    apply, theta, x, y, idx, keys = _tiny_student()
    lr = jnp.float32(0.05)

    @jax.jit
    def run(x, lr):
        end, _ = mtt.student_end(apply, x, y, lr, theta, idx, keys, dsa_strategy="flip")

        def loss(x, lr, target):
            end_, _ = mtt.student_end(apply, x, y, lr, theta, idx, keys, dsa_strategy="flip")
            return mtt.matching_loss(end_, theta, target)

        grads = jax.grad(loss, argnums=(0, 1))(x, lr, end)
        return end, loss(x, lr, end), loss(x, lr, end + 0.01), grads

    end, at_target, off_target, (gx, glr) = run(x, lr)
    assert float(jnp.abs(end - theta).max()) > 0  # the student moved
    assert float(at_target) == 0.0
    assert float(off_target) > 0.0
    assert float(jnp.abs(gx).max()) == 0.0 and float(glr) == 0.0


# --------------------------------------------------------------------- make() errors
def test_missing_buffer(tmp_path):
    real = _real()
    with pytest.raises(gbuf.BufferError, match="launch/buffer.py"):
        registry.build(_config(""), real)
    with pytest.raises(gbuf.BufferError, match="(?s)no expert buffer.*launch/buffer.py"):
        registry.build(_config(tmp_path / "nowhere"), real)


def test_partial_buffer_says_how_to_resume(tmp_path):
    real = _real()
    config = _config(tmp_path)
    write_fake_buffer(tmp_path, real, config, num_experts=4, per_chunk=2, chunks=[0])
    with pytest.raises(gbuf.BufferError, match=r"(?s)partial: 2 of 4 experts.*launch/buffer.py"
                                               r".*max_experts <= 2"):
        registry.build(config, real)
    algo = registry.build(_config(tmp_path, max_experts=2), real)  # the done experts are usable
    assert algo.settings["num_experts"] == 2


def test_epochs_beyond_the_buffer(tmp_path):
    real = _real()
    config = _config(tmp_path, max_start_epoch=2, expert_epochs=2)
    write_fake_buffer(tmp_path, real, config, epochs=3)
    with pytest.raises(gbuf.BufferError, match="(?s)epochs up to 4.*stores epochs 0..3"):
        registry.build(_config(tmp_path, max_start_epoch=3, expert_epochs=2), real)
    assert registry.build(config, real).settings["buffer_epochs"] == 3  # start <= 1, target <= 3


def test_buffer_of_another_architecture_or_dataset(tmp_path):
    real = _real()
    config = _config(tmp_path / "a")
    write_fake_buffer(tmp_path / "a", real, config, width=8)
    with pytest.raises(gbuf.BufferError, match="(?s)does not fit.*model"):
        registry.build(config, real)
    config_b = _config(tmp_path / "b")
    write_fake_buffer(tmp_path / "b", real, config_b, dataset="fashion_mnist")
    with pytest.raises(gbuf.BufferError, match="(?s)does not fit.*dataset 'fashion_mnist'"):
        registry.build(config_b, real)
    config_c = _config(tmp_path / "b")
    config_c.data.zca = True
    with pytest.raises(gbuf.BufferError, match="zca"):
        registry.build(config_c, real)


def test_buffer_trained_on_other_samples(tmp_path):
    config = _config(tmp_path)
    write_fake_buffer(tmp_path, _real(seed=0), config)
    other = _real(seed=1)
    with pytest.raises(gbuf.BufferError, match="other real samples"):
        registry.build(config, other)
    assert registry.build(_config(tmp_path, allow_buffer_mismatch=True), other).name == "mtt"


# ------------------------------------------------------------------------- the step
def test_step_remat_matches_plain_and_learns_the_lr(tmp_path):
    real = _real()
    config = _config(tmp_path, max_start_epoch=2, expert_epochs=1)
    write_fake_buffer(tmp_path, real, config, epochs=3)
    outs = []
    for remat in (True, False):
        algo = registry.build(_config(tmp_path, max_start_epoch=2, expert_epochs=1, remat=remat), real)
        state = algo.init(jax.random.key(0), real)
        x0 = np.asarray(algo.synthetic(state).x)
        state, metrics = jax.jit(algo.step)(state, jax.random.key(5), real)
        syn = algo.synthetic(state)
        outs.append((np.asarray(syn.x), float(syn.lr), float(metrics["loss"])))
    (x_r, lr_r, loss_r), (x_p, lr_p, loss_p) = outs
    assert loss_r == pytest.approx(loss_p, rel=1e-5)
    np.testing.assert_allclose(x_r, x_p, rtol=1e-4, atol=1e-6)
    assert lr_r == pytest.approx(lr_p, rel=1e-5)
    assert np.abs(x_r - x0).max() > 0  # images moved
    assert lr_r != config.lr_lr and lr_r != 0.01  # the lr moved off its init (0.01)
    assert x_r.shape == (K, *SHAPE)


def test_soft_labels_are_learned_and_round_trip(tmp_path):
    """learn_labels: labels are a learned entry of the parameters (own optimiser), the
    student uses soft cross-entropy, and synthetic.npz stores and evaluates them."""
    real = _real()
    config = _config(tmp_path, max_start_epoch=2, expert_epochs=1, learn_labels=True, lr_labels=10.0)
    write_fake_buffer(tmp_path, real, config, epochs=3)
    algo = registry.build(config, real)
    state = algo.init(jax.random.key(0), real)
    y0 = np.asarray(algo.synthetic(state).y)  # softmax(10 x one-hot): nearly one-hot
    np.testing.assert_allclose(y0.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(y0.argmax(1), np.arange(K))
    assert y0.min() > 0 and np.diag(y0).min() > 0.99
    assert set(state.params) == {"images", "labels", "lr"}
    state, _ = jax.jit(algo.step)(state, jax.random.key(5), real)
    syn = algo.synthetic(state)
    assert syn.y.shape == (K, K) and np.abs(np.asarray(syn.y) - y0).max() > 0
    np.testing.assert_allclose(np.asarray(syn.y).sum(1), 1.0, rtol=1e-5)  # still distributions
    from gold.data import load_dataset
    from gold.distill import artifacts
    from gold.evaluate import EvalProtocol
    ds = load_dataset("digits")
    path = str(tmp_path / "synthetic.npz")
    artifacts.save_synthetic(path, x=np.asarray(syn.x), y=np.asarray(syn.y), lr=float(syn.lr), dataset=ds,
                             ipc=1, algorithm="mtt", protocol=EvalProtocol(epochs=2, num_models=1), meta={})
    back = artifacts.load_synthetic(path)
    np.testing.assert_array_equal(back.y, np.asarray(syn.y))
    assert back.y.dtype == np.float32 and back.lr == pytest.approx(float(syn.lr))
    res = back.evaluate(jax.random.key(0))
    assert np.isfinite(res.mean)
    config.lr_labels = 0.0
    with pytest.raises(ValueError, match="lr_labels"):
        registry.build(config, real)
