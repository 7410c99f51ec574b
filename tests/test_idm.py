"""IDM: the step lowers its own loss, the loss decomposes as documented, the queue
follows its push schedule inside jitted steps, bad settings fail, and a run resumed
from its checkpoint (queue included) equals a straight run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gold import data as gdata
from gold import rng
from gold.checkpoint import Checkpointer
from gold.configs import idm as idm_config
from gold.distill import common, registry
from gold.distill import settings as gset
from gold.distill.idm import IDMSettings


def tiny(**over):
    """configs/idm.py on digits at width 4, depth 1 (seconds)."""
    cfg = idm_config.get_config("digits")
    cfg.model.width, cfg.model.depth, cfg.model.conv_impl = 4, 1, "xla"
    cfg.batch_real, cfg.batch_train, cfg.net_train_steps = 8, 16, 2
    cfg.pool_size, cfg.initial_nets = 3, 1
    for k, v in over.items():
        cfg[k] = v
    return cfg


@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits", train_per_class=20, test_per_class=5, strict_counts=False)


@pytest.fixture(scope="module")
def idm(digits):
    """(algo, real, jitted step) of one tiny IDM: queue of at most 3 networks, 1 at the
    start, a push every 2 iterations, meters reset every 4, no DSA."""
    cfg = tiny(net_generate_interval=2, acc_reset_every=4, dsa_strategy="none")
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, cfg.batch_real)
    algo = registry.build(cfg, real)
    return algo, real, jax.jit(algo.step)


def run(step, state, real, start, stop):
    """Steps ``start .. stop-1`` with keys ``rng.root(i)``, counting iterations."""
    metrics = []
    for i in range(start, stop):
        state, m = step(state, rng.root(100 + i), real)
        state = state.replace(iteration=state.iteration + 1)
        metrics.append(m)
    return state, metrics


def test_step_lowers_its_loss_and_the_loss_decomposes(idm):
    algo, real, step = idm
    # 3 iterations train the queue so that the CE weight (accuracy in percent) is > 0
    state, _ = run(step, algo.init(rng.root(0), real), real, 0, 3)
    key = rng.root(1)
    new, m0 = step(state, key, real)
    assert float(m0["net_acc"]) > 0 and float(m0["pool_size"]) == 3.0
    # loss = distance + ce_weight * accuracy * CE (one matching network)
    np.testing.assert_allclose(float(m0["loss"]),
                               float(m0["distance"]) + 0.5 * float(m0["net_acc"]) * float(m0["ce_syn"]),
                               rtol=1e-4)
    # the same draws (queue, real batches) on the updated images give a lower loss
    again = new.replace(opt_state=state.opt_state, extra=state.extra)
    _, m1 = step(again, key, real)
    assert float(m1["loss"]) < float(m0["loss"])
    # only the stored images are learned: 1 per class, decoded into 4 quadrants
    assert new.params["images"]["x"].shape == (10, 8, 8, 1)
    assert algo.synthetic(new).x.shape == (40, 8, 8, 1)


def test_the_queue_follows_its_push_schedule_inside_jitted_steps(idm):
    algo, real, step = idm
    state, metrics = run(step, algo.init(rng.root(0), real), real, 0, 4)
    # accuracy meters: 2 networks x 2 steps x 16 images per iteration
    assert float(state.extra["pool"].seen.sum()) == 4 * 64
    state, more = run(step, state, real, 4, 6)
    assert float(state.extra["pool"].seen.sum()) == 2 * 64  # reset at iteration 4
    assert [float(m["pool_size"]) for m in metrics + more] == [2, 2, 3, 3, 3, 3]  # pushes at 0, 2, 4
    pool = state.extra["pool"]
    assert int(pool.pushes) == 4  # 1 initial + 3 pushes; the 4th replaced the oldest (slot 0)
    assert int(pool.age.sum()) <= 6 * 2 * 2


def test_a_run_resumed_from_a_checkpoint_equals_a_straight_run(idm, tmp_path):
    """The loop's checkpoint (orbax, ``{'state': DistillState}``) restores the queue:
    3 steps, save, restore into a fresh state, 2 more steps == 5 straight steps."""
    algo, real, step = idm
    start = algo.init(rng.root(0), real)
    mid, _ = run(step, start, real, 0, 3)
    ckpt = Checkpointer(str(tmp_path / "ck"))
    ckpt.save(3, {"state": mid})
    back = ckpt.restore(3, {"state": algo.init(rng.root(1), real)})["state"]
    ckpt.close()
    resumed, _ = run(step, jax.tree.map(jnp.asarray, back), real, 3, 5)
    straight, _ = run(step, start, real, 0, 5)
    assert int(resumed.extra["pool"].pushes) == 1 + 3  # initial + pushes at 0, 2, 4
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("over, match", [
    (dict(match_nets=3, initial_nets=1), "must not exceed"),
    (dict(train_nets=0), "ce_weight > 0"),
    (dict(initial_nets=5, pool_size=3), "initial_nets must be in"),
    (dict(net_generate_interval=0), "must be > 0"),
])
def test_bad_settings_fail(over, match):
    with pytest.raises(ValueError, match=match):
        gset.from_config(IDMSettings, tiny(**over))
