"""Critical sample ratio rule (gold.experiments.gamma) on hand-made tables."""

import math

import pytest

from gold.experiments import gamma as g


def rows(*triples):
    return [{"ratio": r, "accuracy_mean": m, "accuracy_std": s} for r, m, s in triples]


def test_paper_grid():
    assert len(g.PAPER_RATIOS) == 19
    assert g.PAPER_RATIOS[0] == 0.0002 and g.PAPER_RATIOS[-1] == 0.9
    assert list(g.PAPER_RATIOS) == sorted(g.PAPER_RATIOS)
    assert g.validate_ratios(g.PAPER_RATIOS) == g.PAPER_RATIOS


def test_smallest_comparable_ratio_paper_fig2_like():
    # CIFAR-10 DC IPC 1 random (Table 14): full 28.3 +- 0.5 -> gamma(rand) = 10 %.
    table = rows((0.01, 25.6, 0.6), (0.03, 27.6, 0.8), (0.05, 27.6, 0.6), (0.1, 28.2, 0.3),
                 (0.2, 28.5, 0.4), (0.3, 28.7, 0.3))
    res = g.critical_ratio(28.3, 0.5, table)
    assert res.gamma == 0.1 and res.found
    assert res.comparable == (False, False, False, True, True, True)
    assert g.critical_ratio(28.3, 0.5, table, rule="within").gamma == 0.1


def test_better_than_full_counts_for_at_least_but_not_within():
    # Loss selection beats the full data (Table 14 loss row, full 28.3 +- 0.5).
    table = rows((0.01, 29.7, 0.1), (0.03, 29.7, 0.0), (0.3, 28.6, 0.2))
    assert g.critical_ratio(28.3, 0.5, table).gamma == 0.01
    strict = g.critical_ratio(28.3, 0.5, table, rule="within")
    assert strict.gamma == 0.3 and strict.comparable == (False, False, True)


def test_unsorted_rows_tuples_and_boundary():
    table = [(0.5, 27.8, 0.1), (0.05, 26.0, 0.1), (0.2, 27.5, 0.1)]
    res = g.critical_ratio(28.0, 0.5, table)  # band low = 27.5, inclusive
    assert res.ratios == (0.05, 0.2, 0.5) and res.gamma == 0.2


def test_none_comparable_gives_one_not_found():
    res = g.critical_ratio(90.0, 0.2, rows((0.01, 80.0, 1.0), (0.1, 85.0, 1.0)))
    assert res.gamma == 1.0 and not res.found and res.comparable == (False, False)


def test_zero_sigma_and_nan_rows():
    res = g.critical_ratio(50.0, 0.0, rows((0.01, float("nan"), 0.0), (0.1, 49.99, 0.0), (0.2, 50.0, 0.0)))
    assert res.gamma == 0.2 and res.comparable == (False, False, True)


def test_monotone_option_skips_an_isolated_lucky_ratio():
    table = rows((0.01, 30.0, 0.1), (0.05, 20.0, 0.1), (0.1, 29.0, 0.1), (0.2, 29.5, 0.1))
    assert g.critical_ratio(29.5, 0.5, table).gamma == 0.01
    assert g.critical_ratio(29.5, 0.5, table, monotone=True).gamma == 0.1


def test_to_dict_is_jsonable():
    d = g.critical_ratio(1.0, 0.1, rows((0.5, 1.0, 0.0))).to_dict()
    assert d["high"] is None and d["gamma"] == 0.5 and d["comparable"] == [True]


@pytest.mark.parametrize("bad, match", [
    ([], "empty ratio grid"),
    ([0.0, 0.1], r"lie in \(0, 1\)"),
    ([-0.1], r"lie in \(0, 1\)"),
    ([5, 10], "not percent"),
    ([0.5, 1.0], "full-data run"),
    ([float("nan")], r"lie in \(0, 1\)"),
])
def test_validate_ratios_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        g.validate_ratios(bad)


def test_validate_ratios_sorts_and_dedupes():
    assert g.validate_ratios([0.3, 0.1, 0.3]) == (0.1, 0.3)


def test_critical_ratio_errors():
    with pytest.raises(ValueError, match="empty sweep table"):
        g.critical_ratio(1.0, 0.1, [])
    with pytest.raises(ValueError, match="duplicate"):
        g.critical_ratio(1.0, 0.1, rows((0.1, 1, 0), (0.1, 1, 0)))
    with pytest.raises(ValueError, match="unknown gamma rule"):
        g.critical_ratio(1.0, 0.1, rows((0.1, 1, 0)), rule="nope")
    with pytest.raises(ValueError, match="std"):
        g.critical_ratio(1.0, -0.1, rows((0.1, 1, 0)))
    with pytest.raises(ValueError, match="finite"):
        g.critical_ratio(math.nan, 0.1, rows((0.1, 1, 0)))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        g.critical_ratio(1.0, 0.1, rows((1.5, 1, 0)))


def test_format_ratio():
    assert g.format_ratio(0.0004) == "0.04%"
    assert g.format_ratio(0.1) == "10%"
    assert g.format_ratio(1.0) == "100%"
    assert g.format_ratio(0.005) == "0.5%"
