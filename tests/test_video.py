"""Video: the ConvNet+GRU model, DM and the MTT objective on clips, DSA refused on clips, the
loss indicator on a streamed clip folder (generated tiny clips)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from gold import config_utils
from gold import evaluate as gev
from gold import models as gmodels
from gold import nn as gnn
from gold.configs import dm as dm_config
from gold.configs import mtt as mtt_config
from gold.data import stream as gs
from gold.distill import artifacts
from gold.distill import buffer as gbuf
from gold.distill import common
from gold.distill import mtt
from gold.distill import registry
from gold.distill.unroll import flat_apply_fn
from gold.utility import loss as gloss
from gold.utility.streamed import stream_loss_utility

K, T, HW = 3, 4, 8
CLIP = (T, HW, HW, 3)


def _model(**kw):
    return gmodels.get_model("convnet_gru", K, CLIP, width=4, depth=1, **kw)


def test_param_count_and_forward_match_a_numpy_gru():
    w, h = 4, 5
    model = _model(hidden=h)
    v = gnn.init_variables(model, jax.random.key(0), CLIP)
    f = (HW // 2) ** 2 * w  # one conv block + pool: 4x4x4 features per frame
    conv = 3 * 3 * 3 * w + w + 2 * w  # conv kernel, bias, instance-norm scale/bias
    gru = 3 * (f * h + h) + 3 * h * h + h  # input kernels+biases, recurrent kernels, hn bias
    assert gnn.count_params(v) == conv + gru + (h * K + K)
    x = jax.random.normal(jax.random.key(1), (2, *CLIP))
    outs = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: (m.frame_features(x), m.embed(x), m(x))))
    feats, embedding, logits = (np.asarray(a) for a in outs(v, x))
    assert feats.shape == (2, T, f)
    p = {k: {n: np.asarray(a) for n, a in d.items()} for k, d in v["params"]["gru"]["cell"].items()}
    sig = lambda a: 1 / (1 + np.exp(-a))
    state = np.zeros((2, h))
    for t in range(T):
        xt = feats[:, t]
        r = sig(xt @ p["ir"]["kernel"] + p["ir"]["bias"] + state @ p["hr"]["kernel"])
        z = sig(xt @ p["iz"]["kernel"] + p["iz"]["bias"] + state @ p["hz"]["kernel"])
        n = np.tanh(xt @ p["in"]["kernel"] + p["in"]["bias"] + r * (state @ p["hn"]["kernel"] + p["hn"]["bias"]))
        state = (1 - z) * n + z * state
    np.testing.assert_allclose(embedding, state, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, state @ np.asarray(v["params"]["head"]["kernel"])
                               + np.asarray(v["params"]["head"]["bias"]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(T, H, W, C\) clips"):
        gmodels.get_model("convnet_gru", K, (HW, HW, 3))


def _real_clips(per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K * per_class, *CLIP)).astype(np.float32) + np.repeat(np.arange(K), per_class)[:, None, None, None, None]
    return common.make_real_data(x, np.repeat(np.arange(K), per_class), K, 4)


def test_dm_step_on_clips_lowers_its_loss():
    config = dm_config.get_config("kinetics400")
    config.model.name, config.model.width, config.model.depth = "convnet_gru", 4, 1
    config.dsa_strategy, config.ipc, config.batch_real = "none", 1, 4
    real = _real_clips()
    algo = registry.build(config, real)
    state = algo.init(jax.random.key(0), real)
    assert algo.synthetic(state).x.shape == (K, *CLIP)
    step = jax.jit(algo.step)
    key = jax.random.key(4)  # the same network and real batch before and after the update
    s1, m0 = step(state, key, real)
    _, m1 = step(s1, key, real)
    assert float(m1["loss"]) < float(m0["loss"])


def test_dsa_on_clips_is_an_error_and_video_configs_do_not_ask_for_it():
    real = _real_clips()
    for config in (dm_config.get_config("kinetics400"), mtt_config.get_config("kinetics400")):
        assert config.dsa_strategy == "none" and config.model.name == "convnet_gru"
        config.model.width, config.model.depth, config.dsa_strategy = 4, 1, "crop"
        with pytest.raises(ValueError, match=r"dsa_strategy='crop' augments images \[H, W, C\]"):
            registry.build(config, real)  # before MTT looks for its buffer
    assert config_utils.eval_protocol(dm_config.get_config("kinetics400")).augment == "none"
    with pytest.raises(ValueError, match="dsa_strategy='crop'"):  # MTT's experts
        gbuf.ExpertRun(_model(), real.x, real.y, epochs=1, dsa_strategy="crop")
    protocol = gev.EvalProtocol(model="convnet_gru", augment="dsa", dsa_strategy="crop")
    with pytest.raises(ValueError, match="eval.augment=none"):
        gev.train_networks(protocol, K, jax.random.split(jax.random.key(0), 1), real.x, real.y, jnp.float32(0.01))


def test_synthetic_png_shows_the_frames_of_each_clip(tmp_path):
    x = np.zeros((K, *CLIP), np.float32)
    x[:, :, :, :, 0] = np.arange(T)[None, :, None, None]  # frame t: red = t in normalised units
    syn = artifacts.SyntheticSet(x, np.arange(K), None, "kinetics400", K, (), 1, "dm", (0.0,) * 3, (1.0 / T,) * 3,
                                 True, None, gev.EvalProtocol(), {})
    strip = artifacts.frames_side_by_side(syn.to_pixels())
    assert strip.shape == (K, HW, T * HW, 3)
    np.testing.assert_allclose(strip[:, :, :, 0], np.repeat(np.arange(T) / T, HW)[None, None, :].repeat(HW, 1)
                               .repeat(K, 0))
    artifacts.save_png(str(tmp_path / "s.png"), syn)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_mtt_objective_on_clips_lowers_its_loss():
    real = _real_clips()
    model = _model()
    apply, num_params = flat_apply_fn(model, CLIP)
    theta0 = jax.flatten_util.ravel_pytree(gnn.init_variables(model, jax.random.key(0), CLIP)["params"])[0]
    steps, lr = 2, jnp.float32(0.1)
    idx = mtt.minibatch_indices(jax.random.key(1), real.num_real, 6, steps)
    keys = jax.random.split(jax.random.key(2), steps)
    # The expert: the same unrolled SGD on the real clips (6 per step, 2 steps).
    end = jax.jit(lambda x, y, i: mtt.student_end(apply, x, y, lr, theta0, i, keys, dsa_strategy="none")[0])
    target = end(real.x, real.y, idx)
    x_syn = real.x[:: 4] + 0.5 * jax.random.normal(jax.random.key(3), (K, *CLIP))
    y_syn = jnp.arange(K)
    syn_idx = mtt.minibatch_indices(jax.random.key(4), K, K, steps)
    loss_and_grad = jax.jit(jax.value_and_grad(lambda x: mtt.matching_loss(end(x, y_syn, syn_idx), theta0, target)))
    l0, g = loss_and_grad(x_syn)
    l1, _ = loss_and_grad(x_syn - 0.5 * g / jnp.linalg.norm(g))
    assert num_params == theta0.shape[0] and float(l1) < float(l0)


def test_loss_indicator_on_a_streamed_clip_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(K):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        for j in range(4):
            np.save(tmp_path / "train" / f"c{c}" / f"{j}.npy", rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8))
    src = gs.VideoFolderSource(tmp_path, frames=T, size=HW, cache_dir=tmp_path / "cache")
    kept = np.arange(1, 12, 2)
    s = gloss.TrainSettings(trials=1, epochs=2, lr=1e-2, batch_size=3, trial_mode="unroll")
    u = stream_loss_utility(_model(), src, kept, jax.random.key(0), s, workdir=str(tmp_path / "u"),
                            mean=(0.5,) * 3, std=(0.25,) * 3, dataset="kinetics400", sigma=0.0)
    np.testing.assert_array_equal(u.ids, kept)
    np.testing.assert_array_equal(u.labels, kept // 4)
    assert np.all(np.isfinite(u.scores)) and np.all(u.scores < 0) and len(set(u.scores.tolist())) == 6
    assert src.decoded == 6  # only kept clips were ever decoded, each once (decode cache)
