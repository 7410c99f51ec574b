"""gold.evaluate harness options: optimizer, loss, schedule, CutMix, presets, the config
block, protocol round-trip through synthetic.npz (old format included), ZCA."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gold import augment as gaug
from gold import config_utils, data as gdata, nn as gnn
from gold.distill import artifacts
from gold.evaluate import (PRESETS, EvalProtocol, evaluate_synthetic, preset_fields, train_networks,
                           training_phases, training_targets)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import common  # noqa: E402


def _lrs(protocol, steps_per_epoch, base=0.1):
    """Per-step learning rates the optimiser applies, from its updates of a unit
    gradient on a zero-momentum, zero-decay probe (one entry per step, phases chained)."""
    probe = dataclasses.replace(protocol, momentum=0.0, weight_decay=0.0)
    out = []
    for phase in training_phases(probe, jnp.float32(base), steps_per_epoch):
        params = {"w": jnp.zeros(())}
        state = phase.tx.init(params)
        for _ in range(phase.epochs * steps_per_epoch):
            upd, state = phase.tx.update({"w": jnp.ones(())}, state, params)
            out.append(-float(upd["w"]))
    return np.asarray(out)


# ------------------------------------------------------------------------- schedules
def test_reference_schedule_lrs():
    # epochs 4: 5 epochs, drop after epoch index 4 // 2 + 1 = 3, i.e. from epoch 4 on.
    got = _lrs(EvalProtocol(epochs=4), steps_per_epoch=2)
    np.testing.assert_allclose(got, [0.1] * 8 + [0.01] * 2, rtol=1e-6)
    assert len(training_phases(EvalProtocol(epochs=4), jnp.float32(0.1), 2)) == 2  # fresh optimiser


def test_multistep_schedule_lrs():
    # IDC: x0.2 after floor(2/3 * 6) = 4 and floor(5/6 * 6) = 5 epochs; 6 epochs, one optimiser.
    p = EvalProtocol(epochs=6, schedule="multistep", lr_decay=0.2, lr_decay_fractions=(2 / 3, 5 / 6))
    assert p.train_epochs() == 6 and p.decay_epochs() == (4, 5) and not p.resets_momentum()
    assert len(training_phases(p, jnp.float32(0.1), 1)) == 1
    np.testing.assert_allclose(_lrs(p, 1), [0.1] * 4 + [0.02, 0.004], rtol=1e-6)
    # PyTorch MultiStepLR: a repeated milestone multiplies twice (floor(0.5 * 3) = floor(0.6 * 3) = 1)
    p2 = EvalProtocol(epochs=3, schedule="multistep", lr_decay=0.5, lr_decay_fractions=(0.5, 0.6))
    np.testing.assert_allclose(_lrs(p2, 2), [0.1] * 2 + [0.025] * 4, rtol=1e-6)
    # 1000 epochs: IDC's [2 * 1000 // 3, 5 * 1000 // 6]
    assert dataclasses.replace(p, epochs=1000).decay_epochs() == (666, 833)


def test_cosine_schedule_lrs():
    # 3 epochs x 2 steps, warm-up 1 epoch = 2 steps: 0, 0.05, then cosine over 4 steps to 10%.
    p = EvalProtocol(epochs=3, schedule="cosine", warmup_epochs=1, final_lr_fraction=0.1)
    cos = [0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 4))) for t in range(4)]
    np.testing.assert_allclose(_lrs(p, 2), [0.0, 0.05, *cos], rtol=1e-5, atol=1e-8)
    # the same as FRePo's optax.join_schedules(linear warm-up, cosine_decay_schedule(alpha))
    ref = optax.join_schedules([optax.linear_schedule(0.0, 1.0, 2),
                                optax.cosine_decay_schedule(1.0, 4, alpha=0.1)], [2])
    np.testing.assert_allclose([gnn.warmup_cosine(6, 2, 0.1)(s) for s in range(8)],
                               [ref(s) for s in range(8)], rtol=1e-6, atol=1e-7)


def test_constant_schedule_lrs():
    p = EvalProtocol(epochs=3, schedule="constant", momentum_reset=False)
    np.testing.assert_allclose(_lrs(p, 2), [0.1] * 6, rtol=1e-6)


def test_adam_optimizer_is_adam():
    p = EvalProtocol(epochs=1, optimizer="adam", schedule="constant", weight_decay=0.0)
    (phase,) = training_phases(p, jnp.float32(0.01), 1)
    params = {"w": jnp.array([1.0, -2.0])}
    upd, _ = phase.tx.update({"w": jnp.array([0.3, -5.0])}, phase.tx.init(params), params)
    # Adam's first step is -lr * sign(g) (bias-corrected m / sqrt(v)), eps aside
    np.testing.assert_allclose(upd["w"], [-0.01, 0.01], rtol=1e-5)


# ----------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="lamb"), "unknown optimizer 'lamb'"),
    (dict(loss="hinge"), "unknown loss 'hinge'"),
    (dict(schedule="step"), "unknown schedule 'step'"),
    (dict(augment="mixup"), "unknown augment 'mixup'"),
    (dict(schedule="multistep"), "needs lr_decay_fractions"),
    (dict(schedule="multistep", lr_decay_fractions=(0.5, 1.0)), r"in \(0, 1\)"),
    (dict(schedule="multistep", lr_decay_fractions=(0.8, 0.5)), "ascending"),
    (dict(lr_decay_fractions=(0.5,)), "read by schedule='multistep' only"),
    (dict(schedule="cosine", lr_decay_epochs=(3,)), "read by schedule='reference' only"),
    (dict(schedule="cosine", momentum_reset=True), "momentum_reset=True needs lr drops"),
    (dict(warmup_epochs=2), "read by schedule='cosine' only"),
    (dict(schedule="cosine", epochs=3, warmup_epochs=4), "exceeds epochs"),
    (dict(final_lr_fraction=0.1), "read by schedule='cosine' only"),
    (dict(cutmix=1.5), "probability"),
    (dict(cutmix_beta=0.0), "cutmix_beta"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(num_models=0), "num_models"),
])
def test_bad_protocols_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalProtocol(**kwargs)


# -------------------------------------------------------------------------- targets
def test_training_targets():
    y = jnp.array([0, 2], jnp.int32)
    mse = EvalProtocol(loss="mse")
    np.testing.assert_allclose(training_targets(mse, y, 3), [[2 / 3, -1 / 3, -1 / 3], [-1 / 3, -1 / 3, 2 / 3]],
                               rtol=1e-6)
    soft = jnp.array([[0.5, -0.2, 0.1]])
    assert training_targets(mse, soft, 3) is soft  # float labels are used as given
    assert training_targets(EvalProtocol(), y, 3) is y  # cross-entropy on int labels
    np.testing.assert_array_equal(training_targets(EvalProtocol(cutmix=0.5), y, 3), np.eye(3)[[0, 2]])
    out, tgt = jnp.array([[1.0, 0.0], [0.0, 3.0]]), jnp.array([[0.5, -0.5], [0.0, 1.0]])
    np.testing.assert_allclose(gnn.per_sample_squared_error(out, tgt), [0.5 * (0.25 + 0.25), 0.5 * 4.0])


# --------------------------------------------------------------------------- CutMix
def _numpy_paste(x, y, y1, y2, x1, x2, perm):
    """The reference's in-place paste (``input[:, :, bbx1:bbx2, bby1:bby2] =
    input[rand_index, ...]``) and its ``ratio``-weighted labels, in NumPy (NHWC)."""
    xm = x.copy()
    xm[:, y1:y2, x1:x2, :] = x[perm, y1:y2, x1:x2, :]
    a = (y2 - y1) * (x2 - x1) / (x.shape[1] * x.shape[2])
    return xm, (1 - a) * y + a * y[perm]


def test_cutmix_paste_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 6, 2)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]] - 0.25  # centred targets mix the same way
    perm = np.array([3, 0, 4, 1, 2], np.int32)
    for (y1, y2, x1, x2) in [(1, 5, 2, 6), (0, 7, 0, 6), (3, 3, 1, 4)]:
        box = gaug.CutMixBox(jnp.bool_(True), *(jnp.int32(v) for v in (y1, y2, x1, x2)), jnp.asarray(perm))
        xm, ym = jax.jit(gaug.paste_box)(x, y, box)
        ex, ey = _numpy_paste(x, y, y1, y2, x1, x2, perm)
        np.testing.assert_array_equal(np.asarray(xm), ex)
        np.testing.assert_allclose(np.asarray(ym), ey, rtol=1e-6, atol=1e-7)
    off = gaug.CutMixBox(jnp.bool_(False), *(jnp.int32(v) for v in (1, 5, 2, 6)), jnp.asarray(perm))
    xm, ym = gaug.paste_box(x, y, off)
    np.testing.assert_array_equal(np.asarray(xm), x)
    np.testing.assert_array_equal(np.asarray(ym), y)


def _numpy_rand_bbox_areas(n, h, w, rng):
    """Pasted area fractions of the reference's ``rand_bbox`` (NumPy), ``lam ~ Beta(1, 1)``."""
    lam = rng.uniform(size=n)
    cut = np.sqrt(1.0 - lam)
    ch, cw = (h * cut).astype(int), (w * cut).astype(int)
    cy, cx = rng.integers(h, size=n), rng.integers(w, size=n)
    y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return (y2 - y1) * (x2 - x1) / (h * w)


def test_cutmix_box_follows_the_reference_sampler():
    """Boxes inside the image, perm a permutation, applied with probability ``prob``, and
    the pasted-area distribution of the reference's NumPy ``rand_bbox`` (mean and
    quartiles over 1000 vmapped draws vs 200,000 NumPy draws)."""
    keys = jax.random.split(jax.random.key(0), 1000)
    boxes = jax.vmap(lambda k: gaug.sample_cutmix_box(k, 6, 16, 12, 1.0, 0.3))(keys)
    assert 0.25 < float(jnp.mean(boxes.apply)) < 0.35
    y1, y2, x1, x2 = (np.asarray(v) for v in (boxes.y1, boxes.y2, boxes.x1, boxes.x2))
    assert np.all((0 <= y1) & (y1 <= y2) & (y2 <= 16) & (0 <= x1) & (x1 <= x2) & (x2 <= 12))
    assert np.all(np.sort(np.asarray(boxes.perm), 1) == np.arange(6))
    area = (y2 - y1) * (x2 - x1) / (16 * 12)
    ref = _numpy_rand_bbox_areas(200_000, 16, 12, np.random.default_rng(0))
    assert abs(area.mean() - ref.mean()) < 0.025, (area.mean(), ref.mean())
    np.testing.assert_allclose(np.quantile(area, [0.25, 0.5, 0.75]), np.quantile(ref, [0.25, 0.5, 0.75]),
                               atol=0.05)


# ------------------------------------------------------------------- training runs
def _digits_subset(per_class, seed=0):
    ds = gdata.load_dataset("digits")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.y_train == c), per_class, replace=False)
                          for c in range(10)])
    return ds, ds.x_train[idx], ds.y_train[idx]


# A FRePo-style evaluation (adam, warm-up + cosine, mse), tiny; shared by the tests that
# train on 100 digits with centred float labels, so they reuse one compiled program.
_ADAM_MSE = EvalProtocol(model="mlp", num_models=2, epochs=30, batch_size=50, lr=3e-3, optimizer="adam",
                         loss="mse", schedule="cosine", warmup_epochs=3, final_lr_fraction=0.01,
                         momentum_reset=False, weight_decay=0.0)


def test_adam_cosine_mse_on_centred_labels_learns_digits():
    """Adam + cosine + loss='mse' on learned-style centred float labels (negative
    entries) trains K networks in one program to far above chance (10 %); loss='ce'
    refuses such labels and names the fix."""
    ds, x, y = _digits_subset(10)
    centred = np.eye(10, dtype=np.float32)[y] - 0.1
    res = evaluate_synthetic(jax.random.key(0), x, centred, ds.x_test, ds.y_test, 10, _ADAM_MSE)
    assert res.accuracies.shape == (2,) and res.mean > 50.0, res.accuracies
    with pytest.raises(ValueError, match="loss='mse'"):
        evaluate_synthetic(jax.random.key(0), x, centred, ds.x_test, ds.y_test, 10,
                           dataclasses.replace(_ADAM_MSE, loss="ce"))


def test_mix_is_applied_to_every_training_batch():
    """gold.nn's ``mix`` hook runs inside the jitted epoch on every minibatch: a mix that
    blanks the images leaves the first layer's kernel untouched (zero input, zero
    gradient, no weight decay) while its bias still trains; labels come mixed too."""
    from gold import models as gmodels
    ds, x, y = _digits_subset(2)
    model = gmodels.get_model("mlp", 10, x.shape[1:])
    v0 = gnn.init_variables(model, jax.random.key(0), x.shape[1:])
    tx = gnn.sgd(0.1, 0.9, 0.0)
    seen = []

    def blank(key, xb, yb):
        seen.append(yb.shape)
        return jnp.zeros_like(xb), jnp.roll(yb, 1, axis=0)

    state = gnn.TrainState(v0, tx.init(v0["params"]))
    epoch = jax.jit(lambda st, k: gnn.train_epoch(model, tx, st, x, jax.nn.one_hot(y, 10), k,
                                                  batch_size=8, mix=blank)[0])
    new = epoch(state, jax.random.key(1))
    first = sorted(v0["params"])[0]
    np.testing.assert_array_equal(new.variables["params"][first]["kernel"], v0["params"][first]["kernel"])
    assert float(jnp.abs(new.variables["params"][first]["bias"] - v0["params"][first]["bias"]).max()) > 0
    assert (8, 10) in seen and (4, 10) in seen  # 20 samples: two batches of 8 (scan), a tail of 4


def test_idc_style_evaluation_runs():
    """Multistep x0.2 + DSA + CutMix (the idc preset's training, tiny) learns."""
    ds, x, y = _digits_subset(10)
    idc = EvalProtocol(model="mlp", num_models=2, epochs=12, batch_size=50, lr=0.05, schedule="multistep",
                       lr_decay=0.2, lr_decay_fractions=(2 / 3, 5 / 6), augment="dsa",
                       dsa_strategy="color_crop", cutmix=0.5)
    res = evaluate_synthetic(jax.random.key(2), x, y, ds.x_test, ds.y_test, 10, idc)
    assert res.mean > 30.0, res.accuracies


# ------------------------------------------------------------------ presets, config
def _config(eval_block, dataset="digits"):
    return ml_collections.ConfigDict({"model": common.model("mlp"), "data": common.data(dataset),
                                      "eval": eval_block})


@pytest.mark.parametrize("name, ipc", [("dc", 0), ("frepo", 1), ("idc", 0), ("linba", 0), ("cafe", 0),
                                       ("cafe_dsa", 0)])
def test_config_block_gives_the_preset_protocol(name, ipc):
    """configs/common.evaluation shows every protocol field; eval_protocol reads them all
    back into the preset's protocol."""
    block = common.evaluation("digits", preset=name, ipc=ipc)
    protocol_fields = {f.name for f in dataclasses.fields(EvalProtocol)} - {"model", "model_overrides"}
    assert set(block.keys()) == protocol_fields | {"model", "max_test"}
    got = config_utils.eval_protocol(_config(block))
    assert got == EvalProtocol.preset(name, "digits", ipc, model="mlp")
    assert PRESETS[name].source  # every preset cites where it comes from


def test_preset_facts():
    idc = EvalProtocol.preset("idc", "cifar10")
    assert (idc.epochs, idc.batch_size, idc.lr_decay, idc.decay_epochs(), idc.cutmix) == (1000, 64, 0.2,
                                                                                         (666, 833), 0.5)
    assert idc.dsa_strategy == "color_crop_flip_scale_rotate"  # IDC drops cutout under CutMix
    assert EvalProtocol.preset("idc", "mnist").dsa_strategy == "color_crop_scale_rotate"
    linba = EvalProtocol.preset("linba")
    assert (linba.epochs, linba.batch_size, linba.schedule, linba.weight_decay) == (300, 640, "constant", 0.0)
    # FRePo: steps by number of images, batch min(n, 500): 1000 images = 2 steps per epoch
    frepo = EvalProtocol.preset("frepo", "cifar100", 10)
    assert (frepo.epochs, frepo.warmup_epochs, frepo.optimizer, frepo.loss) == (5000, 250, "adam", "mse")
    assert EvalProtocol.preset("frepo", "cifar10", 1).epochs == 1000
    assert EvalProtocol.preset("dc") == EvalProtocol(momentum_reset=True)
    assert EvalProtocol.preset("cafe").epochs == 600 and EvalProtocol.preset("cafe_dsa").epochs == 1000
    # overrides on top; the legacy positional call of configs keeps working
    assert EvalProtocol.preset("idc", "cifar10", num_models=2).num_models == 2
    block = common.evaluation("mnist", "dc_mnist", 1000)
    assert (block.augment, block.epochs, block.schedule) == ("dc_mnist", 1000, "reference")


@pytest.mark.parametrize("call, match", [
    (lambda: EvalProtocol.preset("mtt"), "unknown evaluation preset 'mtt'"),
    (lambda: EvalProtocol.preset("frepo", "cifar10", 3), "frepo evaluation preset needs"),
    (lambda: common.evaluation("digits", preset="idc", lr_schedule="cosine"), "unknown evaluation fields"),
])
def test_bad_presets_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_config_eval_keys_error():
    block = common.evaluation("digits")
    block.warmup = 5  # a typo of warmup_epochs must not be ignored
    with pytest.raises(ValueError, match=r"unknown config.eval keys \['warmup'\]"):
        config_utils.eval_protocol(_config(block))
    block = common.evaluation("digits")
    block.schedule = "cosine"  # the dc block resets momentum at drops: a cosine has none
    with pytest.raises(ValueError, match="momentum_reset=True needs lr drops"):
        config_utils.eval_protocol(_config(block))
    block.momentum_reset, block.warmup_epochs = False, 3
    assert config_utils.eval_protocol(_config(block)).warmup_epochs == 3


# ------------------------------------------------------------- synthetic.npz round trip
def _old_format_protocol():
    """A protocol dict as format-version-1 synthetic.npz files stored it (before the
    optimizer / loss / schedule / CutMix fields)."""
    return {"augment": "dsa", "batch_size": 256, "dsa_strategy": "color_crop_cutout_scale_rotate",
            "epochs": 1000, "lr": 0.01, "lr_decay": 0.1, "lr_decay_epochs": [502], "model": "convnet",
            "model_overrides": {"depth": 1, "width": 32}, "momentum": 0.9, "momentum_reset": True,
            "num_models": 5, "test_batch_size": 1000, "weight_decay": 0.0005}


def test_protocol_round_trips_through_synthetic_npz_including_old_files(tmp_path):
    ds = gdata.load_dataset("digits")
    x, y = ds.x_train[:10], ds.y_train[:10]
    path = str(tmp_path / "synthetic.npz")
    p = EvalProtocol.preset("idc", "digits", model="mlp", num_models=2)
    artifacts.save_synthetic(path, x=x, y=y, lr=None, dataset=ds, ipc=1, algorithm="idc", protocol=p)
    assert artifacts.load_synthetic(path).protocol == p
    for q in (EvalProtocol.preset("frepo", "digits", 1), EvalProtocol(), EvalProtocol(lr_decay_epochs=(3, 7))):
        back = EvalProtocol.from_dict(json.loads(json.dumps(q.to_dict())))
        assert back.to_dict() == q.to_dict() and back.train_epochs() == q.train_epochs()
    # a version-1 file: its protocol lacks the new fields and loads as the reference protocol
    with np.load(path) as f:
        fields = dict(f)
    fields.update(format_version=np.int64(1), protocol=np.asarray(json.dumps(_old_format_protocol())))
    old = str(tmp_path / "old.npz")
    np.savez(old, **fields)
    got = artifacts.load_synthetic(old).protocol
    assert got == EvalProtocol(augment="dsa", epochs=1000, lr_decay_epochs=(502,), momentum_reset=True,
                               dsa_strategy="color_crop_cutout_scale_rotate", test_batch_size=1000,
                               model_overrides=(("depth", 1), ("width", 32)))
    assert (got.optimizer, got.loss, got.schedule, got.cutmix, got.train_epochs()) == ("sgd", "ce", "reference",
                                                                                        0.0, 1001)
    fields.update(protocol=np.asarray(json.dumps({**_old_format_protocol(), "sheduler": "cosine"})))
    np.savez(old, **fields)
    with pytest.raises(ValueError, match=r"unknown evaluation protocol fields \['sheduler'\]"):
        artifacts.load_synthetic(old)


def test_zca_set_saved_and_loaded_evaluates_as_in_memory(tmp_path):
    """A ZCA-whitened set evaluates to the same accuracies from synthetic.npz (test split
    rebuilt from pixels with the stored ZCA) as from memory (the dataset's own ZCA test
    split), under a non-default stored protocol (adam, mse, cosine; centred labels)."""
    ds = gdata.load_dataset("digits", zca=True)
    assert ds.zca is not None
    x = np.concatenate([ds.x_train[ds.y_train == c][:10] for c in range(10)])
    y = np.eye(10, dtype=np.float32)[np.repeat(np.arange(10), 10)] - 0.1
    in_memory = evaluate_synthetic(jax.random.key(3), x, y, ds.x_test, ds.y_test, 10, _ADAM_MSE)
    path = str(tmp_path / "synthetic.npz")
    artifacts.save_synthetic(path, x=x, y=y, lr=None, dataset=ds, ipc=10, algorithm="real", protocol=_ADAM_MSE)
    back = artifacts.load_synthetic(path)
    assert back.protocol == _ADAM_MSE and back.zca is not None
    x_test, y_test = back.test_data()
    np.testing.assert_allclose(x_test, ds.x_test, atol=1e-5)
    np.testing.assert_array_equal(y_test, ds.y_test)
    loaded = back.evaluate(jax.random.key(3))
    np.testing.assert_array_equal(loaded.accuracies, in_memory.accuracies)
    assert in_memory.mean > 30.0, in_memory.accuracies
