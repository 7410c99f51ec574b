"""gold.nn: per-sample losses, fit, K networks at once."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gold import nn as gnn


class TinyMLP(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(h)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = jnp.asarray(d.images[:600, :, :, None] / 16.0, jnp.float32)
    y = jnp.asarray(d.target[:600], jnp.int32)
    return x, y


def test_per_sample_cross_entropy_equals_python_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=7)
    got = np.asarray(gnn.per_sample_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    for i in range(7):
        z = logits[i] - logits[i].max()
        expected = -(z[labels[i]] - np.log(np.exp(z).sum()))
        np.testing.assert_allclose(got[i], expected, rtol=1e-5)
    # Soft labels equal to one-hot give the same values.
    soft = gnn.per_sample_cross_entropy(jnp.asarray(logits), jax.nn.one_hot(labels, 5))
    np.testing.assert_allclose(np.asarray(soft), got, rtol=1e-5)


def test_el2n_matches_numpy():
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    p = np.exp(logits) / np.exp(logits).sum()
    expected = np.linalg.norm(p - np.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(gnn.per_sample_el2n(jnp.asarray(logits), jnp.array([1])), [expected], rtol=1e-5)


def test_sgd_matches_pytorch_semantics():
    """g += wd * p; buf = m * buf + g; p -= lr * buf (two steps by hand)."""
    tx = gnn.sgd(0.1, momentum=0.9, weight_decay=0.5)
    p = {"w": jnp.array([1.0])}
    state = tx.init(p)
    g = {"w": jnp.array([2.0])}
    p_val, buf = 1.0, 0.0
    for _ in range(2):
        upd, state = tx.update(g, state, p)
        p = optax.apply_updates(p, upd)
        buf = 0.9 * buf + (2.0 + 0.5 * p_val)
        p_val -= 0.1 * buf
        np.testing.assert_allclose(float(p["w"][0]), p_val, rtol=1e-6)


def test_epoch_split_covers_every_sample_once_with_a_smaller_last_batch():
    full, tail = gnn.epoch_split(jax.random.key(0), 10, 4)
    assert full.shape == (2, 4) and tail.shape == (2,)
    assert sorted(np.concatenate([np.ravel(full), tail]).tolist()) == list(range(10))
    full, tail = gnn.epoch_split(jax.random.key(0), 8, 256)  # b = min(batch, n)
    assert full.shape == (1, 8) and tail.shape == (0,)


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(6)(x.reshape(x.shape[0], -1))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        return nn.Dense(3)(nn.relu(h))


def test_last_partial_batch_has_only_its_own_samples_in_batchnorm():
    """10 samples, batch 4: steps on 4, 4 and 2 samples (PyTorch's DataLoader), not on a
    last batch padded with 2 repeats that would enter the BatchNorm statistics."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(10, 5)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, size=10), jnp.int32)
    model, tx = TinyBN(), gnn.sgd(0.1)
    v = gnn.init_variables(model, jax.random.key(0), (5,))
    key = jax.random.key(7)
    state, mean_loss, rec = gnn.train_epoch(model, tx, gnn.TrainState(v, tx.init(v["params"])), x, y, key,
                                            batch_size=4, record=True)
    manual = gnn.TrainState(v, tx.init(v["params"]))
    full, tail = gnn.epoch_split(jax.random.split(key)[0], 10, 4)
    losses = np.zeros(10)
    for idx in [*np.asarray(full), np.asarray(tail)]:
        manual, l, _ = gnn.train_step(model, tx, manual, x[idx], y[idx])
        losses[idx] = np.asarray(l)
    for a, b in zip(jax.tree.leaves(state.variables), jax.tree.leaves(manual.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.loss, losses, rtol=1e-5)
    np.testing.assert_allclose(float(mean_loss), losses.mean(), rtol=1e-5)


def test_fit_phases_restart_the_optimiser_state():
    """Two phases = two fits, the second from the first's variables with fresh momentum."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)), jnp.float32)
    y = jnp.arange(8, dtype=jnp.int32) % 3
    model = TinyMLP(num_classes=3)
    v = gnn.init_variables(model, jax.random.key(0), (4,))
    a, b = gnn.sgd(0.1), gnn.sgd(0.01)
    key = jax.random.key(2)
    both = gnn.fit_phases(model, [gnn.Phase(a, 3), gnn.Phase(b, 2)], v, x, y, key, batch_size=8)
    ks = jax.random.split(key, 5)
    first = gnn.fit_phases(model, [gnn.Phase(a, 3)], v, x, y, key, batch_size=8)
    st = gnn.TrainState(first.variables, b.init(first.variables["params"]))  # zero momentum
    for e in (3, 4):  # the second phase by hand: epochs 3 and 4 of the same key sequence
        st, _, _ = gnn.train_epoch(model, b, st, x, y, ks[e], batch_size=8)
    for p, q in zip(jax.tree.leaves(both.variables), jax.tree.leaves(st.variables)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)
    assert both.epoch_loss.shape == (5,)


def test_fit_learns_and_records_every_sample(digits):
    x, y = digits
    model = TinyMLP()
    variables = gnn.init_variables(model, jax.random.key(0), x.shape[1:])
    res = jax.jit(
        lambda v: gnn.fit(model, gnn.sgd(0.1), v, x, y, jax.random.key(1), epochs=8, batch_size=64, record=True)
    )(variables)
    assert res.record.loss.shape == (8, 600)
    assert float(res.epoch_loss[-1]) < 0.5 * float(res.epoch_loss[0])
    # The recorded per-sample losses of an epoch average to that epoch's mean loss.
    np.testing.assert_allclose(res.record.loss.mean(axis=1), res.epoch_loss, rtol=1e-5)
    assert set(np.unique(res.record.correct)) <= {0.0, 1.0}


def test_recorded_loss_is_the_pre_update_loss(digits):
    """With one full batch per epoch, epoch e's record is the loss before step e."""
    x, y = digits
    x, y = x[:64], y[:64]
    model = TinyMLP()
    v0 = gnn.init_variables(model, jax.random.key(0), x.shape[1:])
    res = gnn.fit(model, gnn.sgd(0.1), v0, x, y, jax.random.key(1), epochs=2, batch_size=64, record=True)
    manual = gnn.per_sample_cross_entropy(model.apply(v0, x), y)
    np.testing.assert_allclose(res.record.loss[0], manual, rtol=1e-4, atol=1e-6)


def test_fit_many_equals_sequential_fits(digits):
    x, y = digits
    model, tx = TinyMLP(), gnn.sgd(0.05)
    keys = jax.random.split(jax.random.key(3), 3)
    many = gnn.fit_many(model, tx, keys, x, y, epochs=2, batch_size=100, record=True)
    for k in range(3):
        v = gnn.init_variables(model, jax.random.fold_in(keys[k], 0), x.shape[1:])
        one = gnn.fit(model, tx, v, x, y, jax.random.fold_in(keys[k], 1), epochs=2, batch_size=100, record=True)
        for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(gnn.unstack_variables(many.variables, k))):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(one.record.loss, many.record.loss[k], rtol=2e-4, atol=2e-5)


def test_accuracy_many_matches_per_model_argmax(digits):
    x, y = digits
    model = TinyMLP()
    keys = jax.random.split(jax.random.key(0), 2)
    vs = gnn.stack_variables([gnn.init_variables(model, k, x.shape[1:]) for k in keys])
    acc = gnn.accuracy_many(model, vs, x, y, batch_size=256)  # 600 = 2 full + 1 padded batch
    for k in range(2):
        expected = np.mean(np.argmax(model.apply(gnn.unstack_variables(vs, k), x), -1) == np.asarray(y))
        np.testing.assert_allclose(acc[k], expected, rtol=1e-6)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        gnn.make_optimizer("lion", 0.1)
