"""Figures of the experiments (matplotlib, Agg backend: no display needed).

* :func:`plot_sweep`: paper Fig. 2 / Fig. 4: accuracy vs kept ratio (log x), one line per
  selection policy with a shaded +- std, the full-data mean as a line with its +- std
  band, and gamma marked.
* :func:`plot_strata`: paper Fig. 5 / Table 12: accuracy per stratum (S1 = lowest
  utility) with std error bars; diversity (Fig. 6) and outlier counts (Fig. 8) in
  panels below when present.
* :func:`plot_convergence`: Monte-Carlo split-half Spearman vs trials.
* :func:`plot_cross_arch`: grouped bars of a cross-architecture table (Table 17).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gold.experiments.gamma import format_ratio  # noqa: E402


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(path: str, curves: Sequence[dict], full: dict, *, title: str = "") -> str:
    """Accuracy vs kept ratio (paper Fig. 2).

    Args:
      path: PNG to write.
      curves: one dict per policy: ``label``, ``rows`` (each ``ratio``,
        ``accuracy_mean``, ``accuracy_std``) and optionally ``gamma``.
      full: ``accuracy_mean``, ``accuracy_std`` of the full data.
      title: figure title.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    mu, sd = float(full["accuracy_mean"]), float(full["accuracy_std"])
    all_r = [r["ratio"] for c in curves for r in c["rows"]]
    lo = min(all_r) if all_r else 1e-3
    xs = np.array([lo / 1.5, 1.0])
    ax.axhline(mu, color="k", lw=1.2, label=f"full data {mu:.1f} +- {sd:.1f}")
    ax.fill_between(xs, mu - sd, mu + sd, color="k", alpha=0.12, lw=0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(curves):
        rows = sorted(c["rows"], key=lambda r: r["ratio"])
        r = np.array([row["ratio"] for row in rows])
        m = np.array([row["accuracy_mean"] for row in rows])
        s = np.array([row["accuracy_std"] for row in rows])
        col = colors[i % len(colors)]
        label = c["label"]
        if c.get("gamma") is not None:
            label += f" (gamma = {format_ratio(c['gamma'])}{'' if c.get('found', True) else ', none'})"
        ax.plot(r, m, "o-", color=col, label=label, ms=4)
        ax.fill_between(r, m - s, m + s, color=col, alpha=0.2, lw=0)
        if c.get("gamma") is not None and c.get("found", True):
            ax.axvline(c["gamma"], color=col, ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(xs[0], 1.0)
    ticks = [t for t in (1e-4, 1e-3, 1e-2, 1e-1, 1.0) if xs[0] <= t <= 1.0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_ratio(t) for t in ticks])
    ax.set_xlabel("kept ratio of the real data")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_strata(path: str, strata: Sequence[dict], *, title: str = "",
                reference: Optional[dict] = None) -> str:
    """Accuracy per stratum (+ diversity and outlier panels when available).

    Args:
      strata: rows with ``stratum``, ``accuracy_mean``, ``accuracy_std`` and optionally
        ``diversity``, ``outliers``.
      reference: optional ``accuracy_mean`` / ``accuracy_std`` line (e.g. full data).
    """
    s = np.array([r["stratum"] for r in strata])
    m = np.array([r["accuracy_mean"] for r in strata], np.float64)
    sd = np.array([r["accuracy_std"] for r in strata], np.float64)
    has_div = any(r.get("diversity") is not None for r in strata)
    has_out = any(r.get("outliers") is not None for r in strata)
    panels = 1 + int(has_div) + int(has_out)
    fig, axes = plt.subplots(panels, 1, figsize=(6.0, 2.6 + 1.9 * (panels - 1)), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    ax.errorbar(s, m, yerr=sd, fmt="o-", capsize=3, label="accuracy")
    if reference is not None:
        ax.axhline(reference["accuracy_mean"], color="k", lw=1, ls="--",
                   label=f"reference {reference['accuracy_mean']:.1f}")
        ax.legend(fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    i = 1
    if has_div:
        d = np.array([np.nan if r.get("diversity") is None else r["diversity"] for r in strata])
        axes[i, 0].plot(s, d, "s-", color="tab:green")
        axes[i, 0].set_ylabel("diversity\n(intra/inter var)")
        axes[i, 0].grid(alpha=0.3)
        i += 1
    if has_out:
        o = np.array([np.nan if r.get("outliers") is None else r["outliers"] for r in strata])
        axes[i, 0].bar(s, o, color="tab:red", alpha=0.7)
        axes[i, 0].set_ylabel("outliers")
        axes[i, 0].grid(alpha=0.3)
    axes[-1, 0].set_xticks(s)
    axes[-1, 0].set_xticklabels([f"S{int(v)}" for v in s])
    axes[-1, 0].set_xlabel("stratum (S1 = lowest utility)")
    return _save(fig, path)


def plot_convergence(path: str, curve: Sequence[dict], *, title: str = "") -> str:
    """Split-half Spearman correlation vs total trials (log x)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    k = np.array([c["total_trials"] for c in curve])
    r = np.array([np.nan if c["spearman"] is None else c["spearman"] for c in curve], np.float64)
    ax.plot(k, r, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("trials (both halves together)")
    ax.set_ylabel("split-half Spearman")
    ax.set_ylim(min(0.0, float(np.nanmin(r)) if np.isfinite(r).any() else 0.0) - 0.05, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_cross_arch(path: str, rows: Sequence[dict], models: Sequence[str], *, title: str = "") -> str:
    """Grouped bars: one group per synthetic set (``label``), one bar per evaluation
    model (``results[model]['accuracy_mean' / 'accuracy_std']``)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(models) * max(1, len(rows)) * 0.5 + 2), 3.8))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(rows))
    for j, mname in enumerate(models):
        mean = [r["results"].get(mname, {}).get("accuracy_mean", np.nan) for r in rows]
        std = [r["results"].get(mname, {}).get("accuracy_std", 0.0) for r in rows]
        ax.bar(x + (j - (len(models) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=mname)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(6, len(models)))
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


__all__ = ["plot_convergence", "plot_cross_arch", "plot_strata", "plot_sweep"]
