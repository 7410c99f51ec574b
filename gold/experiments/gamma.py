"""Critical sample ratio gamma(pi) (paper Sec. 3.1 and supplementary 12.3).

A sweep distils from a kept fraction ``ratio`` of the real data for every ratio of a
grid, repeated R times, and once more from the full data. With the full-data accuracy
``mu +- sigma`` (mean and standard deviation over its repeats), a ratio is *comparable*
when its mean accuracy preserves the full-data performance, and gamma is the smallest
comparable ratio of the grid.

Rules (``rule=``):

* ``"at_least"`` (default): comparable when ``mean >= mu - sigma``. This is the rule
  the paper's own numbers follow: its loss-selected runs often beat the full data
  (e.g. CIFAR-10 DC IPC 1: full 28.3 +- 0.5, loss at 1 % 29.7, gamma(loss) = 0.5 %),
  which the literal two-sided band would call "not comparable".
* ``"within"``: the literal wording of 12.3, ``mu - sigma <= mean <= mu + sigma``.

Edge cases (documented contract, tested):

* No grid ratio is comparable -> gamma = 1.0 (the full data is trivially comparable
  with itself, so gamma always exists and is at most 1); :class:`GammaResult` says
  ``found=False`` so a report can print "> largest ratio".
* ``sigma == 0`` (one repeat, or identical repeats): the band is the single value
  ``mu`` (with a 1e-9 tolerance), i.e. ``mean >= mu`` for ``at_least``.
* A row whose mean is NaN (a failed point) is never comparable.
* ``monotone=True`` asks for the smallest ratio from which EVERY larger grid ratio is
  comparable too (robust to one lucky small ratio); the paper's rule is the default
  ``monotone=False``.

Ratios are fractions in (0, 1): 0.001 = 0.1 %. The full data (ratio 1) is always a
separate run, so it is not part of a grid.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional, Sequence

PAPER_RATIOS: tuple[float, ...] = (
    0.0002, 0.0004, 0.001, 0.003, 0.005, 0.01, 0.03, 0.05, 0.08, 0.1,
    0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
)
"""The paper's grid {0.02, 0.04, 0.1, 0.3, 0.5, 1, 3, 5, 8, 10, 15, 20, ..., 90} % as fractions."""

RULES: tuple[str, ...] = ("at_least", "within")
"""Valid comparability rules."""

_TOL = 1e-9


def validate_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated grid of kept fractions; each must lie in (0, 1).

    Raises:
      ValueError: empty grid, a non-finite ratio, or one outside (0, 1) (with a hint
        when the grid looks like percentages, and when it contains the full data 1.0).
    """
    values = [float(r) for r in ratios]
    if not values:
        raise ValueError("empty ratio grid: give at least one kept fraction in (0, 1), "
                         "e.g. ratios=(0.01, 0.05, 0.1)")
    bad = [r for r in values if not math.isfinite(r) or r <= 0.0 or r >= 1.0]
    if bad:
        hint = ""
        if any(r > 1.0 for r in bad if math.isfinite(r)):
            hint = " (ratios are fractions, not percent: 5 % is 0.05)"
        elif any(r == 1.0 for r in bad):
            hint = " (the full-data run, ratio 1, is always made separately: leave it out)"
        raise ValueError(f"ratios must lie in (0, 1); got {sorted(bad)}{hint}")
    return tuple(sorted(set(values)))


@dataclasses.dataclass(frozen=True)
class GammaResult:
    """Outcome of :func:`critical_ratio`.

    Attributes:
      gamma: critical sample ratio (fraction); 1.0 when no grid ratio is comparable.
      found: True when some grid ratio is comparable.
      comparable: one bool per row, in ascending ratio order.
      ratios: the grid, ascending.
      low, high: the comparability band ``[mu - sigma, mu + sigma]`` (``high`` is
        +inf for the ``at_least`` rule).
      rule: the rule used.
    """

    gamma: float
    found: bool
    comparable: tuple[bool, ...]
    ratios: tuple[float, ...]
    low: float
    high: float
    rule: str

    def to_dict(self) -> dict:
        """JSON-friendly dict (``high`` = None when unbounded)."""
        d = dataclasses.asdict(self)
        d["high"] = None if math.isinf(self.high) else self.high
        d["comparable"] = list(self.comparable)
        d["ratios"] = list(self.ratios)
        return d


def _row_value(row, field: str) -> float:
    if isinstance(row, Mapping):
        return float(row[field])
    if isinstance(row, (tuple, list)):
        idx = {"ratio": 0, "accuracy_mean": 1, "accuracy_std": 2}[field]
        return float(row[idx])
    return float(getattr(row, field))


def critical_ratio(
    full_mean: float,
    full_std: float,
    rows: Sequence,
    *,
    rule: str = "at_least",
    monotone: bool = False,
) -> GammaResult:
    """Critical sample ratio from a full-data result and a sweep table.

    Args:
      full_mean: mu, mean full-data accuracy (percent or [0, 1], same unit as rows).
      full_std: sigma >= 0, standard deviation over the full-data repeats.
      rows: one entry per grid ratio: a mapping with ``ratio`` and ``accuracy_mean``
        (``accuracy_std`` is not used by the rule), or a ``(ratio, mean, std)`` tuple.
        Any order; ratios must be distinct and lie in (0, 1).
      rule: ``"at_least"`` (``mean >= mu - sigma``, default) or ``"within"``
        (``|mean - mu| <= sigma``); see the module docstring.
      monotone: require every larger grid ratio to be comparable as well.

    Returns:
      :class:`GammaResult`.

    Raises:
      ValueError: empty table, duplicate or out-of-range ratios, unknown rule,
        non-finite mu or negative / non-finite sigma.
    """
    if rule not in RULES:
        raise ValueError(f"unknown gamma rule {rule!r}; valid: {', '.join(RULES)}")
    if not math.isfinite(full_mean):
        raise ValueError(f"full-data mean accuracy must be finite, got {full_mean}")
    if not math.isfinite(full_std) or full_std < 0:
        raise ValueError(f"full-data std must be finite and >= 0, got {full_std}")
    if len(rows) == 0:
        raise ValueError("empty sweep table: no ratio rows to compare with the full data")
    table = sorted(((_row_value(r, "ratio"), _row_value(r, "accuracy_mean")) for r in rows))
    ratios = tuple(r for r, _ in table)
    if len(set(ratios)) != len(ratios):
        raise ValueError(f"duplicate ratios in the sweep table: {list(ratios)}")
    validate_ratios(ratios)
    low = full_mean - full_std - _TOL
    high = full_mean + full_std + _TOL if rule == "within" else math.inf
    comparable = tuple(bool(math.isfinite(m) and low <= m <= high) for _, m in table)
    gamma: Optional[float] = None
    if monotone:
        for i in range(len(table)):
            if all(comparable[i:]):
                gamma = ratios[i]
                break
    else:
        gamma = next((r for r, ok in zip(ratios, comparable) if ok), None)
    return GammaResult(
        gamma=1.0 if gamma is None else gamma,
        found=gamma is not None,
        comparable=comparable,
        ratios=ratios,
        low=full_mean - full_std,
        high=full_mean + full_std if rule == "within" else math.inf,
        rule=rule,
    )


def format_ratio(ratio: float) -> str:
    """Ratio as the paper prints it: ``0.0004 -> '0.04%'``, ``0.1 -> '10%'``, ``1 -> '100%'``."""
    pct = 100.0 * float(ratio)
    text = f"{pct:.4f}".rstrip("0").rstrip(".")
    return f"{text}%"


__all__ = ["GammaResult", "PAPER_RATIOS", "RULES", "critical_ratio", "format_ratio", "validate_ratios"]
