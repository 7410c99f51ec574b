"""HaBa: hallucinators against NumPy, the storage formula, the decoded layout, the
supervised contrastive loss, a step that lowers its loss, the synthetic.npz round trip
of the factors, bad settings, and a tiny end-to-end run (fake expert buffer on digits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import data as gdata
from gold.configs import haba as haba_config
from gold.distill import artifacts, common, haba, loop, registry
from gold.distill import hallucinator as ghal
from gold.evaluate import EvalProtocol
from test_mtt import K, SHAPE, _real, write_fake_buffer


# ---------------------------------------------------------------- NumPy references
def np_conv_valid(x, w, b):
    """[B,H,W,Ci] * [3,3,Ci,Co] (cross-correlation, no padding) + b."""
    bsz, h, wd, _ = x.shape
    out = np.zeros((bsz, h - 2, wd - 2, w.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("bhwi,io->bhwo", x[:, dy:dy + h - 2, dx:dx + wd - 2], w[dy, dx])
    return out + b


def np_conv_transpose(x, wt, b):
    """torch ConvTranspose2d(k=3, stride 1, padding 0): out[p + d] += x[p] W[d]."""
    bsz, h, wd, _ = x.shape
    out = np.zeros((bsz, h + 2, wd + 2, wt.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out[:, dy:dy + h, dx:dx + wd] += np.einsum("bhwi,io->bhwo", x, wt[dy, dx])
    return out + b


def np_supcon(features, labels, t):
    """Khosla et al. eq. 2 (mode 'all'), written per anchor."""
    b, v, _ = features.shape
    rows = np.concatenate([features[:, j] for j in range(v)])
    lab = np.tile(labels, v)
    losses = []
    for i in range(v * b):
        others = [a for a in range(v * b) if a != i]
        denom = np.log(sum(np.exp(rows[i] @ rows[a] / t) for a in others))
        pos = [a for a in others if lab[a] == lab[i]]
        losses.append(-np.mean([rows[i] @ rows[p] / t - denom for p in pos]))
    return np.mean(losses)


def test_hallucinator_is_conv_affine_transposed_conv():
    shape = (6, 7, 2)
    p = ghal.init_hallucinator(jax.random.key(0), shape)
    rng = np.random.default_rng(0)
    p = {k: jnp.asarray(v + 0.1 * rng.normal(size=v.shape), jnp.float32) for k, v in p.items()}
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    pn = {k: np.asarray(v, np.float64) for k, v in p.items()}
    mid = np_conv_valid(x, pn["enc_w"], pn["enc_b"]) * pn["scale"] + pn["shift"]
    # the ref's ConvTranspose2d kernel is ours flipped in space
    want = np_conv_transpose(mid, pn["dec_w"][::-1, ::-1], pn["dec_b"])
    got = np.asarray(ghal.hallucinate(p, jnp.asarray(x)))
    assert got.shape == (3, *shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # init: torch bounds 1/sqrt(9 C), affine 1 / 0
    p0 = ghal.init_hallucinator(jax.random.key(1), shape)
    assert float(jnp.abs(p0["enc_w"]).max()) <= 1 / np.sqrt(18) and float(jnp.std(p0["enc_w"])) > 0
    assert float(p0["scale"].min()) == 1.0 and float(jnp.abs(p0["shift"]).max()) == 0.0


def test_storage_formula():
    for shape in [(28, 28, 1), (32, 32, 3), (8, 8, 1)]:
        leaves = jax.tree.leaves(ghal.init_hallucinator(jax.random.key(0), shape))
        assert ghal.hallucinator_size(shape) == sum(l.size for l in leaves)
    assert ghal.hallucinator_size((28, 28, 1)) == 2 * (9 + 1) + 2 * 26 * 26 == 1372
    assert ghal.hallucinator_size((32, 32, 3)) == 2 * (81 + 3) + 2 * 30 * 30 * 3 == 5568
    # b = max(1, floor((ipc K D - h S) / (K D)))
    assert ghal.bases_for_budget(10, 10, 5, (28, 28, 1)) == (78400 - 6860) // 7840 == 9
    assert ghal.bases_for_budget(50, 10, 5, (32, 32, 3)) == (50 * 30720 - 27840) // 30720 == 49
    assert ghal.bases_for_budget(1, 10, 5, (28, 28, 1)) == 1  # nothing fits: the ref's 1 base
    assert ghal.bases_for_budget(3, 10, 1, (28, 28, 1)) == 2
    for ipc in (2, 10, 50):  # within budget whenever a base fits
        b = ghal.bases_for_budget(ipc, 10, 5, (32, 32, 3))
        assert ghal.storage(10, b, 5, (32, 32, 3)) <= ipc * 10 * 3072 < ghal.storage(10, b + 1, 5, (32, 32, 3))


def test_decode_layout_and_minibatch():
    par = ghal.Hallucinated(num_classes=3, bases_per_class=2, num_hallucinators=4, image_shape=(6, 6, 1))
    real = common.make_real_data(np.random.default_rng(0).normal(size=(12, 6, 6, 1)),
                                 np.repeat(np.arange(3), 4), 3, 8)
    params = par.init(jax.random.key(0), real, "real")
    assert params["bases"].shape == (6, 6, 6, 1) and params["hallucinators"]["scale"].shape == (4, 4, 4, 1)
    x = np.asarray(par.decode(params))
    assert x.shape == (3 * 2 * 4, 6, 6, 1) and par.per_class == 8
    one = lambda j, base: np.asarray(ghal.hallucinate(
        jax.tree.map(lambda a: a[j], params["hallucinators"]), params["bases"][base][None]))[0]
    for c, i, j in [(0, 0, 0), (1, 1, 2), (2, 0, 3)]:
        np.testing.assert_allclose(x[(c * 2 + i) * 4 + j], one(j, c * 2 + i), rtol=1e-5, atol=1e-6)
    spec = common.SyntheticSpec(par, 3)
    np.testing.assert_array_equal(np.asarray(spec.hard_labels()), np.repeat(np.arange(3), 8))
    xb, yb = par.minibatch(params, jnp.array([5, 0, 3]), jnp.array([1, 3, 0]))
    np.testing.assert_allclose(np.asarray(xb), x[[5 * 4 + 1, 0 * 4 + 3, 3 * 4 + 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(yb), [2, 0, 1])
    # every base row comes from a distinct real image of its class
    xs = np.asarray(real.x)
    for r, base in enumerate(np.asarray(params["bases"])):
        match = [n for n in range(12) if np.allclose(xs[n], base)]
        assert len(match) == 1 and match[0] // 4 == r // 2


def test_supervised_contrastive_and_cosine_match_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(6, 2, 5))
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    labels = np.array([0, 1, 0, 2, 1, 1])
    got = float(haba.supervised_contrastive(jnp.asarray(f, jnp.float32), jnp.asarray(labels), 0.5, 0.5))
    assert got == pytest.approx(np_supcon(f, labels, 0.5), rel=1e-5)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    want = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(np.asarray(haba.cosine_similarity(jnp.asarray(a), jnp.asarray(b))), want,
                               rtol=1e-5)


# ------------------------------------------------------------------- the algorithm
def _config(buffer_dir, **overrides):
    config = haba_config.get_config("digits")
    config.model.width = 4
    config.buffer_dir = str(buffer_dir)
    config.syn_steps, config.max_start_epoch, config.expert_epochs = 2, 2, 1
    config.extractor_width = 4
    config.dsa_strategy = "flip_crop"
    for k, v in overrides.items():
        config[k] = v
    return config


def test_step_lowers_its_loss_and_the_factors_round_trip(tmp_path):
    real = _real()
    config = _config(tmp_path, ipc=2, lr_img=10.0, lr_hallucinator=1.0)
    write_fake_buffer(tmp_path, real, config, epochs=3, dataset="digits")
    algo = registry.build(config, real)
    assert algo.settings["bases_per_class"] == 1 and algo.settings["images_per_class"] == 5
    state0 = algo.init(jax.random.key(0), real)
    assert set(state0.params) == {"images", "lr"} and "extractor" in state0.extra
    # storage_per_class (result.json) counts bases, hallucinators and the lr, not the extractor
    d = int(np.prod(SHAPE))
    assert common.storage_floats(state0.params) == K * d + 5 * ghal.hallucinator_size(SHAPE) + 1
    assert algo.settings["storage_per_class"] <= algo.settings["pixel_storage_per_class"]
    step = jax.jit(algo.step)
    key = jax.random.key(3)
    state1, m0 = step(state0, key, real)
    # the same draws (expert, start, minibatches, hallucinators) on the updated set, the
    # extractor held at its old value: the synthetic loss went down
    _, m1 = step(state1.replace(extra={**state1.extra, "extractor": state0.extra["extractor"]}), key, real)
    assert float(m1["loss"]) < float(m0["loss"])
    assert float(m0["adversarial_loss"]) > 0 and np.isfinite(float(m0["extractor_loss"]))
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state0.params, state1.params)
    assert moved["images"]["bases"] > 0 and all(v > 0 for v in moved["images"]["hallucinators"].values())
    assert float(jnp.abs(state1.extra["extractor"]["head"]["kernel"]
                         - state0.extra["extractor"]["head"]["kernel"]).max()) > 0

    syn = algo.synthetic(state1)
    assert syn.x.shape == (K * 5, *SHAPE)
    path = str(tmp_path / "synthetic.npz")
    ds = gdata.load_dataset("digits")
    artifacts.save_synthetic(path, x=np.asarray(syn.x), y=np.asarray(syn.y), lr=float(syn.lr), dataset=ds,
                             ipc=2, algorithm="haba", protocol=EvalProtocol(epochs=1, num_models=1),
                             factors=syn.factors)
    back = artifacts.load_synthetic(path)
    assert set(back.factors) == {"bases", *(f"hallucinators.{k}" for k in ghal.init_hallucinator(
        jax.random.key(0), SHAPE))}
    np.testing.assert_array_equal(back.factors["bases"], np.asarray(state1.params["images"]["bases"]))
    np.testing.assert_allclose(ghal.decode_factors(back.factors, back.num_classes), back.x,
                               rtol=1e-6, atol=1e-6)
    # a pixel set (and any older file) loads without factors
    artifacts.save_synthetic(path, x=np.asarray(syn.x), y=np.asarray(syn.y), lr=None, dataset=ds,
                             ipc=2, algorithm="mtt", protocol=EvalProtocol(epochs=1, num_models=1))
    assert artifacts.load_synthetic(path).factors == {}
    with pytest.raises(ValueError, match="not hallucinator factors"):
        ghal.decode_factors({"bases": back.factors["bases"]}, K)


@pytest.mark.parametrize("overrides, match", [
    ({"learn_labels": True, "lr_labels": 1.0}, "learns no labels"),
    ({"num_hallucinators": 1}, "two hallucinators"),
    ({"lambda_adversarial": 0.0}, "only through lambda_adversarial"),
    ({"batch_syn": 11}, "exceeds the 10 bases"),
])
def test_bad_settings(tmp_path, overrides, match):
    real = _real()
    config = _config(tmp_path, **overrides)
    write_fake_buffer(tmp_path, real, config, epochs=3, dataset="digits")
    with pytest.raises(ValueError, match=match):
        registry.build(config, real)


def test_mtt_loss_alone_is_a_setting(tmp_path):
    real = _real()
    config = _config(tmp_path, lambda_adversarial=0.0, lambda_cls=0.0, lambda_likelihood=0.0,
                     lambda_contrast=0.0, num_hallucinators=1)
    write_fake_buffer(tmp_path, real, config, epochs=3, dataset="digits")
    algo = registry.build(config, real)
    assert "extractor" not in algo.init(jax.random.key(0), real).extra


def test_end_to_end_on_digits(tmp_path):
    """launch/distill.py's loop: HaBa on the embedded digits with a buffer of them."""
    ds = gdata.load_dataset("digits")
    real = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 16)
    config = _config(tmp_path / "buffer", ipc=2, dsa_strategy="none", remat=False)
    config.data.test_per_class = 5
    config.iterations, config.log_every, config.checkpoint_every = 2, 1, 0
    config.eval.num_models, config.eval.epochs, config.eval.augment = 1, 1, "none"
    write_fake_buffer(tmp_path / "buffer", real, config, epochs=3, dataset="digits")
    res = loop.run(config, str(tmp_path / "run"))
    assert res["algorithm"] == "haba" and res["iterations"] == 2 and np.isfinite(res["final_loss"])
    assert res["storage_per_class"] == pytest.approx((K * 64 + 5 * 92 + 1) / K)
    syn = artifacts.load_synthetic(str(tmp_path / "run" / "synthetic.npz"))
    assert syn.x.shape == (K * 5, *SHAPE) and syn.algorithm == "haba" and syn.lr == res["learned_lr"]
    np.testing.assert_allclose(ghal.decode_factors(syn.factors, K), syn.x, rtol=1e-6, atol=1e-6)
