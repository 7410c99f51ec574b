"""gold.distill.class_split: class groups, refusals, DM's per-class sum (group steps
merged = joint steps), and an end-to-end class-split run with per-group resume."""

import json
import os

import jax
import numpy as np
import pytest

from gold import data as gdata
from gold import rng
from gold.configs import dc as dc_config
from gold.configs import dm as dm_config
from gold.distill import artifacts, class_split, common, registry


def test_class_groups_are_contiguous_and_cover_the_classes():
    groups = class_split.class_groups(10, 3)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [g.tolist() for g in class_split.class_groups(4, 4)] == [[0], [1], [2], [3]]
    for bad in (0, 11):
        with pytest.raises(ValueError, match=f"class_groups={bad} must be between 1 and the 10"):
            class_split.class_groups(10, bad)


def test_algorithms_that_couple_classes_are_refused():
    cfg = dc_config.get_config("digits")
    with pytest.raises(ValueError, match="dc couples the classes"):
        class_split.check_splittable(cfg, (8, 8, 1), 10)
    cfg = dm_config.get_config("digits")
    class_split.check_splittable(cfg, (8, 8, 1), 10)  # instance norm: allowed
    cfg.model.norm = "batchnorm"
    with pytest.raises(ValueError, match="BatchNorm"):
        class_split.check_splittable(cfg, (8, 8, 1), 10)


def test_group_dataset_relabels_and_merge_restores_global_labels():
    ds = gdata.load_dataset("digits", train_per_class=3, test_per_class=2, strict_counts=False)
    kept = np.flatnonzero(np.arange(len(ds.y_train)) % 3 != 0)  # 2 of every 3
    classes = np.array([4, 5, 6])
    sub = class_split.group_dataset(ds, kept, classes)
    assert sub.num_classes == 3 and sub.class_names == tuple(ds.class_names[c] for c in classes)
    np.testing.assert_array_equal(np.bincount(sub.y_train), np.bincount(ds.y_train[kept])[classes])
    np.testing.assert_array_equal(sub.ids, ds.ids[kept][np.isin(ds.y_train[kept], classes)])
    in_group = np.isin(ds.y_test, classes)
    np.testing.assert_array_equal(classes[sub.y_test], ds.y_test[in_group])
    assert len(sub.y_test) == 6
    np.testing.assert_array_equal(sub.x_train[sub.y_train == 1], ds.x_train[kept][ds.y_train[kept] == 5])

    def part(y):
        return artifacts.SyntheticSet(np.zeros((len(y), 2, 2, 1), np.float32), np.asarray(y), None,
                                      "digits", 0, (), 1, "dm", (0.0,), (1.0,), True, None, None, {})

    x, y = class_split.merge([part([0, 1]), part([0, 1, 2])], [np.array([0, 1]), np.array([2, 3, 4])], 5)
    assert x.shape == (5, 2, 2, 1) and y.tolist() == [0, 1, 2, 3, 4]
    _, soft = class_split.merge([part(np.eye(2)), part(np.eye(3))], [np.array([0, 1]), np.array([2, 3, 4])], 5)
    np.testing.assert_array_equal(soft, np.eye(5))


def _dm_config():
    cfg = dm_config.get_config("digits")
    cfg.model.name, cfg.model.width, cfg.dsa_strategy, cfg.ipc = "mlp", 16, "none", 2
    cfg.batch_real = 256  # the halving rule gives full-class batches on 6 images a class
    return cfg


def test_dm_group_steps_merged_equal_the_joint_steps():
    """The DM loss is a sum over classes: groups that see the same random networks (same
    step keys) and start from the same images take the joint run's steps."""
    ds = gdata.load_dataset("digits", train_per_class=6, test_per_class=1, strict_counts=False)
    cfg = _dm_config()
    joint_real = common.make_real_data(ds.x_train, ds.y_train, 10, cfg.batch_real)
    joint = registry.build(cfg, joint_real)
    state = joint.init(jax.random.key(0), joint_real)
    x0 = np.asarray(joint.synthetic(state).x)
    keys = [rng.step_key(jax.random.key(1), i) for i in range(3)]
    for k in keys:
        state, _ = jax.jit(joint.step)(state, k, joint_real)
    merged = []
    all_kept = np.arange(len(ds.y_train))
    for classes in class_split.class_groups(10, 3):
        sub = class_split.group_dataset(ds, all_kept, classes)
        real = common.make_real_data(sub.x_train, sub.y_train, len(classes), cfg.batch_real)
        algo = registry.build(cfg, real)
        st = algo.init(jax.random.key(0), real)
        rows = x0.reshape(10, 2, *x0.shape[1:])[classes].reshape(-1, *x0.shape[1:])
        st = st.replace(params={"images": {"x": jax.numpy.asarray(rows)}})
        for k in keys:
            st, _ = jax.jit(algo.step)(st, k, real)
        merged.append(np.asarray(algo.synthetic(st).x))
    x_joint = np.asarray(joint.synthetic(state).x)
    assert np.abs(x_joint - x0).max() > 1e-2  # the steps moved the images
    np.testing.assert_allclose(np.concatenate(merged), x_joint, atol=1e-5)


def test_class_split_run_merges_groups_and_resumes(tmp_path):
    cfg = _dm_config()
    cfg.update_from_flattened_dict({
        "data.train_per_class": 6, "data.test_per_class": 3, "iterations": 2, "log_every": 1,
        "checkpoint_every": 1, "class_groups": 2, "eval.num_models": 1, "eval.epochs": 1,
        "eval.model": "mlp", "eval.augment": "none"})
    res = class_split.run(cfg, str(tmp_path))
    assert [g["classes"] for g in res["class_groups"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    syn = artifacts.load_synthetic(os.path.join(tmp_path, "synthetic.npz"))
    assert syn.x.shape == (20, 8, 8, 1) and syn.num_classes == 10
    np.testing.assert_array_equal(syn.y, np.repeat(np.arange(10), 2))
    for g in range(2):
        part = artifacts.load_synthetic(os.path.join(tmp_path, f"group_{g}", "synthetic.npz"))
        np.testing.assert_array_equal(part.x, syn.x[10 * g:10 * (g + 1)])
        group_cfg = json.load(open(os.path.join(tmp_path, f"group_{g}", "config.json")))
        assert group_cfg["class_group"]["index"] == g and group_cfg["class_groups"] == 0
    assert json.load(open(tmp_path / "result.json"))["num_real"] == 60
    # a longer run resumes every group from its own checkpoint
    cfg.iterations = 3
    os.remove(tmp_path / "group_1" / "result.json")
    res3 = class_split.run(cfg, str(tmp_path))
    assert res3["iterations"] == 3
    rows = open(tmp_path / "group_1" / "metrics.csv").read().splitlines()
    assert [r.split(",")[0] for r in rows[1:] if r.split(",")[1]] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="class-split run"):
        from gold.distill import loop
        loop.run(cfg, str(tmp_path / "plain"))
