"""Nonparametric bootstrap helpers shared by the fits (and by downstream soft-metric laws).

A resample with replacement is represented by its count vector: row b, column i says how often
point i was drawn. A weighted objective with these counts equals the objective on the resampled
data, so every resample of a fit can be refitted in one vectorised batch.
"""

from __future__ import annotations

import numpy as np

from delphi.errors import DelphiError


def resample_weights(n: int, n_resamples: int, *, seed: int = 0, min_distinct: int = 1) -> np.ndarray:
    """Counts [n_resamples, n] of `n_resamples` resamples of n points with replacement.

    Resamples with fewer than `min_distinct` distinct points are redrawn (a 3-parameter law is
    not identified from fewer than 4 distinct points), so the result is conditional on that.
    Deterministic for a given seed.
    """
    if n_resamples < 1:
        raise DelphiError(f"bootstrap: the number of resamples must be at least 1, got {n_resamples}")
    if n < min_distinct:
        raise DelphiError(f"bootstrap: need at least {min_distinct} distinct points, got {n}")
    rng = np.random.default_rng(seed)
    out = np.empty((0, n), dtype=np.int64)
    while len(out) < n_resamples:
        want = n_resamples - len(out)
        idx = rng.integers(0, n, size=(2 * want + 16, n))
        counts = np.zeros((len(idx), n), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(len(idx)), n), idx.reshape(-1)), 1)
        counts = counts[(counts > 0).sum(axis=1) >= min_distinct]
        out = np.concatenate([out, counts[:want]])
    return out


def percentile_interval(samples: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval, e.g. (2.5%, 97.5%) for confidence 0.95; NaN samples ignored."""
    if not 0 < confidence < 1:
        raise DelphiError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=axis)
    return lo, hi
