"""The study's statistics against SciPy: Wilcoxon's signed-rank test (exact and normal),
average ranks, and the weight-change shares on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from benchmarks.study import stats


@pytest.mark.parametrize("n, seed, shift", [(5, 0, 0.0), (12, 1, 0.4), (30, 2, -0.2),
                                            (49, 3, 0.1)])
def test_exact_wilcoxon_equals_scipy(n, seed, shift):
    d = np.random.default_rng(seed).normal(shift, 1, n)
    got = stats.wilcoxon(d)
    want = scipy.stats.wilcoxon(d, method="exact")
    assert got["method"] == "exact" and got["statistic"] == want.statistic
    assert got["p"] == pytest.approx(want.pvalue, rel=1e-12)


@pytest.mark.parametrize("n, seed, ties", [(80, 0, False), (200, 1, False), (60, 2, True)])
def test_normal_wilcoxon_equals_scipy(n, seed, ties):
    d = np.random.default_rng(seed).normal(0.15, 1, n)
    if ties:
        d = np.round(d, 1)                     # ties among the magnitudes, and zeros
    got = stats.wilcoxon(d)
    want = scipy.stats.wilcoxon(d, method="approx", correction=False, zero_method="wilcox")
    assert got["method"] == "normal"
    assert got["statistic"] == want.statistic
    assert got["p"] == pytest.approx(want.pvalue, rel=1e-10)


def test_ranks_are_scipys_average_ranks():
    v = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 0.5])
    np.testing.assert_array_equal(stats._ranks(v), scipy.stats.rankdata(v))


def test_paired_verdicts():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 100)
    better = stats.paired(base + 0.5 + rng.normal(0, 0.1, 100), base)
    assert better["verdict"] == "first better" and better["wilcoxon"]["p"] < 1e-6
    worse = stats.paired(base - 0.5, base, higher_is_better=False)
    assert worse["verdict"] == "first better"            # lower is better: a is lower
    same = stats.paired(base, base)
    assert same["verdict"] == "no measurable difference" and same["wilcoxon"]["p"] == 1.0


def test_weight_changes_on_hand_made_weights():
    exact = np.array([[1.0, 2.0, -3.0, 4.0]])
    approx = np.array([[1.0, -2.0, -3.0, 5.0]])   # one sign; of 6 pairs only (0, 1) flips
    out = stats.weight_changes(exact, approx)
    assert out["sign_changes"][0] == 0.25
    assert out["order_flips"][0] == pytest.approx(1 / 6)
    assert out["relative_l2"][0] == pytest.approx(np.sqrt(17) / np.sqrt(1 + 4 + 9 + 25))
