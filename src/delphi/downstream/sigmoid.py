"""Step 2 of the downstream forecast: a sigmoid from a soft metric to accuracy.

    acc(x) = a / (1 + exp(−k·(x − x0))) + b

fitted by least squares (scipy `least_squares`, trust-region reflective, from a small grid of
starts) with bounds b ∈ [floor, 1] (`floor`: the chance floor, 0 by default; `fix_floor` pins b
to it) and 0 ≤ a ≤ 1 − b, enforced exactly by fitting a = s·(1 − b) with s ∈ [0, 1]. The sign of
k follows the data: accuracy falls with a loss-like x (bpb: k < 0, so b is the high-loss floor)
and rises with a log-probability (k > 0). This is Marin's `fit_sigmoidal` form (delphi-notes
§7.5) and Bhagia et al.'s step 2, up to that sign convention.

The interval comes from a bootstrap over *pool models*: a model's rows (e.g. the checkpoints of
one ladder run) are resampled together, since they are not independent draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from delphi.errors import DelphiError


def sigmoid(x, a: float, b: float, k: float, x0: float):
    z = np.clip(-k * (np.asarray(x, dtype=float) - x0), -500, 500)
    return a / (1.0 + np.exp(z)) + b


@dataclass(frozen=True)
class SigmoidFit:
    a: float
    b: float
    k: float
    x0: float
    floor: float
    fix_floor: bool
    n_points: int
    n_models: int
    rmse: float
    # Bootstrap parameter draws [n, 4] (a, b, k, x0), over pool models.
    samples: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((0, 4)))

    def predict(self, x):
        y = sigmoid(x, self.a, self.b, self.k, self.x0)
        return float(y) if np.ndim(y) == 0 else y

    def sample_predictions(self, x) -> np.ndarray:
        """Predictions of every bootstrap draw: [n_draws] for scalar x, else [n_draws, len(x)]."""
        if len(self.samples) == 0:
            raise DelphiError("sigmoid fit has no bootstrap draws (fit with bootstrap > 0)")
        xs = np.atleast_1d(np.asarray(x, dtype=float))
        s = self.samples
        out = sigmoid(xs[None, :], s[:, :1], s[:, 1:2], s[:, 2:3], s[:, 3:4])
        return out[:, 0] if np.ndim(x) == 0 else out

    def interval(self, x, confidence: float = 0.95):
        tail = 100 * (1 - confidence) / 2
        lo, hi = np.percentile(self.sample_predictions(x), [tail, 100 - tail], axis=0)
        return (float(lo), float(hi)) if np.ndim(x) == 0 else (lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"form": "acc = a / (1 + exp(-k (x - x0))) + b", "a": self.a, "b": self.b, "k": self.k,
                "x0": self.x0, "floor": self.floor, "fix_floor": self.fix_floor, "n_points": self.n_points,
                "n_models": self.n_models, "rmse": self.rmse, "bootstrap": int(len(self.samples))}


def _fit_once(x: np.ndarray, y: np.ndarray, sign: float, floor: float, fix_floor: bool,
              starts: list[np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    from scipy.optimize import least_squares

    span = max(float(np.ptp(x)), 1e-6)
    kmax = 200.0 / span
    # Free parameters: s ∈ [0,1] (a = s(1-b)), b (unless pinned to the floor), |k|, x0.
    lo = [0.0, floor, 1e-6 / span, float(x.min()) - 3 * span]
    hi = [1.0, 1.0, kmax, float(x.max()) + 3 * span]
    free = [0, 2, 3] if fix_floor else [0, 1, 2, 3]
    lo, hi = np.array(lo)[free], np.array(hi)[free]

    def unpack(p):
        full = np.array([0.0, floor, 0.0, 0.0])
        full[free] = p
        s, b, kk, x0 = full
        return s * (1 - b), b, sign * kk, x0

    def resid(p):
        a, b, k, x0 = unpack(p)
        return sigmoid(x, a, b, k, x0) - y

    if starts is None:
        b0 = floor if fix_floor else max(floor, min(float(y.min()), 0.99))
        s0 = float(np.clip((y.max() - b0) / max(1 - b0, 1e-6), 0.05, 0.95))
        starts = [np.array([s0, b0, kq / span, q]) for kq in (1.0, 4.0, 16.0)
                  for q in np.quantile(x, [0.1, 0.5, 0.9])]
        starts += [np.array([0.9, b0, 4.0 / span, float(np.median(x))])]
    starts = [np.asarray(p0, dtype=float)[free] for p0 in starts]
    best, best_cost = None, np.inf
    for p0 in starts:
        p0 = np.clip(p0, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        try:
            r = least_squares(resid, p0, bounds=(lo, hi), method="trf", x_scale="jac", ftol=1e-12, xtol=1e-12,
                              gtol=1e-12, max_nfev=3000)
        except ValueError:
            continue
        if r.cost < best_cost:
            best, best_cost = r.x, r.cost
    if best is None:
        raise DelphiError("sigmoid fit failed to converge from any start; check the pool's soft/hard columns")
    return np.array(unpack(best)), best_cost


def fit_sigmoid(x: Sequence[float], y: Sequence[float], *, groups: Sequence[Any] | None = None,
                floor: float | None = None, fix_floor: bool = False, bootstrap: int = 1000, seed: int = 0,
                increasing: bool | None = None, anchors: Sequence[tuple[float, float]] = ()) -> SigmoidFit:
    """Fit acc = a/(1+exp(−k(x−x0))) + b to pool points (x soft, y hard).

    `groups`: the pool model of each row (default: each row its own model); the bootstrap
    resamples models. `floor`: lower bound for b (e.g. chance accuracy; default 0), pinned with
    `fix_floor`. `increasing`: whether accuracy rises with x (default: from the data's rank
    correlation). `anchors`: fixed extra points, e.g. (0, 1.0) for "zero loss is perfect
    accuracy" (Bhagia et al.), included in every bootstrap draw.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise DelphiError("sigmoid fit: soft and hard metrics must be 1-D and of equal length")
    ok = np.isfinite(x) & np.isfinite(y)
    groups_arr = np.asarray(groups if groups is not None else np.arange(len(x)), dtype=object)
    if len(groups_arr) != len(x):
        raise DelphiError("sigmoid fit: groups must have one entry per point")
    x, y, groups_arr = x[ok], y[ok], groups_arr[ok]
    uniq = list(dict.fromkeys(groups_arr.tolist()))
    if len(x) < 4 or len(uniq) < 2:
        raise DelphiError(f"sigmoid fit needs at least 4 points from 2 pool models, got {len(x)} from {len(uniq)}")
    if np.any((y < 0) | (y > 1)):
        raise DelphiError("sigmoid fit: the hard metric must be an accuracy in [0, 1]")
    floor = 0.0 if floor is None else float(floor)
    if not 0 <= floor < 1:
        raise DelphiError(f"sigmoid fit: floor must be in [0, 1), got {floor}")
    if increasing is None:
        from scipy.stats import spearmanr

        rho = spearmanr(x, y).statistic if len(set(x)) > 1 else 0.0
        increasing = bool(rho >= 0)
    sign = 1.0 if increasing else -1.0
    ax = np.array([p[0] for p in anchors], dtype=float)
    ay = np.array([p[1] for p in anchors], dtype=float)

    params, cost = _fit_once(np.concatenate([x, ax]), np.concatenate([y, ay]), sign, floor, fix_floor)
    rmse = float(np.sqrt(np.mean((sigmoid(x, *params) - y) ** 2)))

    samples = np.zeros((0, 4))
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        members = {g: np.flatnonzero(groups_arr == g) for g in uniq}
        a, b, k, x0 = params
        # Warm start from the full fit (and one generic start) keeps each refit cheap.
        s_full = a / max(1 - b, 1e-12)
        warm = [np.array([s_full, b, abs(k), x0])]
        draws = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(uniq), size=len(uniq))
            idx = np.concatenate([members[uniq[i]] for i in pick])
            if len(np.unique(x[idx])) < 3:
                continue
            p, _ = _fit_once(np.concatenate([x[idx], ax]), np.concatenate([y[idx], ay]), sign, floor, fix_floor,
                             starts=warm)
            draws.append(p)
        samples = np.array(draws) if draws else np.zeros((0, 4))
    return SigmoidFit(a=float(params[0]), b=float(params[1]), k=float(params[2]), x0=float(params[3]), floor=floor,
                      fix_floor=fix_floor, n_points=int(len(x)), n_models=len(uniq), rmse=rmse, samples=samples)
