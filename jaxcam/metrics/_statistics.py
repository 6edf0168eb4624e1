"""Statistics of per-image values: Spearman's rank correlation and the mean with a
percentile bootstrap interval."""

from __future__ import annotations

import numpy as np

from jaxcam._checks import check_positive_int

def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of v's entries along the last axis, ties sharing their mean rank."""
    out = np.empty(v.shape, np.float64)
    for idx in np.ndindex(v.shape[:-1]):
        row = v[idx]
        order = np.argsort(row, kind="stable")
        _, inverse, counts = np.unique(row[order], return_inverse=True, return_counts=True)
        mean_rank = np.cumsum(counts) - (counts - 1) / 2
        out[idx + (order,)] = mean_rank[inverse]
    return out


def spearman(a, b) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (B, h, w): the Pearson correlation
    of their average ranks; 0 where either map is constant."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"spearman compares maps of one shape, got {np.shape(a)} and "
                         f"{np.shape(b)}")
    ra = _average_ranks(np.asarray(a, np.float64).reshape(len(a), -1))
    rb = _average_ranks(np.asarray(b, np.float64).reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def summary(values, *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of per-image values with a percentile bootstrap interval.

    Returns:
      ``dict(mean, low, high, n, level)`` as Python floats (NaN-free: non-finite values
      are an error naming them).
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("summary of no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values {np.nonzero(~np.isfinite(v))[0][:8].tolist()} are not "
                         "finite")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    resamples = check_positive_int("resamples", resamples)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": float(v.mean()), "low": float(low), "high": float(high),
            "n": int(v.size), "level": level}
