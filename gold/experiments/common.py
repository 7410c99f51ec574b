"""Pieces every experiment shares: sub-run points, repeat statistics, tables.

An experiment (sweep, stratification, ...) is a set of *points*: one distillation run
each (``gold.distill.loop.run``) in its own sub-workdir ``<workdir>/points/<name>``.
A point whose ``result.json`` exists is not run again (its stored config must match:
a killed experiment resumes by skipping finished points, and ``loop.run`` itself resumes
a half-finished point from its checkpoint).

Tables are lists of flat dicts written as JSON (inside ``result.json``), CSV and
Markdown with the same columns.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from gold import workdir as gwork

POINTS_DIR = "points"
"""Sub-folder of an experiment workdir holding one folder per distillation run."""

Runner = Callable[[Any, str], dict]  # (config, workdir) -> result dict (loop.run)


# --------------------------------------------------------------------------- configs
def with_overrides(config: Any, overrides: dict) -> Any:
    """A deep copy of a ConfigDict with dotted fields set, e.g. ``{'selection.ratio': .1}``.

    Raises:
      KeyError: a dotted path whose parent does not exist.
    """
    cfg = copy.deepcopy(config)
    if hasattr(cfg, "unlock"):
        cfg.unlock()
    for path, value in overrides.items():
        node = cfg
        parts = path.split(".")
        for i, p in enumerate(parts[:-1]):
            if p not in node:
                raise KeyError(f"config has no field {'.'.join(parts[:i + 1])!r}")
            node = node[p]
        node[parts[-1]] = value
    return cfg


def distill_config(config: Any, drop: Sequence[str]) -> Any:
    """Copy of an experiment config without the experiment-only top-level fields
    ``drop`` (so a point's ``config.json`` is a plain distillation config)."""
    cfg = copy.deepcopy(config)
    if hasattr(cfg, "unlock"):
        cfg.unlock()
    for name in drop:
        if name in cfg:
            del cfg[name]
    return cfg


# Fields that do not make a finished point's result stale: where the data is read from,
# log / checkpoint cadence, the evaluation settings, the device layout (mesh). Unlike a single distillation, where
# more `iterations` extend the run, a finished point with other iterations is another point.
HARMLESS_FIELDS: tuple[str, ...] = ("data.dir", "eval_every", "checkpoint_every", "log_every", "eval",
                                    "workdir", "mesh")


def config_diff(old: Any, new: Any, ignore: Sequence[str] = ()) -> list[str]:
    """Significant differences ``field: old -> new`` between two configs (dicts or
    ConfigDicts), ignoring :data:`HARMLESS_FIELDS` and ``ignore`` (dotted prefixes)."""
    diffs = gwork.config_differences(old, new, HARMLESS_FIELDS)
    return [d for d in diffs if not any(d.startswith(f"{p}:") or d.startswith(f"{p}.") for p in ignore)]


def check_experiment_workdir(workdir: str, config: Any, ignore: Sequence[str] = ()) -> None:
    """Refuse a workdir whose ``config.json`` describes a different experiment.

    Fields in ``ignore`` (e.g. the ratio grid or the repeat count of a sweep) may change:
    the finished points stay valid and new ones are added. Fields missing from the stored
    config (added to the code since, with their defaults) are not differences.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    # A field absent from the stored config was added to the code since (with its
    # default): not a different experiment.
    diffs = [d for d in config_diff(gwork.read_json(path), config, ignore) if ": '<absent>' ->" not in d]
    if diffs:
        raise ValueError(f"{workdir} holds a different experiment; use a new --workdir. "
                         f"Differences: " + "; ".join(diffs))


# ---------------------------------------------------------------------------- points
def point_dir(workdir: str, name: str) -> str:
    """``<workdir>/points/<name>``."""
    return os.path.join(workdir, POINTS_DIR, name)


def run_point(config: Any, workdir: str, runner: Optional[Runner] = None) -> tuple[dict, bool]:
    """Run one distillation point unless its ``result.json`` exists.

    Returns:
      (result dict, cached) with ``cached`` True when the stored result was reused.

    Raises:
      ValueError: the stored point was made with a different config (a mismatched
        result directory).
    """
    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        cfg_path = os.path.join(workdir, "config.json")
        if os.path.exists(cfg_path):
            diffs = config_diff(gwork.read_json(cfg_path), config)
            if diffs:
                raise ValueError(f"finished point {workdir} was run with another config; "
                                 f"use a new workdir. Differences: " + "; ".join(diffs))
        return gwork.read_json(result_path), True
    if runner is None:
        from gold.distill.loop import run as runner  # noqa: PLW0127
    return runner(config, workdir), False


def point_indices(workdir: str) -> Optional[np.ndarray]:
    """Dataset indices a finished point kept (its ``selection.npz``), or None."""
    path = os.path.join(workdir, "selection.npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return np.asarray(f["indices"], np.int64)


# ------------------------------------------------------------------------ statistics
def repeat_stats(results: Sequence[dict]) -> dict:
    """Mean / std over repeats of one point.

    ``accuracy_mean`` = mean of the repeats' ``accuracy_mean``; ``accuracy_std`` = their
    population std (the paper: "repeated 5 times for mean and standard deviation"); with
    a single repeat, the std over that run's evaluation networks instead (flagged by
    ``std_over`` = ``'models'``).
    """
    means = np.array([float(r["accuracy_mean"]) for r in results], np.float64)
    if len(means) == 0:
        raise ValueError("no results to aggregate")
    if len(means) == 1:
        std, over = float(results[0].get("accuracy_std", 0.0)), "models"
    else:
        std, over = float(means.std()), "repeats"
    return {
        "accuracy_mean": float(means.mean()),
        "accuracy_std": std,
        "std_over": over,
        "repeat_means": [float(m) for m in means],
        "num_real": _int_if_whole(np.mean([float(r.get("num_real", np.nan)) for r in results])),
        "seconds": float(np.sum([float(r.get("seconds", 0.0)) for r in results])),
    }


def _int_if_whole(value: float) -> float | int:
    v = float(value)
    return int(v) if np.isfinite(v) and v == int(v) else v


# ---------------------------------------------------------------------------- tables
def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 10 ** -digits or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v, digits) for v in value)
    return str(value)


def write_csv(path: str, rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> None:
    """Rows as CSV (lists joined by spaces; columns default to the first row's keys)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([" ".join(str(v) for v in r[c]) if isinstance(r.get(c), (list, tuple))
                        else ("" if r.get(c) is None else r.get(c)) for c in columns])


def markdown_table(rows: Sequence[dict], columns: Sequence[str],
                   headers: Optional[Sequence[str]] = None, digits: int = 2) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns``."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def mean_pm_std(mean: Optional[float], std: Optional[float], digits: int = 1) -> str:
    """``'91.4 +- 0.3'`` (empty for a missing mean)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.{digits}f} +- {0.0 if std is None else std:.{digits}f}"


def write_text(path: str, text: str) -> None:
    """Write a text file (UTF-8)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def log(message: str) -> None:
    """One progress line on stdout (flushed)."""
    print(message, flush=True)


__all__ = [
    "POINTS_DIR", "check_experiment_workdir", "config_diff", "distill_config", "log",
    "markdown_table", "mean_pm_std", "point_dir", "point_indices", "repeat_stats", "run_point",
    "with_overrides", "write_csv", "write_text",
]
