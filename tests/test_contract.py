"""The algorithm contract, checked for every registered algorithm on the embedded digits.

A new algorithm (one module in gold/distill/ plus configs/<name>.py) gets these checks
by registering: its config builds, ``init`` is traceable, one jitted step gives a
finite loss and moves the synthetic set, ``synthetic`` has the right shapes, and the
artifact saves, loads and evaluates anywhere. Algorithms that read an expert buffer
get a real tiny one (2 experts x 2 epochs, trained here).
"""

import importlib

import jax
import numpy as np
import pytest

from gold import config_utils
from gold import data as gdata
from gold import rng
from gold.distill import artifacts, buffer, common, registry

ALGORITHMS = registry.names()


def test_the_core_algorithms_are_registered():
    assert {"dc", "dsa", "dm", "mtt"} <= set(ALGORITHMS)


def tiny_config(name):
    """configs/<name>.py on digits, shrunk to seconds (same code path)."""
    module = importlib.import_module(f"gold.configs.{name}")
    cfg = module.get_config("digits")
    assert cfg.algorithm == name
    cfg.model.width = 8
    cfg.batch_real = 16
    cfg.eval.num_models, cfg.eval.epochs, cfg.eval.augment = 1, 2, "none"
    if cfg.eval.get("warmup_epochs"):  # cosine evaluations (the frepo preset): warm-up within the epochs
        cfg.eval.warmup_epochs = 1
    return cfg


@pytest.fixture(scope="module")
def digits():
    return gdata.load_dataset("digits", train_per_class=30, test_per_class=5, strict_counts=False)


@pytest.fixture(scope="module")
def expert_buffer(tmp_path_factory, digits):
    """A real expert buffer of the digits subset the contract test distils."""
    from gold.configs import buffer as buffer_config

    cfg = buffer_config.get_config("digits")
    cfg.model.width = 8
    cfg.data.train_per_class, cfg.data.test_per_class = 30, 5
    cfg.num_experts, cfg.epochs, cfg.experts_per_chunk = 2, 2, 2
    cfg.batch_size = 64
    d = str(tmp_path_factory.mktemp("buffer"))
    buffer.run(cfg, d)
    return d


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithm_contract(name, digits, tmp_path, request):
    cfg = tiny_config(name)
    spec = registry.get(name)
    if spec.needs_buffer:
        cfg.buffer_dir = request.getfixturevalue("expert_buffer")
        cfg.data.train_per_class, cfg.data.test_per_class = 30, 5
        cfg.max_start_epoch, cfg.expert_epochs, cfg.syn_steps = 1, 1, 2
    real = common.make_real_data(digits.x_train, digits.y_train, digits.num_classes, cfg.batch_real)
    algo = registry.build(cfg, real)
    assert algo.name == name and isinstance(algo.settings, dict)

    # init is traceable (vmap over keys) and gives the declared synthetic set
    states = jax.vmap(algo.init, in_axes=(0, None))(jax.random.split(rng.root(0), 2), real)
    state = jax.tree.map(lambda leaf: leaf[0], states)
    syn0 = algo.synthetic(state)
    m = digits.num_classes * algo.settings.get("images_per_class", cfg.ipc)  # factorised: decoded
    assert syn0.x.shape == (m, *digits.x_train.shape[1:])
    assert syn0.y.shape[0] == m and int(state.iteration) == 0

    # one jitted step: finite scalar float metrics, the synthetic set moves
    new, metrics = jax.jit(algo.step)(state, rng.root(1), real)
    assert np.isfinite(float(metrics["loss"]))
    assert all(np.shape(v) == () for v in metrics.values())
    syn1 = algo.synthetic(new)
    assert syn1.x.shape == syn0.x.shape and np.abs(np.asarray(syn1.x) - np.asarray(syn0.x)).max() > 0

    # the artifact round-trips and evaluates anywhere
    path = str(tmp_path / "synthetic.npz")
    protocol = config_utils.eval_protocol(cfg)
    lr = None if syn1.lr is None else float(syn1.lr)
    artifacts.save_synthetic(path, x=np.asarray(syn1.x), y=np.asarray(syn1.y), lr=lr, dataset=digits,
                             ipc=cfg.ipc, algorithm=name, protocol=protocol, meta={"settings": algo.settings})
    back = artifacts.load_synthetic(path)
    np.testing.assert_array_equal(back.x, np.asarray(syn1.x))
    np.testing.assert_array_equal(back.y, np.asarray(syn1.y))
    assert back.algorithm == name and back.protocol.to_dict() == protocol.to_dict()
    res = back.evaluate(rng.stream(rng.root(0), "eval"))
    assert 0.0 <= res.mean <= 100.0 and len(res.accuracies) == 1
