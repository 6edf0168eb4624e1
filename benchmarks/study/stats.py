"""Paired statistics of the study: differences with bootstrap intervals, Wilcoxon's
signed-rank test, and how two channel weightings differ in sign and order.

Everything here is NumPy on per-image values; no SciPy at run time (the tests compare
with it).
"""

from __future__ import annotations

import math

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks, 1-based (ties share their mean rank)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _exact_null(n: int) -> np.ndarray:
    """Counts of each value 0 .. n(n+1)/2 of the signed-rank statistic under the null,
    ranks 1 .. n without ties (the number of subsets of {1..n} with each sum)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, np.float64)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts


def wilcoxon(differences, *, exact_below: int = 50) -> dict:
    """Wilcoxon's signed-rank test of paired differences, two-sided.

    Zero differences are dropped (Wilcoxon's rule). With fewer than ``exact_below``
    non-zero differences and no ties among their magnitudes the p-value is exact;
    otherwise it is the normal approximation with the tie correction of the variance and
    no continuity correction (SciPy's ``wilcoxon`` defaults).

    Returns:
      ``dict(statistic, p, n, method)``: the smaller of the positive and negative rank
      sums, the p-value, the number of non-zero differences and "exact" or "normal".
      With no non-zero difference p is 1.
    """
    d = np.asarray(differences, np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite")
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return {"statistic": 0.0, "p": 1.0, "n": 0, "method": "none"}
    magnitude = np.abs(d)
    ranks = _ranks(magnitude)
    plus = float(ranks[d > 0].sum())
    minus = float(ranks[d < 0].sum())
    statistic = min(plus, minus)
    ties = len(np.unique(magnitude)) < n
    if n < exact_below and not ties:
        counts = _exact_null(n)
        total = counts.sum()
        k = int(round(statistic))
        p = min(1.0, 2 * counts[:k + 1].sum() / total)
        return {"statistic": statistic, "p": float(p), "n": n, "method": "exact"}
    mean = n * (n + 1) / 4
    _, tie_counts = np.unique(magnitude, return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - float((tie_counts**3 - tie_counts).sum()) / 48
    z = (statistic - mean) / math.sqrt(variance) if variance > 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return {"statistic": statistic, "p": float(min(1.0, p)), "n": n, "method": "normal"}


def bootstrap_mean(values, *, level: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> dict:
    """Mean with a percentile bootstrap interval: ``dict(mean, low, high, n)``."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(v.mean()), "low": float(low), "high": float(high), "n": int(v.size)}


def paired(a, b, *, higher_is_better: bool = True) -> dict:
    """The paired difference a - b: its mean with a bootstrap interval, Wilcoxon's test,
    and a verdict: which of a and b is better, or "no measurable difference" when the
    interval contains 0 or p >= 0.05."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out = {"difference": bootstrap_mean(diff), "wilcoxon": wilcoxon(diff)}
    lo, hi = out["difference"]["low"], out["difference"]["high"]
    if out["wilcoxon"]["p"] >= 0.05 or lo <= 0 <= hi:
        verdict = "no measurable difference"
    else:
        a_better = (out["difference"]["mean"] > 0) == higher_is_better
        verdict = "first better" if a_better else "second better"
    out["verdict"] = verdict
    return out


def weight_changes(exact: np.ndarray, approx: np.ndarray) -> dict:
    """How two channel weightings (B, K) differ, per image: the share of channels whose
    weight changes sign, the share of channel pairs whose order flips (Kendall's
    distance, ties in either not counted as flips), and the relative L2 difference."""
    exact, approx = np.asarray(exact, np.float64), np.asarray(approx, np.float64)
    sign = np.mean(np.sign(exact) != np.sign(approx), axis=1)
    de = exact[:, :, None] - exact[:, None, :]
    da = approx[:, :, None] - approx[:, None, :]
    k = exact.shape[1]
    flips = np.sum((de * da) < 0, axis=(1, 2)) / 2
    order = flips / max(1, k * (k - 1) // 2)
    norm = np.linalg.norm(approx, axis=1)
    relative = np.where(norm > 0, np.linalg.norm(exact - approx, axis=1) / np.where(
        norm > 0, norm, 1), 0.0)
    return {"sign_changes": sign, "order_flips": order, "relative_l2": relative}


def in_bin(p: float, low: float, high: float) -> bool:
    """Whether ``p`` lies in [low, high), the last bin (high 1) closed."""
    return low <= p < high or (high == 1.0 and p == 1.0)
