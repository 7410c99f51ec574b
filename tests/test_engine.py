"""gold.distill.engine, settings and rng: chunked steps, the pure distill, named streams."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gold import data as gdata
from gold import rng
from gold.configs import dm as dm_config
from gold.distill import common, engine, registry
from gold.distill import settings as gset


@dataclasses.dataclass(frozen=True)
class _Inner:
    on: bool = gset.setting(False, "a switch")
    rate: float = gset.setting(0.5, "a rate")

    def validate(self):
        if not 0 <= self.rate <= 1:
            raise ValueError("rate out of range")


@dataclasses.dataclass(frozen=True)
class _Outer(common.BaseSettings):
    steps: int = gset.setting(3, "steps")
    rows: tuple = gset.setting(((1, 2),), "rows")
    inner: _Inner = gset.group(_Inner, "inner block")


def test_settings_are_declared_once_and_read_by_name():
    cfg = gset.to_config(_Outer)
    assert cfg.steps == 3 and cfg.inner.rate == 0.5 and cfg.ipc == 1
    cfg.steps, cfg.inner.on, cfg.rows = 7, True, [[3, 4]]
    s = gset.from_config(_Outer, cfg)
    assert (s.steps, s.inner.on, s.rows) == (7, True, ((3, 4),))
    assert gset.from_config(_Outer, ml_collections.ConfigDict({"ipc": 2})).steps == 3  # default
    docs = gset.docs(_Outer)
    assert docs["inner.rate"] == "a rate" and docs["ipc"] == "synthetic images per class"
    with pytest.raises(ValueError, match="steps must be int"):
        gset.from_config(_Outer, {"steps": "many"})
    with pytest.raises(ValueError, match="steps must be an integer"):
        gset.from_config(_Outer, {"steps": 2.5})
    with pytest.raises(ValueError, match="rate out of range"):  # nested validate
        gset.from_config(_Outer, {"inner": {"rate": 2.0}})
    with pytest.raises(ValueError, match="ipc must be >= 1"):
        gset.from_config(_Outer, {"ipc": 0})
    with pytest.raises(ValueError, match="unknown init 'zeros'"):
        gset.from_config(_Outer, {"init": "zeros"})


def test_every_algorithm_config_field_is_a_declared_setting_or_a_loop_field():
    """No setting lives only in a config file: each algorithm field of dm's config is a
    field of DMSettings (and the loop's own fields are the rest)."""
    cfg = dm_config.get_config("mnist")
    declared = set(gset.docs(registry.get("dm").settings))
    loop_fields = {"algorithm", "data", "model", "seed", "batch_real", "selection", "eval_every",
                   "checkpoint_every", "log_every", "max_abs_ratio", "eval", "mesh", "class_groups"}
    assert set(cfg.keys()) == declared | loop_fields


def test_chunks_end_at_every_log_eval_and_checkpoint_iteration():
    from gold.distill.loop import chunk_end

    ends, done = [], 0
    while done < 23:
        done = chunk_end(done, 23, 10, 0, 4)
        ends.append(done)
    assert ends == [4, 8, 10, 12, 16, 20, 23]
    assert chunk_end(0, 5, 0, 0, 0) == 5


def test_rng_streams_are_named_and_fixed():
    root = rng.root(3)
    np.testing.assert_array_equal(jax.random.key_data(rng.stream(root, "steps")),
                                  jax.random.key_data(jax.random.fold_in(root, 3)))
    assert len({rng.STREAMS[n] for n in rng.STREAMS}) == len(rng.STREAMS)
    with pytest.raises(KeyError, match="unknown random stream"):
        rng.stream(root, "nope")


@pytest.fixture(scope="module")
def dm_digits():
    cfg = dm_config.get_config("digits")
    cfg.model.width = 8
    cfg.batch_real = 16
    cfg.dsa_strategy = "none"
    ds = gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)
    real = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, 16)
    return registry.build(cfg, real), real


def test_advance_in_chunks_equals_one_chunk_and_single_steps(dm_digits):
    algo, real = dm_digits
    root = rng.root(0)
    steps = rng.stream(root, "steps")
    state0 = algo.init(rng.stream(root, "init"), real)
    adv = jax.jit(lambda st, stop: engine.advance(algo, st, steps, real, stop))
    one, p_one = adv(state0, 4)
    two, p_a = adv(state0, 2)
    two, p_b = adv(two, 4)
    assert int(one.iteration) == int(two.iteration) == 4 and int(p_one.steps) == 4
    np.testing.assert_allclose(algo.synthetic(one).x, algo.synthetic(two).x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_one.metrics["loss"], (p_a.metrics["loss"] + p_b.metrics["loss"]) / 2,
                               rtol=1e-4)
    # the same as plain steps with rng.step_key
    st, losses = state0, []
    for i in range(4):
        st, m = jax.jit(algo.step)(st, rng.step_key(steps, i), real)
        st = st.replace(iteration=st.iteration + 1)
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(algo.synthetic(st).x, algo.synthetic(one).x, rtol=1e-5, atol=1e-6)
    assert float(p_one.metrics["loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
    assert bool(p_one.healthy)
    # nothing to do: no step runs
    same, p0 = adv(one, 4)
    assert int(p0.steps) == 0 and int(same.iteration) == 4


def test_advance_stops_at_the_first_unhealthy_step(dm_digits):
    algo, real = dm_digits
    root = rng.root(0)
    state0 = algo.init(rng.stream(root, "init"), real)
    st, p = jax.jit(lambda s: engine.advance(algo, s, rng.stream(root, "steps"), real, 5, max_abs=1e-3))(state0)
    assert not bool(p.healthy) and int(p.steps) == 1 and int(st.iteration) == 1
    assert float(p.max_abs) > 1e-3


def test_distill_is_pure_and_vmaps_over_keys(dm_digits):
    algo, real = dm_digits
    run = jax.jit(lambda k: engine.distill(algo, k, real, 3))
    syn, p = run(rng.root(0))
    assert syn.x.shape == (10, 8, 8, 1) and bool(p.healthy) and int(p.steps) == 3
    many, pm = jax.jit(jax.vmap(lambda k: engine.distill(algo, k, real, 3)))(
        jnp.stack([rng.root(0), rng.root(1)]))
    np.testing.assert_allclose(many.x[0], syn.x, rtol=1e-4, atol=1e-5)
    assert not np.allclose(many.x[0], many.x[1])
