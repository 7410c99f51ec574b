"""gold.distill.netpool: size bound, FIFO replacement, reset schedule, sampling only
valid slots, training against a hand-rolled loop, and a checkpoint round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import models as gmodels
from gold import nn as gnn
from gold.checkpoint import Checkpointer
from gold.distill import common
from gold.distill.netpool import NetPool, NetPoolSpec

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def spec():
    model = gmodels.get_model("mlp", 3, SHAPE, hidden=8)
    return NetPoolSpec(model, gnn.sgd(0.05, 0.9, 5e-4), SHAPE, 3)


_JITTED = {}


def jitted(spec, name, **static):
    """``jax.jit`` of ``spec.<name>`` (one compile per spec, name and static argument)."""
    key = (id(spec), name, tuple(sorted(static.items())))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda *a: getattr(spec, name)(*a, **static))
    return _JITTED[key]


def init(spec, key, filled):
    return jitted(spec, "init")(key, jnp.int32(filled))


def fresh_slot(spec, key, slot):
    """The variables that ``reset_older_than`` with ``key`` puts in ``slot``."""
    return jax.tree.map(lambda l: l[slot], jitted(spec, "fresh")(jax.random.split(key, spec.size))[0])


def pushed(spec, key):
    """The variables that ``push`` with ``key`` inserts."""
    return jax.tree.map(lambda l: l[0], jitted(spec, "fresh")(key[None])[0])


def first_leaf(tree):
    return np.asarray(jax.tree.leaves(tree)[0])


def fixed_batch(key):
    """A constant batch (the key is ignored): 6 images, labels 0,1,2,0,1,2."""
    x = jnp.linspace(-1.0, 1.0, 6 * 64).reshape(6, *SHAPE)
    return x, jnp.arange(6, dtype=jnp.int32) % 3


def train_fn(spec, steps):
    """Jitted ``spec.train`` on :func:`fixed_batch` (one compile per spec and steps)."""
    return jitted(spec, "train", batch_fn=fixed_batch, steps=steps)


def test_size_bound_and_fifo_replacement_order(spec):
    pool = init(spec, jax.random.key(0), 0)
    assert pool.size == 3 and int(pool.num_valid()) == 0 and int(pool.pushes) == 0
    push = jitted(spec, "push")
    keys = jax.random.split(jax.random.key(1), 5)
    for n, k in enumerate(keys):
        pool = push(pool, k)
        assert int(pool.num_valid()) == min(n + 1, 3)  # bounded by M
    assert int(pool.pushes) == 5
    # insertion n sits in slot n mod 3: slots hold insertions 3, 4, 2 (0 and 1, the oldest, left)
    for slot, n in enumerate([3, 4, 2]):
        np.testing.assert_array_equal(first_leaf(pool.slot(slot)), first_leaf(pushed(spec, keys[n])))


def test_init_filled_and_bad_sizes(spec):
    pool = init(spec, jax.random.key(0), 2)
    np.testing.assert_array_equal(np.asarray(pool.valid), [True, True, False])
    assert int(pool.pushes) == 2
    pool = jitted(spec, "push")(pool, jax.random.key(3))  # fills the empty slot 2
    np.testing.assert_array_equal(np.asarray(pool.valid), [True, True, True])
    with pytest.raises(ValueError, match="filled must be in"):
        spec.init(jax.random.key(0), filled=4)
    with pytest.raises(ValueError, match="size >= 1"):
        NetPoolSpec(spec.model, spec.tx, SHAPE, 0)


def test_train_matches_a_hand_rolled_loop_and_touches_only_its_slots(spec):
    pool = init(spec, jax.random.key(0), 2)
    slots = jnp.array([1, 2], jnp.int32)  # slot 2 is invalid: left alone
    new = train_fn(spec, 3)(pool, slots, jax.random.key(5))
    # slot 1 equals 3 manual train_steps on the same batch
    st = gnn.TrainState(pool.slot(1), jax.tree.map(lambda l: l[1], pool.opt_state))
    x, y = fixed_batch(None)
    correct = 0
    step = jax.jit(lambda st: gnn.train_step(spec.model, spec.tx, st, x, y))
    for _ in range(3):
        st, _, logits = step(st)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
    for a, b in zip(jax.tree.leaves(new.slot(1)), jax.tree.leaves(st.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for s in (0, 2):  # untrained and invalid slots unchanged
        for a, b in zip(jax.tree.leaves(new.slot(s)), jax.tree.leaves(pool.slot(s))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(new.age), [0, 3, 0])
    np.testing.assert_array_equal(np.asarray(new.seen), [0, 18, 0])
    assert float(new.correct[1]) == correct
    np.testing.assert_allclose(np.asarray(new.accuracy()), [0, 100 * correct / 18, 0], rtol=1e-6)
    assert float(new.reset_meters().seen.sum()) == 0.0


def test_reset_schedule_reinitialises_only_old_slots(spec):
    pool = init(spec, jax.random.key(0), 3)
    train1 = train_fn(spec, 1)
    for _ in range(3):
        pool = train1(pool, jnp.array([0], jnp.int32), jax.random.key(1))
    pool = train1(pool, jnp.array([1], jnp.int32), jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(pool.age), [3, 1, 0])
    k = jax.random.key(9)
    reset = jitted(spec, "reset_older_than")(pool, k, 2)
    np.testing.assert_array_equal(np.asarray(reset.age), [0, 1, 0])
    np.testing.assert_array_equal(np.asarray(reset.seen), [0, 6, 0])
    np.testing.assert_array_equal(first_leaf(reset.slot(0)), first_leaf(fresh_slot(spec, k, 0)))
    for s in (1, 2):
        np.testing.assert_array_equal(first_leaf(reset.slot(s)), first_leaf(pool.slot(s)))
    assert int(reset.pushes) == int(pool.pushes)
    # after 2 more updates slot 1 reaches the age and is reset next
    pool = train1(reset, jnp.array([1], jnp.int32), jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(jitted(spec, "reset_older_than")(pool, k, 2).age), [0, 0, 0])


def test_sample_draws_uniformly_among_valid_slots_only():
    model = gmodels.get_model("mlp", 3, SHAPE, hidden=4)
    spec = NetPoolSpec(model, gnn.sgd(0.1, 0.0, 0.0), SHAPE, 6)
    pool = init(spec, jax.random.key(0), 0)
    pool = pool.replace(valid=jnp.array([False, True, False, True, True, False]))
    draws = np.asarray(jax.jit(jax.vmap(lambda k: spec.sample(pool, k, 2)))(jax.random.split(jax.random.key(1), 3000)))
    assert draws.shape == (3000, 2)
    assert set(np.unique(draws)) == {1, 3, 4}
    assert np.all(draws[:, 0] != draws[:, 1])
    freq = np.bincount(draws.reshape(-1), minlength=6)[[1, 3, 4]] / draws.size
    np.testing.assert_allclose(freq, 1 / 3, atol=0.03)


def test_checkpoint_round_trip_restores_the_pool(spec, tmp_path):
    pool = init(spec, jax.random.key(0), 1)
    pool = jitted(spec, "push")(pool, jax.random.key(1))
    pool = train_fn(spec, 1)(pool, jnp.array([0, 1], jnp.int32), jax.random.key(2))
    tx = common.sgd(0.1, 0.5)
    state = common.DistillState.start({"images": {"x": jnp.ones((3, *SHAPE))}}, tx, extra={"pool": pool})
    ckpt = Checkpointer(str(tmp_path / "ck"))
    ckpt.save(7, {"state": state})
    like = {"state": common.DistillState.start({"images": {"x": jnp.zeros((3, *SHAPE))}}, tx,
                                               extra={"pool": init(spec, jax.random.key(5), 0)})}
    back = ckpt.restore(7, like)["state"]
    ckpt.close()
    assert isinstance(back.extra["pool"], NetPool)
    flat_a, tree_a = jax.tree.flatten(state)
    flat_b, tree_b = jax.tree.flatten(back)
    assert tree_a == tree_b
    for a, b in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
