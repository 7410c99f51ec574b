"""Class-split distillation: disjoint class groups distilled one after another, merged.

The paper's recipe for ImageNet-1K and Kinetics with DM (Table 11): the DM loss is a sum
of independent per-class terms on a shared random network, so the classes can be cut
into ``G = config.class_groups`` groups that are distilled separately (each holds only
its classes' real data and synthetic images in memory) and whose synthetic sets are
concatenated. ``run(config, workdir)``:

1. selects the real samples once on the whole dataset (``selection.*``, exactly as the
   joint run; ``selection.npz`` at the top);
2. cuts the K classes into G contiguous groups (:func:`class_groups`, sizes differing by
   at most one, as the streamed recipe ``gold.distill.streamed.distill_groups`` for data
   that does not fit in memory) and runs the ordinary loop (``gold.distill.loop.run``) on each group's
   kept samples, relabelled ``0..K_g-1``, in ``workdir/group_<g>/``: its own config,
   checkpoints (resume per group), metrics and synthetic set; a finished group is not
   rerun;
3. merges the groups' sets in class order (labels back to the global ids), evaluates
   the merged set on the whole test set with the run's protocol and writes
   ``synthetic.npz``, ``synthetic.png`` and ``result.json`` (with each group's classes,
   accuracy on its own classes and seconds) at the top.

Every group run uses the run's seed, so group ``g`` at iteration ``i`` draws the same
random network as the joint run at iteration ``i`` (the network's feature layers do not
depend on the number of classes of its head). The per-class keys (real batch order,
DSA draws) and the real-init draw fold in the group's own class indices, so a group run
is the joint run's method on its classes but not its random stream: from the same
initial images, with full-class real batches and no augmentation, the merged DM steps
equal the joint steps (tested).

Allowed algorithms: :data:`SPLITTABLE` (DM without BatchNorm). Splitting changes the
method of every algorithm that couples classes: DC / DSA and IDC train one network on
the whole synthetic set between image updates, IDM trains its network pool on all
classes, MTT / KIP / RFAD / FRePo / HaBa / LinBa match or regress on the whole set, and
DM with BatchNorm takes batch statistics over all classes; these are a ``ValueError``.
Parallel class-wise work across devices is the ``class`` mesh axis of one joint run
(``config.mesh.class``), not this module.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from gold import config_utils
from gold import data as gdata
from gold import parallel
from gold import rng
from gold import selection as gsel
from gold import workdir as gwork
from gold.distill import artifacts
from gold.distill import common
from gold.distill import loop
from gold.distill import streamed
from gold.evaluate import evaluate_synthetic, evaluation_mesh

SPLITTABLE: tuple[str, ...] = ("dm",)
GROUP_DIR = "group_{}"


def class_groups(num_classes: int, groups: int) -> list[np.ndarray]:
    """The classes ``0..K-1`` in ``groups`` contiguous groups (sizes differ by at most
    one): the streamed recipe's grouping (``gold.distill.streamed.class_groups``).

    Raises:
      ValueError: ``groups`` outside ``[1, K]``.
    """
    if not 1 <= int(groups) <= int(num_classes):
        raise ValueError(f"class_groups={groups} must be between 1 and the {num_classes} classes "
                         f"(0 = one joint run)")
    return [np.asarray(g, np.int64) for g in streamed.class_groups(int(num_classes), int(groups))]


def check_splittable(config: Any, image_shape: tuple[int, ...], num_classes: int) -> None:
    """ValueError when splitting the classes would change ``config.algorithm``'s method."""
    name = str(config.algorithm)
    if name not in SPLITTABLE:
        raise ValueError(f"class_groups: {name} couples the classes (a shared trained network, "
                         f"whole-set matching or regression), so distilling class groups apart "
                         f"changes the method; class-split runs support {list(SPLITTABLE)}. "
                         f"Set class_groups=0 (or use mesh.class to split DC/DSA/DM's per-class "
                         f"loop across devices)")
    model = config_utils.build_model(config.model, num_classes, image_shape)
    if common.has_batchnorm(model, image_shape):
        raise ValueError(f"class_groups: {name} with a BatchNorm network takes batch statistics over "
                         f"all classes; splitting the classes changes them. Use a network without "
                         f"BatchNorm (model.norm) or class_groups=0")


def group_dataset(ds: gdata.Dataset, kept: np.ndarray, classes: np.ndarray) -> gdata.Dataset:
    """The kept training samples and the test samples of ``classes``, relabelled
    ``0..len(classes)-1`` in the order of ``classes``."""
    lookup = np.full(ds.num_classes, -1, np.int64)
    lookup[classes] = np.arange(len(classes))
    train = kept[np.isin(ds.y_train[kept], classes)]
    test = np.isin(ds.y_test, classes)
    return dataclasses.replace(
        ds, x_train=ds.x_train[train], y_train=lookup[ds.y_train[train]].astype(np.int32),
        x_test=ds.x_test[test], y_test=lookup[ds.y_test[test]].astype(np.int32),
        ids=ds.ids[train], num_classes=len(classes),
        class_names=tuple(ds.class_names[c] for c in classes))


def group_config(config: Any, g: int, classes: np.ndarray) -> Any:
    """The loop config of group ``g``: the run's, with the selection already applied
    (``indicator='none'``: the group keeps every sample it is given), no further split,
    and the group's classes recorded (``class_group``)."""
    cfg = config.copy_and_resolve_references()
    cfg.class_groups = 0
    cfg.selection.indicator, cfg.selection.ratio, cfg.selection.utility_path = "none", 1.0, ""
    cfg.class_group = {"index": int(g), "classes": [int(c) for c in classes]}
    return cfg


def merge(parts: list[artifacts.SyntheticSet], groups: list[np.ndarray],
          num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The groups' synthetic sets as one set: images concatenated in group order (the
    groups are contiguous, so the set stays class-major) and labels mapped back to the
    global class ids (hard ``[M]``, or soft ``[M, K]`` with zeros outside the group).

    Raises:
      ValueError: a group set with a learned lr (groups would disagree on it).
    """
    xs, ys = [], []
    for part, classes in zip(parts, groups):
        if part.lr is not None:
            raise ValueError("class-split groups learned their own evaluation lr; they cannot be merged")
        y = np.asarray(part.y)
        if y.ndim == 1:
            ys.append(classes[y].astype(np.int32))
        else:
            soft = np.zeros((len(y), num_classes), np.float32)
            soft[:, classes] = y
            ys.append(soft)
        xs.append(np.asarray(part.x, np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def run(config: Any, workdir: str) -> dict:
    """Distil ``config.data`` in ``config.class_groups`` class groups and merge them
    (module docstring); returns ``result.json``'s content.

    Result keys: those of ``loop.run`` that describe the merged set (``accuracy_mean``,
    ``accuracy_std``, ``accuracies``, ``num_real``, ``seconds``, ``algorithm``,
    ``dataset``, ``ipc``, ``iterations``, ``selection``) and ``class_groups``: per group
    its ``classes``, ``workdir``, ``accuracy_mean`` (on its own classes), ``seconds``,
    ``final_loss``.

    Raises:
      ValueError: an algorithm whose method splitting would change, a BatchNorm
        network, ``class_groups`` outside ``[1, K]``, a workdir holding another run.
    """
    start = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    loop.check_resumable(workdir, config)
    finished = loop.finished_result(workdir, config)
    if finished is not None:
        print(f"{workdir} holds this finished class-split run; its result is kept", flush=True)
        return finished
    ds = loop.load_data(config.data)
    groups = class_groups(ds.num_classes, int(config.class_groups))
    check_splittable(config, ds.image_shape, ds.num_classes)
    root = rng.root(int(config.seed))
    kept = loop.select_real(config, ds, root, workdir)
    main = parallel.is_main_process()
    if main:
        gwork.prepare_workdir(workdir, config)
        np.savez(os.path.join(workdir, "selection.npz"), ids=ds.ids[kept], indices=kept)

    results, parts = [], []
    for g, classes in enumerate(groups):
        sub = os.path.join(workdir, GROUP_DIR.format(g))
        print(f"class group {g + 1}/{len(groups)}: classes {classes[0]}..{classes[-1]} in {sub}",
              flush=True)
        res = loop.run(group_config(config, g, classes), sub, dataset=group_dataset(ds, kept, classes))
        results.append({"classes": classes.tolist(), "workdir": sub, "accuracy_mean": res["accuracy_mean"],
                        "seconds": res["seconds"], "final_loss": res["final_loss"]})
        parts.append(artifacts.load_synthetic(os.path.join(sub, "synthetic.npz")))

    x, y = merge(parts, groups, ds.num_classes)
    protocol = config_utils.eval_protocol(config)
    x_test, y_test = ds.x_test, ds.y_test
    max_test = int(config.eval.get("max_test", 0) or 0)
    if max_test > 0:
        x_test, y_test = x_test[:max_test], y_test[:max_test]
    res = evaluate_synthetic(rng.stream(root, "eval"), x, y, x_test, y_test, ds.num_classes, protocol,
                             mesh=evaluation_mesh(protocol.num_models, config.get("mesh")))
    total = time.time() - start
    result = {
        "accuracy_mean": res.mean, "accuracy_std": res.std,
        "accuracies": [float(a) for a in res.accuracies],
        "num_real": int(len(kept)), "seconds": total, "eval_seconds": res.seconds,
        "algorithm": str(config.algorithm), "dataset": ds.name, "ipc": int(config.ipc),
        "iterations": int(config.iterations), "num_test": int(len(y_test)),
        "selection": gsel.selection_summary(kept, ds.y_train, ds.num_classes,
                                            float(config.selection.ratio)),
        "class_groups": results,
    }
    if main:
        npz = os.path.join(workdir, "synthetic.npz")
        meta = {"num_real": int(len(kept)), "iterations": int(config.iterations), "seconds": total,
                "seed": int(config.seed), "class_groups": [r["classes"] for r in results],
                "selection": gwork.to_jsonable(config.selection)}
        artifacts.save_synthetic(npz, x=x, y=y, lr=None, dataset=ds, ipc=int(config.ipc),
                                 algorithm=str(config.algorithm), protocol=protocol, meta=meta)
        artifacts.save_png(os.path.join(workdir, "synthetic.png"), artifacts.load_synthetic(npz))
        gwork.write_json(os.path.join(workdir, "result.json"), result)
    print(f"{config.algorithm} {ds.name} ipc={config.ipc} in {len(groups)} class groups: accuracy "
          f"{res.mean:.2f} +- {res.std:.2f} ({total:.1f}s)", flush=True)
    return result


__all__ = ["GROUP_DIR", "SPLITTABLE", "check_splittable", "class_groups", "group_config",
           "group_dataset", "merge", "run"]
