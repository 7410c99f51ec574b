"""Stratified analysis of a utility indicator (paper 4.2 I, Fig. 5-7, Table 12).

Each class is sorted by utility and cut into ``selection.num_strata`` near-equal strata
(``gold.selection`` ``stratify`` policy: S1 = LOWEST utility, e.g. the largest losses);
every stratum is distilled on its own (``repeats`` runs, seeds ``seed, seed + 1, ...``).
A good indicator gives a rising accuracy curve S1 -> SS. ``selection.indicator='random'``
gives random strata (the paper's "Random" row).

Each stratum also gets its diversity (intra / inter class variance of GAP features,
Fig. 6: on MNIST the top strata lose diversity) and outlier count (samples flagged as
class outliers in the full data, Fig. 8), via ``gold.utility.diversity``.

Points are ``gold.distill.loop.run`` in ``<workdir>/points/s<k>/rep<r>``; finished ones
are skipped on a rerun. Before anything runs, every stratum of every class must hold at
least ``ipc`` samples (else a ValueError names the class and the sizes).

Outputs: ``result.json`` (``{"strata": [{"stratum", "accuracy_mean",
"accuracy_std", "diversity", ...}], "num_strata", ...}``), ``strata.csv``,
``strata.md``, ``strata.png``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import numpy as np

from gold import workdir as gwork
from gold.experiments import analysis, common, plots
from gold.selection import class_indices, strata_bounds

EXPERIMENT_FIELDS: tuple[str, ...] = ("repeats", "strata", "analysis")
GROWABLE: tuple[str, ...] = ("repeats", "strata", "analysis")
TABLE_COLUMNS: tuple[str, ...] = ("stratum", "accuracy_mean", "accuracy_std", "diversity", "intra",
                                  "inter", "outliers", "num_real", "utility_mean", "seconds")


def check_strata(labels: np.ndarray, num_classes: int, num_strata: int, ipc: int) -> np.ndarray:
    """Sizes ``[C, S]`` of every stratum; ValueError if any holds fewer than ``ipc``.

    Raises:
      ValueError: ``num_strata < 1``, ``ipc < 1`` or a stratum smaller than ``ipc``.
    """
    if int(num_strata) < 1:
        raise ValueError(f"selection.num_strata must be >= 1, got {num_strata}")
    if int(ipc) < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    groups = class_indices(labels, num_classes)
    sizes = np.stack([np.diff(strata_bounds(len(g), int(num_strata))) for g in groups])
    small = np.argwhere(sizes < int(ipc))
    if len(small):
        c, s = (int(v) for v in small[0])
        raise ValueError(
            f"stratum S{s + 1} of class {c} holds {sizes[c, s]} sample(s), fewer than ipc={ipc} "
            f"(class {c} has {len(groups[c])} samples split into {num_strata} strata): "
            f"use fewer strata, a smaller ipc or more data")
    return sizes


def strata_to_run(config: Any) -> list[int]:
    """The 1-based strata of ``config.strata`` (empty = all ``selection.num_strata``)."""
    s_total = int(config.selection.num_strata)
    chosen = [int(s) for s in (config.get("strata") or ())] or list(range(1, s_total + 1))
    bad = [s for s in chosen if not 1 <= s <= s_total]
    if bad:
        raise ValueError(f"strata {bad} outside 1..{s_total}")
    return sorted(set(chosen))


def run(config: Any, workdir: str, runner: Optional[common.Runner] = None) -> dict:
    """Run (or resume) a stratified analysis; write and return ``result.json``'s content.

    Args:
      config: a distillation config plus ``selection.num_strata``, ``repeats``,
        ``strata`` (subset to run; empty = all), ``analysis.features``,
        ``analysis.outlier_std`` (``configs/stratify.py``).
      workdir: experiment folder.
      runner: one point's ``(config, workdir) -> result`` (default ``loop.run``).

    Raises:
      ValueError: a stratum with fewer samples than IPC, ``indicator='none'``, bad
        strata, a workdir of a different experiment.
    """
    start = time.time()
    num_strata = int(config.selection.num_strata)
    chosen = strata_to_run(config)
    repeats = int(config.get("repeats", 1))
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)

    from gold.distill.loop import load_data

    ds = load_data(config.data)
    labels = np.asarray(ds.y_train)
    sizes = check_strata(labels, ds.num_classes, num_strata, int(config.ipc))
    common.check_experiment_workdir(workdir, config, ignore=GROWABLE)
    gwork.prepare_workdir(workdir, config)
    utility, path_for = analysis.experiment_utility(config, ds, workdir, log=common.log)
    an = config.get("analysis", {}) or {}
    feats = analysis.analysis_features(config, ds, utility, workdir, str(an.get("features", "auto")),
                                       log=common.log)
    outl = analysis.full_outliers(feats, labels, ds.num_classes, float(an.get("outlier_std", 2.0)))
    base = common.distill_config(config, EXPERIMENT_FIELDS)
    seed = int(config.seed)
    strata = []
    for s in chosen:
        res_s, idx = [], None
        for rep in range(repeats):
            over = {"selection.stratum": s, "selection.num_strata": num_strata,
                    "selection.utility_path": path_for(1.0), "seed": seed + rep}
            pdir = common.point_dir(workdir, f"s{s}/rep{rep}")
            res, cached = common.run_point(common.with_overrides(base, over), pdir, runner)
            res_s.append(res)
            if rep == 0:
                idx = common.point_indices(pdir)
            common.log(f"[stratify] S{s}/{num_strata} rep {rep}: {res['accuracy_mean']:.2f} +- "
                       f"{res.get('accuracy_std', 0.0):.2f}{' (cached)' if cached else ''}")
        row = {"stratum": s, **common.repeat_stats(res_s),
               "size_per_class": [int(v) for v in sizes[:, s - 1]]}
        row.update(analysis.subset_measures(feats, labels, ds.num_classes, idx, outl))
        row["utility_mean"] = (float(np.mean(utility.scores[idx]))
                               if utility is not None and idx is not None else None)
        strata.append(row)
    result = {
        "strata": strata,
        "num_strata": num_strata,
        "indicator": str(config.selection.indicator),
        "algorithm": str(config.algorithm),
        "dataset": ds.name,
        "ipc": int(config.ipc),
        "iterations": int(config.iterations),
        "repeats": repeats,
        "full_diversity": analysis.subset_measures(feats, labels, ds.num_classes,
                                                   np.arange(len(labels)), outl),
        "rising": rising_summary(strata),
        "seconds": time.time() - start,
    }
    write_outputs(workdir, result)
    best = max(strata, key=lambda r: r["accuracy_mean"])
    common.log(f"[stratify] S1 {strata[0]['accuracy_mean']:.2f} ... best S{best['stratum']} "
               f"{best['accuracy_mean']:.2f}; Spearman(stratum, accuracy) = "
               f"{result['rising']['spearman']:.2f}")
    return result


def rising_summary(strata: Sequence[dict]) -> dict:
    """How monotone the curve is: Spearman of (stratum, accuracy), best stratum, and the
    gap best - S1 in accuracy points."""
    from gold.utility.monte_carlo import spearman

    s = np.array([r["stratum"] for r in strata], np.float64)
    a = np.array([r["accuracy_mean"] for r in strata], np.float64)
    best = int(s[int(np.argmax(a))])
    return {"spearman": spearman(s, a) if len(s) >= 2 else float("nan"), "best_stratum": best,
            "best_minus_first": float(a.max() - a[0])}


def write_outputs(workdir: str, result: dict) -> None:
    """``result.json``, ``strata.csv``, ``strata.md``, ``strata.png``."""
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    common.write_csv(os.path.join(workdir, "strata.csv"), result["strata"], TABLE_COLUMNS)
    common.write_text(os.path.join(workdir, "strata.md"), markdown(result))
    plots.plot_strata(os.path.join(workdir, "strata.png"), result["strata"],
                      title=f"{result['algorithm'].upper()} on {result['dataset']}, IPC {result['ipc']}: "
                            f"{result['indicator']} strata")


def markdown(result: dict) -> str:
    """The strata table in Markdown (paper Table 12 layout, transposed)."""
    rows = [{**r, "stratum": f"S{r['stratum']}",
             "accuracy": common.mean_pm_std(r["accuracy_mean"], r["accuracy_std"], 2)}
            for r in result["strata"]]
    head = (f"**{result['algorithm'].upper()} on {result['dataset']}, IPC {result['ipc']}**, "
            f"`{result['indicator']}` strata (S1 = lowest utility), {result['repeats']} repeat(s); "
            f"Spearman(stratum, accuracy) = {result['rising']['spearman']:.2f}.\n\n")
    return head + common.markdown_table(
        rows, ["stratum", "accuracy", "diversity", "outliers", "num_real", "utility_mean"],
        ["stratum", "accuracy (%)", "diversity", "outliers", "num real", "mean utility"], digits=3)


__all__ = ["EXPERIMENT_FIELDS", "check_strata", "markdown", "rising_summary", "run",
           "strata_to_run", "write_outputs"]
