"""Render a directory of experiment results into one Markdown report.

``render(directory)`` finds every ``result.json`` below ``directory`` (not inside an
experiment's ``points/`` sub-runs, which its own table already summarises), recognises
its kind from its keys and renders:

* **sweep** (``gamma`` + ``rows``): one table of all sweeps (setting, policy, gamma,
  full-data accuracy) and each sweep's ratio table;
* **stratify** (``strata``): accuracy / diversity / outliers per stratum;
* **evaluate** (``models`` + ``rows`` with ``results``): the cross-architecture table;
* **monte_carlo** (``convergence``): trials, subset size, speed, split-half Spearman;
* **distill** (``accuracy_mean``): one line per run in a common table;
* **utility** (``indicator`` + ``num_samples``): one line per run.

Run as ``python -m gold.experiments.report DIR [OUT.md]``.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from gold import workdir as gwork
from gold.experiments import common
from gold.experiments.gamma import format_ratio

KINDS: tuple[str, ...] = ("sweep", "stratify", "evaluate", "monte_carlo", "distill", "utility")


def result_kind(result: dict) -> Optional[str]:
    """The experiment kind of a ``result.json`` payload (None = unknown)."""
    if "gamma" in result and "rows" in result:
        return "sweep"
    if "strata" in result:
        return "stratify"
    if "models" in result and "rows" in result:
        return "evaluate"
    if "convergence" in result:
        return "monte_carlo"
    if "accuracy_mean" in result:
        return "distill"
    if "indicator" in result and "num_samples" in result:
        return "utility"
    return None


def find_results(directory: str) -> list[tuple[str, dict]]:
    """``(relative folder, result)`` of every ``result.json`` below ``directory``,
    sorted by folder, skipping experiments' ``points/`` sub-runs.

    Raises:
      FileNotFoundError: ``directory`` does not exist.
      ValueError: no ``result.json`` at all.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such result directory: {directory}")
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != common.POINTS_DIR)
        if "result.json" in files:
            rel = os.path.relpath(root, directory)
            found.append((rel, gwork.read_json(os.path.join(root, "result.json"))))
    if not found:
        raise ValueError(f"no result.json found below {directory}")
    return sorted(found, key=lambda t: t[0])


def _setting(r: dict) -> str:
    return f"{str(r.get('algorithm', '?')).upper()} {r.get('dataset', '?')} IPC {r.get('ipc', '?')}"


def render_sweeps(items: list[tuple[str, dict]]) -> str:
    """Summary table of sweeps plus each sweep's table."""
    from gold.experiments import sweep

    rows = [{"run": rel, "setting": _setting(r), "policy": r["indicator"],
             "gamma": format_ratio(r["gamma"]) + ("" if r.get("gamma_found", True) else " (none)"),
             "full": common.mean_pm_std(r["full"]["accuracy_mean"], r["full"]["accuracy_std"], 2),
             "iterations": r.get("iterations"), "repeats": r.get("repeats")} for rel, r in items]
    out = ["## Critical sample ratio sweeps\n",
           common.markdown_table(rows, ["run", "setting", "policy", "gamma", "full", "iterations", "repeats"],
                                 ["run", "setting", "policy", "gamma", "full data (%)", "iterations", "repeats"])]
    for rel, r in items:
        out.append(f"\n### {rel}\n\n" + sweep.markdown(r))
    return "".join(out)


def render_strata(items: list[tuple[str, dict]]) -> str:
    """Each stratification's table."""
    from gold.experiments import stratify

    return "## Stratified analyses\n" + "".join(f"\n### {rel}\n\n" + stratify.markdown(r) for rel, r in items)


def render_evaluate(items: list[tuple[str, dict]]) -> str:
    """Each cross-architecture table."""
    from gold.experiments import cross_arch

    return "## Cross-architecture evaluation\n" + "".join(
        f"\n### {rel}\n\n" + cross_arch.markdown(r) for rel, r in items)


def render_monte_carlo(items: list[tuple[str, dict]]) -> str:
    """One line per Monte-Carlo run plus its convergence curve."""
    out = ["## Monte-Carlo utility\n"]
    for rel, r in items:
        conv = r["convergence"]
        last = conv[-1] if conv else {}
        out.append(
            f"\n### {rel}\n\n{r.get('dataset')} ({r.get('num_samples')} samples): {r.get('trials')} "
            f"trials of {r.get('subset_size')} samples, DC IPC {r.get('ipc')} x {r.get('iterations')} "
            f"iterations; trial accuracy {common.mean_pm_std(r.get('trial_accuracy_mean'), r.get('trial_accuracy_std'), 2)}; "
            f"{r.get('seconds_per_trial', float('nan')):.2f} s per trial; split-half Spearman at "
            f"{last.get('total_trials')} trials: {common._cell(last.get('spearman'), 3)}.\n\n")
        out.append(common.markdown_table(conv, ["total_trials", "mean_visits", "compared", "spearman"],
                                         ["trials", "mean visits / half", "samples compared", "Spearman"], 3))
    return "".join(out)


def render_distill(items: list[tuple[str, dict]]) -> str:
    """One table row per distillation run."""
    rows = [{"run": rel, "setting": _setting(r),
             "accuracy": common.mean_pm_std(r["accuracy_mean"], r.get("accuracy_std"), 2),
             "num_real": r.get("num_real"), "iterations": r.get("iterations"),
             "seconds": r.get("seconds")} for rel, r in items]
    return "## Distillation runs\n\n" + common.markdown_table(
        rows, ["run", "setting", "accuracy", "num_real", "iterations", "seconds"],
        ["run", "setting", "accuracy (%)", "num real", "iterations", "seconds"], 1)


def render_utility(items: list[tuple[str, dict]]) -> str:
    """One table row per utility run."""
    rows = [{"run": rel, **r} for rel, r in items]
    return "## Utility indicators\n\n" + common.markdown_table(
        rows, ["run", "indicator", "dataset", "num_samples", "seconds"], digits=1)


_RENDER = {"sweep": render_sweeps, "stratify": render_strata, "evaluate": render_evaluate,
           "monte_carlo": render_monte_carlo, "distill": render_distill, "utility": render_utility}


def render(directory: str, title: Optional[str] = None) -> str:
    """Markdown report of every result below ``directory`` (see module docstring).

    Raises:
      FileNotFoundError / ValueError: missing directory, or no ``result.json`` in it.
    """
    found = find_results(directory)
    groups: dict[str, list[tuple[str, dict]]] = {k: [] for k in KINDS}
    unknown = []
    for rel, r in found:
        kind = result_kind(r)
        (groups[kind] if kind else unknown).append((rel, r))
    parts = [f"# {title or 'Results: ' + os.path.basename(os.path.abspath(directory))}\n"]
    for kind in KINDS:
        if groups[kind]:
            parts.append("\n" + _RENDER[kind](groups[kind]))
    if unknown:
        parts.append("\n## Other results\n\n" + "".join(f"- {rel}: keys {sorted(r)[:8]}\n" for rel, r in unknown))
    return "".join(parts)


def main(argv: list[str]) -> int:
    """CLI: ``python -m gold.experiments.report DIR [OUT.md]``."""
    if len(argv) not in (2, 3):
        print("usage: python -m gold.experiments.report DIR [OUT.md]", file=sys.stderr)
        return 2
    text = render(argv[1])
    if len(argv) == 3:
        common.write_text(argv[2], text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


__all__ = ["KINDS", "find_results", "render", "result_kind"]
