"""Critical-sample-ratio sweep (paper Sec. 3.1, Fig. 2 / 4, Tables 1-6, supp. 12.3).

``run(config, workdir)`` distils ``config.data`` with ``config.algorithm`` from a kept
fraction ``r`` of the real data for every ``r`` in ``config.ratios`` (``repeats`` runs
each, seeds ``seed, seed + 1, ...``) and from the full data (``full_repeats`` runs),
then reports gamma = the smallest ratio whose mean accuracy preserves the full-data
mean (:mod:`gold.experiments.gamma`).

Selection policy: ``selection.indicator``: ``random`` (a new random subset per repeat,
since the selection key follows the seed), a utility indicator (``loss``, ...; computed
ONCE into ``<workdir>/utility/`` and shared by every point, greedy top-``r`` per class),
a coreset baseline (``craig``, ``gradmatch``, ``glister``, ``herding``: one greedy order
up to the largest ratio; ``kmeans``: one clustering per ratio) or ``file`` /
``monte_carlo`` with ``selection.utility_path``.

Every point is a plain ``gold.distill.loop.run`` in ``<workdir>/points/<name>``
(``full/rep0``, ``r0.01/rep0``, ...). A finished point (its ``result.json`` exists) is
skipped, so a killed sweep resumes where it stopped; the grid and the repeat count may
grow between invocations (the other fields must stay).

Outputs in ``workdir``: ``config.json``, ``result.json`` (``gamma``,
``full``, ``rows``, ``ratios``, ``repeats``, plus the band, the rule, per-row
diversity / outliers (paper Fig. 8) and timings), ``table.csv``, ``table.md`` and
``sweep.png`` (Fig. 2 style).
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np

from gold import progress
from gold import workdir as gwork
from gold.experiments import analysis, common, plots
from gold.experiments.gamma import RULES, critical_ratio, format_ratio, validate_ratios

EXPERIMENT_FIELDS: tuple[str, ...] = ("ratios", "repeats", "full_repeats", "gamma_rule",
                                      "gamma_monotone", "analysis")
"""Top-level config fields that belong to the sweep, not to its distillation points."""

GROWABLE: tuple[str, ...] = ("ratios", "repeats", "full_repeats", "gamma_rule", "gamma_monotone",
                             "analysis")
"""Fields that may change when a sweep is resumed (finished points stay valid)."""

TABLE_COLUMNS: tuple[str, ...] = ("ratio", "accuracy_mean", "accuracy_std", "comparable",
                                  "num_real", "diversity", "outliers", "seconds")


def ratio_name(ratio: float) -> str:
    """Point folder name of a ratio: ``0.001 -> 'r0.001'``."""
    return f"r{ratio:g}"


def plan(config: Any) -> list[tuple[str, Optional[float], int]]:
    """The points of a sweep: ``(folder name, ratio or None for full data, repeat)``.

    Raises:
      ValueError: empty / out-of-range grid, repeats < 1.
    """
    ratios = validate_ratios(config.ratios)
    repeats = int(config.repeats)
    full_repeats = int(config.get("full_repeats", 0) or 0) or repeats
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    points = [(f"full/rep{r}", None, r) for r in range(full_repeats)]
    for ratio in ratios:
        points += [(f"{ratio_name(ratio)}/rep{r}", ratio, r) for r in range(repeats)]
    return points


def run(config: Any, workdir: str, runner: Optional[common.Runner] = None) -> dict:
    """Run (or resume) a sweep; write and return ``result.json``'s content.

    Args:
      config: a distillation config (``configs/dc.py`` etc.) plus the sweep fields
        ``ratios``, ``repeats``, ``full_repeats``, ``gamma_rule``, ``gamma_monotone``,
        ``analysis.features`` / ``analysis.outlier_std`` (``configs/sweep.py``).
      workdir: experiment folder.
      runner: ``(config, workdir) -> result`` of one point (default
        ``gold.distill.loop.run``; tests inject a fake).

    Raises:
      ValueError: bad grid, unknown rule, ``selection.indicator='none'``, or a workdir
        / finished point made with a different config.
    """
    start = time.time()
    points = plan(config)
    ratios = validate_ratios(config.ratios)
    rule = str(config.get("gamma_rule", "at_least"))
    if rule not in RULES:
        raise ValueError(f"unknown gamma_rule {rule!r}; valid: {', '.join(RULES)}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    common.check_experiment_workdir(workdir, config, ignore=GROWABLE)
    gwork.prepare_workdir(workdir, config)

    from gold.distill.loop import load_data

    ds = load_data(config.data)
    utility, path_for = analysis.experiment_utility(config, ds, workdir, max_ratio=max(ratios),
                                                    log=common.log)
    an = config.get("analysis", {}) or {}
    feats = analysis.analysis_features(config, ds, utility, workdir, str(an.get("features", "auto")),
                                       log=common.log)
    labels = np.asarray(ds.y_train)
    outl = analysis.full_outliers(feats, labels, ds.num_classes, float(an.get("outlier_std", 2.0)))
    base = common.distill_config(config, EXPERIMENT_FIELDS)
    seed = int(config.seed)

    results: dict[Optional[float], list[dict]] = {}
    first_indices: dict[Optional[float], Optional[np.ndarray]] = {}
    bar = progress.bar(len(points), "sweep points")
    for i, (name, ratio, rep) in enumerate(points):
        if ratio is None:
            over = {"selection.indicator": "none", "selection.ratio": 1.0,
                    "selection.utility_path": "", "selection.stratum": 0, "seed": seed + rep}
        else:
            over = {"selection.ratio": float(ratio), "selection.utility_path": path_for(ratio),
                    "selection.stratum": 0, "seed": seed + rep}
        pdir = common.point_dir(workdir, name)
        res, cached = common.run_point(common.with_overrides(base, over), pdir, runner)
        results.setdefault(ratio, []).append(res)
        if rep == 0:
            first_indices[ratio] = common.point_indices(pdir)
        common.log(f"[sweep {i + 1}/{len(points)}] {name}: {res['accuracy_mean']:.2f} +- "
                   f"{res.get('accuracy_std', 0.0):.2f} (num_real={res.get('num_real')}"
                   f"{', cached' if cached else ''})")
        bar.update(1)
    bar.close()

    full = common.repeat_stats(results[None])
    rows = []
    for ratio in ratios:
        st = common.repeat_stats(results[ratio])
        row = {"ratio": float(ratio), **st}
        row.update(analysis.subset_measures(feats, labels, ds.num_classes,
                                            first_indices.get(ratio), outl))
        rows.append(row)
    full.update(analysis.subset_measures(feats, labels, ds.num_classes,
                                         np.arange(len(labels)), outl))
    g = critical_ratio(full["accuracy_mean"], full["accuracy_std"], rows, rule=rule,
                       monotone=bool(config.get("gamma_monotone", False)))
    for row, ok in zip(rows, g.comparable):
        row["comparable"] = ok
    result = {
        "gamma": g.gamma,
        "gamma_found": g.found,
        "gamma_rule": rule,
        "band": [g.low, g.to_dict()["high"]],
        "full": full,
        "rows": rows,
        "ratios": list(ratios),
        "repeats": int(config.repeats),
        "full_repeats": len(results[None]),
        "indicator": str(config.selection.indicator),
        "algorithm": str(config.algorithm),
        "dataset": ds.name,
        "ipc": int(config.ipc),
        "iterations": int(config.iterations),
        "seconds": time.time() - start,
        "points_seconds": float(sum(r.get("seconds", 0.0) for rs in results.values() for r in rs)),
    }
    write_outputs(workdir, result)
    common.log(f"[sweep] gamma({result['indicator']}) = {format_ratio(g.gamma)}"
               f"{'' if g.found else ' (no grid ratio comparable)'}; full data "
               f"{full['accuracy_mean']:.2f} +- {full['accuracy_std']:.2f}")
    return result


def write_outputs(workdir: str, result: dict) -> None:
    """``result.json``, ``table.csv``, ``table.md`` and ``sweep.png`` of a sweep result."""
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    full = {"ratio": 1.0, **result["full"], "comparable": True}
    table = result["rows"] + [full]
    common.write_csv(os.path.join(workdir, "table.csv"), table, TABLE_COLUMNS)
    common.write_text(os.path.join(workdir, "table.md"), markdown(result))
    plots.plot_sweep(os.path.join(workdir, "sweep.png"),
                     [{"label": result["indicator"], "rows": result["rows"], "gamma": result["gamma"],
                       "found": result["gamma_found"]}],
                     result["full"], title=sweep_title(result))


def sweep_title(result: dict) -> str:
    """``'DC on mnist, IPC 1'``."""
    return f"{result['algorithm'].upper()} on {result['dataset']}, IPC {result['ipc']}"


def markdown(result: dict) -> str:
    """The sweep table in Markdown, with gamma and the band in a caption line."""
    rows = [{**r, "ratio": format_ratio(r["ratio"]),
             "accuracy": common.mean_pm_std(r["accuracy_mean"], r["accuracy_std"], 2)}
            for r in result["rows"]]
    f = result["full"]
    rows.append({"ratio": "100% (full)", "accuracy": common.mean_pm_std(f["accuracy_mean"], f["accuracy_std"], 2),
                 "comparable": True, "num_real": f.get("num_real"), "diversity": f.get("diversity"),
                 "outliers": f.get("outliers")})
    cols = ["ratio", "accuracy", "comparable", "num_real", "diversity", "outliers"]
    high = result["band"][1]
    high_text = "inf" if high is None or high == float("inf") else f"{high:.2f}"
    head = (f"**{sweep_title(result)}**, selection `{result['indicator']}`: gamma = "
            f"{format_ratio(result['gamma'])}{'' if result['gamma_found'] else ' (none comparable)'} "
            f"(rule `{result['gamma_rule']}`, band {result['band'][0]:.2f} .. {high_text}; "
            f"{result['repeats']} repeat(s)).\n\n")
    return head + common.markdown_table(rows, cols, ["kept ratio", "accuracy (%)", "comparable",
                                                     "num real", "diversity", "outliers"])


def compare(workdirs: list[str], path: str, labels: Optional[list[str]] = None) -> dict:
    """Overlay finished sweeps of the SAME setting in one Fig.-2/4 plot (random vs loss ...).

    Raises:
      ValueError: fewer than one sweep, a folder without a sweep ``result.json``, or
        sweeps of different algorithm / dataset / IPC / iterations (mismatched result
        directories).
    """
    if not workdirs:
        raise ValueError("compare needs at least one sweep workdir")
    results = []
    for w in workdirs:
        p = os.path.join(w, "result.json")
        if not os.path.exists(p):
            raise ValueError(f"{w} has no result.json (not a finished sweep)")
        r = gwork.read_json(p)
        if "gamma" not in r or "rows" not in r:
            raise ValueError(f"{p} is not a sweep result (no gamma / rows)")
        results.append(r)
    keys = ("algorithm", "dataset", "ipc", "iterations")
    ref = {k: results[0].get(k) for k in keys}
    for w, r in zip(workdirs, results):
        diff = {k: (ref[k], r.get(k)) for k in keys if r.get(k) != ref[k]}
        if diff:
            raise ValueError(f"mismatched sweep directories: {workdirs[0]} vs {w} differ in "
                             + ", ".join(f"{k} ({a!r} vs {b!r})" for k, (a, b) in diff.items()))
    labels = labels or [r["indicator"] for r in results]
    curves = [{"label": lab, "rows": r["rows"], "gamma": r["gamma"], "found": r["gamma_found"]}
              for lab, r in zip(labels, results)]
    plots.plot_sweep(path, curves, results[0]["full"], title=sweep_title(results[0]))
    return {"path": path, "gammas": {lab: r["gamma"] for lab, r in zip(labels, results)}}


__all__ = ["EXPERIMENT_FIELDS", "TABLE_COLUMNS", "compare", "markdown", "plan", "ratio_name", "run",
           "write_outputs"]
