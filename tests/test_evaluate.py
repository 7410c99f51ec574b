"""gold.evaluate: the reference evaluation schedule (Epoch + 1 epochs, lr drop + momentum
reset after epoch index Epoch // 2 + 1), checked against a hand-rolled PyTorch-style loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gold import nn as gnn
from gold.evaluate import EvalProtocol, train_networks, training_phases


def test_default_phases_are_the_reference_schedule():
    p = EvalProtocol(epochs=300, lr=0.01)
    phases = training_phases(p, jnp.float32(0.01), steps_per_epoch=1)
    assert p.train_epochs() == 301 and [ph.epochs for ph in phases] == [152, 149]
    # First update from fresh state: -lr_i * (g + wd * w), momentum buffer starts at g.
    w, g = {"w": jnp.array([2.0])}, {"w": jnp.array([0.5])}
    for ph, lr in zip(phases, (0.01, 0.001)):
        upd, _ = ph.tx.update(g, ph.tx.init(w), w)
        np.testing.assert_allclose(float(upd["w"][0]), -lr * (0.5 + 5e-4 * 2.0), rtol=1e-6)
    one = training_phases(dataclasses.replace(p, momentum_reset=False), jnp.float32(0.01), 1)
    assert [ph.epochs for ph in one] == [301]
    assert EvalProtocol.from_dict(p.to_dict()) == dataclasses.replace(p, lr_decay_epochs=(152,),
                                                                      momentum_reset=True)


def _reference_loop(params, apply, x, y, epochs, lr):
    """The reference's ``evaluate_synset`` with one full batch per epoch: torch SGD
    (``g += wd * p; buf = m * buf + g; p -= lr * buf``), ``for ep in range(Epoch + 1)``,
    and after ``ep == Epoch // 2 + 1``: ``lr *= 0.1`` and a new optimiser (buf = 0)."""

    def loss(p):
        return jnp.mean(gnn.per_sample_cross_entropy(apply(p, x), y))

    buf = jax.tree.map(jnp.zeros_like, params)
    for ep in range(epochs + 1):
        g = jax.tree.map(lambda gi, pi: gi + 5e-4 * pi, jax.grad(loss)(params), params)
        buf = jax.tree.map(lambda b, gi: 0.9 * b + gi, buf, g)
        params = jax.tree.map(lambda pi, b: pi - lr * b, params, buf)
        if ep == epochs // 2 + 1:
            lr *= 0.1
            buf = jax.tree.map(jnp.zeros_like, buf)
    return params


def test_train_networks_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 4, 4, 1)), jnp.float32)
    y = jnp.asarray(np.arange(12) % 3, jnp.int32)
    protocol = EvalProtocol(model="mlp", num_models=2, epochs=6, lr=0.05)
    keys = jax.random.split(jax.random.key(0), 2)
    model, trained = train_networks(protocol, 3, keys, x, y, jnp.float32(0.05))
    for k in range(2):
        v0 = gnn.init_variables(model, jax.random.fold_in(keys[k], 0), x.shape[1:])
        # One batch of all 12 samples per epoch: the shuffle does not change the mean loss.
        expected = _reference_loop(v0["params"], lambda p, xb: model.apply({**v0, "params": p}, xb),
                                   x, y, protocol.epochs, 0.05)
        got = gnn.unstack_variables(trained, k)["params"]
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_networks_in_sequence_train_the_same_networks_as_vmapped(monkeypatch):
    """On CPU the K networks run one after another (lax.map); the keys, augmentation
    draws and schedule are those of the vmapped program, so the networks agree."""
    from gold import evaluate as gev

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(6, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(np.arange(6) % 3, jnp.int32)
    protocol = EvalProtocol(num_models=3, epochs=4, batch_size=4, augment="dsa",
                            model_overrides=(("width", 8), ("depth", 1)))
    keys = jax.random.split(jax.random.key(3), 3)
    trained = {}
    for sequential in (True, False):
        monkeypatch.setattr(gev, "networks_in_sequence", lambda s=sequential: s)
        trained[sequential] = train_networks(protocol, 3, keys, x, y, jnp.float32(0.01))[1]
    for a, b in zip(jax.tree.leaves(trained[True]), jax.tree.leaves(trained[False])):
        assert a.shape[0] == 3
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_negative_soft_labels_are_refused():
    """Centred learned labels have no soft-label cross-entropy minimum: a clear error."""
    import jax
    import numpy as np
    import pytest

    from gold.evaluate import EvalProtocol, evaluate_synthetic

    x = np.zeros((4, 8, 8, 1), np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]] - 0.5
    with pytest.raises(ValueError, match="negative entries.*loss='mse'"):
        evaluate_synthetic(jax.random.key(0), x, y, x, np.zeros(4, np.int32), 2, EvalProtocol(epochs=1))
