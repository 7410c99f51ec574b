"""Cross-architecture evaluation of saved synthetic sets (paper supp. 10, Table 17).

``run(config, workdir)`` loads every ``synthetic.npz`` of ``config.synthetic`` (files or
distillation workdirs, comma-separated) with ``gold.distill.load_synthetic`` and trains
``eval.num_models`` fresh networks of every architecture of ``config.models`` (default
the paper's MLP, ConvNet, LeNet, AlexNet, VGG11, ResNet18) on it, testing them on the
set's own dataset (in the set's stored model space: normalisation / ZCA).

Protocol: the one stored with the set (epochs, lr, augmentation, learned lr), with the
architecture replaced (ConvNet overrides such as ``width`` apply only to ConvNet-family
models) and any ``eval.*`` field set to a non-default value in the config overriding it
(``epochs`` > 0, ``num_models`` > 0, ``augment`` != '', ``lr`` > 0, ``batch_size`` > 0).

Every (set, model) cell is cached in ``<workdir>/cells/`` so a killed run resumes.
Outputs: ``result.json`` (``models``, ``rows`` [{``synthetic``, ``label``,
``results``: {model: {``accuracy_mean``, ``accuracy_std``, ...}}}]), ``table.csv``,
``table.md`` and ``cross_arch.png``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax

from gold import workdir as gwork
from gold.experiments import common, plots
from gold.experiments.gamma import format_ratio

PAPER_MODELS: tuple[str, ...] = ("mlp", "convnet", "lenet", "alexnet", "vgg11", "resnet18")
"""The architectures of paper Table 17."""


def synthetic_paths(spec: Any) -> list[str]:
    """``synthetic.npz`` paths from a comma-separated string (or a sequence) of files or
    folders holding one.

    Raises:
      ValueError: nothing given. FileNotFoundError: a missing file / folder.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items:
        raise ValueError("config.synthetic is empty: give synthetic.npz files or distillation "
                         "workdirs, comma-separated")
    out = []
    for item in items:
        path = os.path.join(item, "synthetic.npz") if os.path.isdir(item) else item
        if not os.path.exists(path):
            raise FileNotFoundError(f"no synthetic set at {path}")
        out.append(os.path.abspath(path))
    return out


def set_label(syn: Any) -> str:
    """Row label from the set's metadata: ``'loss 5%'``, ``'full'``, ``'random 1%'``."""
    sel = (syn.meta or {}).get("selection") or {}
    ind, ratio = sel.get("indicator", "none"), float(sel.get("ratio", 1.0) or 1.0)
    if sel.get("stratum"):
        return f"{ind} S{sel['stratum']}/{sel.get('num_strata')}"
    if ind in ("none", "", None) or ratio >= 1.0:
        return f"{syn.algorithm} full"
    return f"{ind} {format_ratio(ratio)}"


def protocol_for(stored: Any, model: str, ev: Any) -> Any:
    """The stored protocol with ``model`` and the config's non-default ``eval`` fields."""
    overrides = dict(stored.model_overrides) if model.startswith("convnet") and stored.model.startswith(
        "convnet") else {}
    changes: dict[str, Any] = {"model": model, "model_overrides": tuple(sorted(overrides.items()))}
    for name in ("epochs", "num_models", "batch_size", "test_batch_size"):
        if int(ev.get(name, 0) or 0) > 0:
            changes[name] = int(ev[name])
    if float(ev.get("lr", 0) or 0) > 0:
        changes["lr"] = float(ev.lr)
    if ev.get("augment", ""):
        changes["augment"] = str(ev.augment)
    if "epochs" in changes and stored.lr_decay_epochs is not None:
        changes["lr_decay_epochs"] = None  # the reference drop for the new epochs
    return dataclasses.replace(stored, **changes)


def run(config: Any, workdir: str) -> dict:
    """Evaluate every set on every model; write and return ``result.json``'s content.

    Raises:
      ValueError: no sets, no / unknown models, sets of different datasets (mismatched
        result directories).
    """
    from gold.distill import load_synthetic
    from gold.models import model_names

    start = time.time()
    paths = synthetic_paths(config.synthetic)
    models = [m.strip() for m in (config.models.split(",") if isinstance(config.models, str)
                                  else config.models) if m.strip()]
    if not models:
        raise ValueError("config.models is empty")
    unknown = [m for m in models if m.lower() not in model_names()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(model_names())}")
    sets = [load_synthetic(p) for p in paths]
    datasets = {s.dataset for s in sets}
    if len(datasets) > 1:
        raise ValueError("mismatched synthetic sets: they belong to different datasets "
                         + ", ".join(f"{p} ({s.dataset})" for p, s in zip(paths, sets)))
    labels = [str(v) for v in (config.get("labels") or ())]
    if labels and len(labels) != len(sets):
        raise ValueError(f"{len(labels)} labels for {len(sets)} synthetic sets")
    workdir = os.path.abspath(workdir)
    # More sets, models or labels extend the table; anything else (the seed) is another run.
    common.check_experiment_workdir(workdir, config, ignore=("synthetic", "models", "labels"))
    gwork.prepare_workdir(workdir, config)
    cells = os.path.join(workdir, "cells")
    os.makedirs(cells, exist_ok=True)
    key = jax.random.key(int(config.seed))
    data_dir = config.data.get("dir", "") or None
    max_test = int(config.eval.get("max_test", 0) or 0)
    rows = []
    for i, (path, syn) in enumerate(zip(paths, sets)):
        row = {"synthetic": path, "label": labels[i] if labels else set_label(syn),
               "dataset": syn.dataset, "algorithm": syn.algorithm, "ipc": syn.ipc,
               "num_real": (syn.meta or {}).get("num_real"), "results": {}}
        for m in models:
            cell_path = os.path.join(cells, f"{i}_{m}.json")
            protocol = protocol_for(syn.protocol, m, config.eval)
            if os.path.exists(cell_path):
                cell = gwork.read_json(cell_path)
                if cell.get("protocol") != protocol.to_dict() or cell.get("synthetic") != path:
                    raise ValueError(f"cached cell {cell_path} was made with another protocol or set; "
                                     f"use a new workdir")
            else:
                res = syn.evaluate(jax.random.fold_in(key, i), data_dir=data_dir, protocol=protocol,
                                   max_test=max_test)
                cell = {"accuracy_mean": res.mean, "accuracy_std": res.std,
                        "accuracies": [float(a) for a in res.accuracies], "seconds": res.seconds,
                        "protocol": protocol.to_dict(), "synthetic": path}
                gwork.write_json(cell_path, cell)
            row["results"][m] = {k: cell[k] for k in ("accuracy_mean", "accuracy_std", "accuracies", "seconds")}
            common.log(f"[evaluate] {row['label']} on {m}: {cell['accuracy_mean']:.2f} +- "
                       f"{cell['accuracy_std']:.2f} ({cell['seconds']:.1f}s)")
        rows.append(row)
    result = {"models": models, "rows": rows, "dataset": sets[0].dataset,
              "num_test_limit": max_test, "seconds": time.time() - start}
    write_outputs(workdir, result)
    return result


def markdown(result: dict) -> str:
    """Rows = synthetic sets, columns = evaluation models, cells ``mean +- std``."""
    models = result["models"]
    rows = [{"label": r["label"], **{m: common.mean_pm_std(r["results"][m]["accuracy_mean"],
                                                            r["results"][m]["accuracy_std"], 1)
                                     for m in models if m in r["results"]}} for r in result["rows"]]
    return (f"Cross-architecture test accuracy (%) on {result['dataset']}"
            + (f" (first {result['num_test_limit']} test images)" if result.get("num_test_limit") else "")
            + ".\n\n" + common.markdown_table(rows, ["label", *models], ["synthetic set", *models]))


def write_outputs(workdir: str, result: dict) -> None:
    """``result.json``, ``table.csv``, ``table.md`` and ``cross_arch.png``."""
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    flat = [{"label": r["label"], "synthetic": r["synthetic"],
             **{f"{m}_mean": r["results"][m]["accuracy_mean"] for m in result["models"]},
             **{f"{m}_std": r["results"][m]["accuracy_std"] for m in result["models"]}}
            for r in result["rows"]]
    common.write_csv(os.path.join(workdir, "table.csv"), flat)
    common.write_text(os.path.join(workdir, "table.md"), markdown(result))
    plots.plot_cross_arch(os.path.join(workdir, "cross_arch.png"), result["rows"], result["models"],
                          title=f"cross-architecture, {result['dataset']}")


__all__ = ["PAPER_MODELS", "markdown", "protocol_for", "run", "set_label", "synthetic_paths",
           "write_outputs"]
