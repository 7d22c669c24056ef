"""The loss law L*(C) = E + A·C^(-alpha) through compute-optimal points, with bootstrap intervals.

General: any positive metric that decreases with compute (loss in nats, bits-per-byte,
-log-prob of the right answer, ...). Objective, in the metric's own units:

    minimise_{E, A, alpha}  sum_i w_i (y_i - E - A·C_i^(-alpha))^2,   0 <= E < min_i y_i,  A >= 0

For fixed alpha the law is linear in (E, A), so (E, A) are solved exactly (weighted normal
equations, E clamped to its interval) and only alpha is searched ("variable projection"):
starts on a log grid of ALPHA_GRID_SIZE exponents in [ALPHA_MIN, ALPHA_MAX], then golden-section
refinement between the best start's neighbours to a bracket of ALPHA_XTOL (relative). Every
bootstrap resample and every leave-one-out refit is a row of one batch, so 2,000 resamples take
milliseconds. `asymptote=False` fits the pure power law (E = 0) with the same objective.

Compute is divided by the geometric mean of the data's compute (C0) inside the fit for
conditioning; A is reported for C in FLOPs: A = A0·C0^alpha.

Intervals. Resample b refits the law to

    y*_b = ŷ + δ_b + η_b

where ŷ is the fitted law at the points, δ_b the vertex deviations (each point's optimum
refitted on its bucket's runs resampled with replacement, minus the optimum itself:
`optima_resamples`, from `IsoFlopFit.bootstrap_optima`; zero when only the optima are known)
and η_b normal noise of scale σ_b, drawn per resample as σ_b² = s²·(n−p)/χ²_{n−p} with
s² = SSE/(n−p) (a parametric bootstrap: resampling the residuals themselves ignores that their
scale is estimated from n−p = 1–3 degrees of freedom, and gave 95% intervals that covered far
less often). The interval at C is the
percentile interval of law_b(C) + ν_b, where ν_b is one more draw of the same noise (a vertex
deviation of a random bucket plus a normal draw of scale σ_b): a prediction interval for the optimum a
new budget will show, which is what a held-out run or a backtest compares with. `interval(C,
kind="law")` leaves ν out (the band of the law itself).

Ceiling form (`ceiling=H`): 1/L = 1/H + C^alpha/A, i.e. the power law A·C^(-alpha) capped
smoothly by H, the loss of a model that has learned nothing but the data's unigram frequencies
(`delphi.data.loader.unigram_baseline`). Far below H it is the pure power law; near H the curve
bends towards it, the "small-data region" of Hestness et al. 2017 where learning curves start
flat and steepen before they follow a power law. At CPU scale (1e11–1e13 FLOPs, losses 4.4–3.1
nats against a unigram loss of 6.2) the optima are still in that bend: their log-log slope grows
from 0.064 to 0.085 between the decades 1e11–1e12 and 1e12–1e13 while 1/(1/L − 1/H) keeps one
exponent (0.189, 0.191; benchmarks/forecast.md), and a law that can only flatten
(E + A·C^-alpha) extrapolates them 6% too high. Two parameters (A, alpha)
are fitted by Gauss–Newton with Levenberg damping, every resample a row of one batch; H is
measured, not fitted.

The earlier scheme resampled the optima themselves, with at least 4 distinct points per
resample: with 4 optima every resample was the full set (a zero-width interval) and with 5 it
barely moved. The law's residuals already contain the vertex noise that δ adds, so with δ the
scale s² is reduced by the vertices' mean variance (robust: 1.4826·MAD of each point's δ) and
η carries only the scatter in excess of it (the form's misfit). The backtest
(`delphi fit backtest`) measures how often the intervals cover. An interval that would still have zero width (points exactly on the law, vertices without
spread) is not reported: `note` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from delphi.errors import DelphiError
from delphi.fit import bootstrap as bs
from delphi.fit import flags as F
from delphi.fit.flags import Flag
from delphi.files import schema_version

# `LossLaw.to_dict()["schema_version"]`: 2 adds `asymptote`, `vertex_resampling` and, with
# `to_dict(draws=True)`, the bootstrap and leave-one-out parameter draws the intervals are read
# from (a dict without the field is version 1); see docs/artefacts.md.
SCHEMA_VERSION = 2
_FORMS = {"1/(1/H + C^alpha/A)", "E + A*C^-alpha", "A*C^-alpha"}

ALPHA_MIN, ALPHA_MAX, ALPHA_GRID_SIZE, ALPHA_XTOL = 1e-3, 3.0, 241, 1e-10
MIN_BOOTSTRAP_POINTS = 4  # the 3-parameter law needs a residual degree of freedom to resample


def _solve_linear(x: np.ndarray, y: np.ndarray, W: np.ndarray, e_max: np.ndarray, asymptote: bool):
    """Best (E, A0) for each row's x = (C/C0)^(-alpha): x [R, n], y [R, n], W [R, n], e_max [R].

    The profile objective is a convex quadratic in E, so the constrained optimum is the clamp of
    the unconstrained one; A0 then follows from E (and is clamped at 0: a decreasing law).
    """
    Sw, Sx, Sy = W.sum(1), (W * x).sum(1), (W * y).sum(1)
    Sxx, Sxy = (W * x * x).sum(1), (W * x * y).sum(1)
    if asymptote:
        det = Sw * Sxx - Sx * Sx
        with np.errstate(divide="ignore", invalid="ignore"):
            A0 = (Sw * Sxy - Sx * Sy) / det
            E = (Sy - A0 * Sx) / Sw
        E = np.clip(np.nan_to_num(E, nan=0.0), 0.0, e_max)
    else:
        E = np.zeros_like(Sw)
    with np.errstate(divide="ignore", invalid="ignore"):
        A0 = np.maximum((Sxy - E * Sx) / Sxx, 0.0)
    resid = y - E[:, None] - A0[:, None] * x
    return E, A0, (W * resid * resid).sum(1)


def _fit_rows(logc: np.ndarray, y: np.ndarray, W: np.ndarray, asymptote: bool):
    """Fit every row of weights W [R, n] (and values y [n] or [R, n]) at once.
    Returns E, A0, alpha, sse, at_bound [R]."""
    R = W.shape[0]
    y = np.broadcast_to(y, W.shape)
    e_max = np.where(W > 0, y, np.inf).min(axis=1) * (1 - 1e-9)  # E < min of the points in this row

    def profile(alpha):  # alpha [R] -> sse [R]
        return _solve_linear(np.exp(-alpha[:, None] * logc[None, :]), y, W, e_max, asymptote)

    grid = np.geomspace(ALPHA_MIN, ALPHA_MAX, ALPHA_GRID_SIZE)
    sse_grid = np.stack([profile(np.full(R, a))[2] for a in grid], axis=1)  # [R, G]
    k = np.nanargmin(sse_grid, axis=1)
    at_bound = (k == 0) | (k == len(grid) - 1)
    lo = np.log(grid[np.maximum(k - 1, 0)])
    hi = np.log(grid[np.minimum(k + 1, len(grid) - 1)])
    # Golden section on log(alpha) inside the bracket around the best start.
    phi = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
    f1, f2 = profile(np.exp(x1))[2], profile(np.exp(x2))[2]
    n_iter = int(math.ceil(math.log(ALPHA_XTOL / (2 * math.log(grid[1] / grid[0]))) / math.log(phi)))
    for _ in range(max(n_iter, 1)):
        left = f1 <= f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        new = np.where(left, hi - phi * (hi - lo), lo + phi * (hi - lo))
        x1, x2 = np.where(left, new, x2), np.where(left, x1, new)
        f_new = profile(np.exp(new))[2]
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
    alpha = np.exp((lo + hi) / 2)
    E, A0, sse = profile(alpha)
    return E, A0, alpha, sse, at_bound


def _fit_rows_ceiling(logc: np.ndarray, y: np.ndarray, W: np.ndarray, ceiling: float):
    """The ceiling form 1/L = 1/H + exp(alpha·x + b) (x = log(C/C0), A0 = exp(-b)) for every row of
    weights W [R, n] (values y [n] or [R, n]). Returns E (zeros), A0, alpha, sse, at_bound [R].

    Start: the form is linear after transforming, log(1/L − 1/H) = alpha·x + b (weighted least
    squares per row); then Gauss–Newton steps on the squared residuals in L, damped
    (Levenberg) whenever a step would not lower them."""
    R = W.shape[0]
    y = np.broadcast_to(y, W.shape)
    inv_h = 1.0 / ceiling
    z = np.log(np.maximum(1.0 / y - inv_h, 1e-12))
    Sw, Sx, Sz = W.sum(1), (W * logc).sum(1), (W * z).sum(1)
    Sxx, Sxz = (W * logc * logc).sum(1), (W * logc * z).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (Sw * Sxz - Sx * Sz) / (Sw * Sxx - Sx * Sx)
    alpha = np.clip(np.nan_to_num(alpha, nan=0.1), ALPHA_MIN, ALPHA_MAX)
    b = (Sz - alpha * Sx) / Sw

    def sse_of(alpha, b):
        f = 1.0 / (inv_h + np.exp(alpha[:, None] * logc[None, :] + b[:, None]))
        return (W * (y - f) ** 2).sum(1), f

    sse, f = sse_of(alpha, b)
    lam = np.full(R, 1e-3)
    for _ in range(200):
        g = np.exp(alpha[:, None] * logc[None, :] + b[:, None])
        jb = -(f * f) * g  # ∂f/∂b
        ja = jb * logc[None, :]  # ∂f/∂alpha
        r = y - f
        Haa, Hab, Hbb = (W * ja * ja).sum(1), (W * ja * jb).sum(1), (W * jb * jb).sum(1)
        ga, gb = (W * ja * r).sum(1), (W * jb * r).sum(1)
        Haa_d, Hbb_d = Haa * (1 + lam), Hbb * (1 + lam)
        det = Haa_d * Hbb_d - Hab * Hab
        with np.errstate(divide="ignore", invalid="ignore"):
            da = np.nan_to_num((Hbb_d * ga - Hab * gb) / det)
            db = np.nan_to_num((Haa_d * gb - Hab * ga) / det)
        a_new = np.clip(alpha + da, ALPHA_MIN, ALPHA_MAX)
        b_new = b + db
        sse_new, f_new = sse_of(a_new, b_new)
        better = sse_new < sse
        alpha, b = np.where(better, a_new, alpha), np.where(better, b_new, b)
        sse, f = np.where(better, sse_new, sse), np.where(better[:, None], f_new, f)
        lam = np.where(better, lam / 3, lam * 4)
        if np.all(lam > 1e12) or np.all(np.abs(da) + np.abs(db) < 1e-12):
            break
    at_bound = (alpha <= ALPHA_MIN * (1 + 1e-9)) | (alpha >= ALPHA_MAX * (1 - 1e-9))
    return np.zeros(R), np.exp(-b), alpha, sse, at_bound


@dataclass(frozen=True, eq=False)
class LossLaw:
    """L(C) = E + A·C^(-alpha) (E = 0 for the pure power law), C in FLOPs."""

    E: float
    A: float
    alpha: float
    sse: float  # the objective: weighted sum of squared residuals at the optimum
    rmse: float
    n_points: int
    asymptote: bool  # False: pure power law, E fixed at 0
    converged: bool  # alpha strictly inside the search range (else the optimum may lie beyond it)
    status: str
    E_at_upper_bound: bool  # E reached min(L): the law is flat at the data (a poorly identified fit)
    flops: tuple[float, ...] = field(repr=False, default=())
    values: tuple[float, ...] = field(repr=False, default=())
    confidence: float = 0.95
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)  # [n_boot, 3] (E, A, alpha)
    loo_params: np.ndarray | None = field(default=None, repr=False)  # [n_points, 3], row i drops point i
    seed: int = 0
    note: str | None = None  # why intervals are unavailable, when they are
    # Per resample: the noise of one new optimum (added for prediction intervals), the values the
    # law was refitted to, and whether vertex resamples of the buckets entered them.
    bootstrap_noise: np.ndarray | None = field(default=None, repr=False)  # [n_boot]
    bootstrap_values: np.ndarray | None = field(default=None, repr=False)  # [n_boot, n_points]
    vertex_resampling: bool = False
    # What is doubtful about the fit (`delphi.fit.flags`): the metric rising between budgets, E at
    # the lowest optimum, alpha at the edge of its search range.
    flags: tuple[Flag, ...] = ()
    # The ceiling form's H (1/L = 1/H + C^alpha/A; E = 0), None for E + A·C^-alpha.
    ceiling: float | None = None

    @property
    def form(self) -> str:
        if self.ceiling is not None:
            return "1/(1/H + C^alpha/A)"
        return "E + A*C^-alpha" if self.asymptote else "A*C^-alpha"

    def equation(self, digits: int = 4) -> str:
        """The fitted law with its numbers, e.g. "1/L*(C) = 1/6.1558 + C^0.1848/1598"."""
        if self.ceiling is not None:
            return f"1/L*(C) = 1/{self.ceiling:.{digits}f} + C^{self.alpha:.{digits}f}/{self.A:.4g}"
        if self.asymptote:
            return f"L*(C) = {self.E:.{digits}f} + {self.A:.4g}·C^-{self.alpha:.{digits}f}"
        return f"L*(C) = {self.A:.4g}·C^-{self.alpha:.{digits}f}"

    def predict(self, C) -> np.ndarray:
        C = np.asarray(C, dtype=float)
        if self.ceiling is not None:
            return 1.0 / (1.0 / self.ceiling + C ** self.alpha / self.A)
        return self.E + self.A * C ** (-self.alpha)

    def _predict_rows(self, params: np.ndarray, C) -> np.ndarray:  # [rows, *C.shape]
        C = np.asarray(C, dtype=float)
        E, A, al = (params[:, k].reshape((-1,) + (1,) * C.ndim) for k in range(3))
        if self.ceiling is not None:
            return 1.0 / (1.0 / self.ceiling + C[None] ** al / A)
        return E + A * C[None] ** (-al)

    def interval(self, C, kind: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval at C (2.5/97.5% for confidence 0.95).

        kind "prediction" (default): where the optimum loss measured at C should fall (the law's
        uncertainty plus one new optimum's noise); "law": the band of the law itself.
        NaN when the law has no bootstrap resamples (bootstrap=0, too few points, or points with
        no spread at all; `note` says which).
        """
        if kind not in ("prediction", "law"):
            raise DelphiError(f"loss law: interval kind must be 'prediction' or 'law', got {kind!r}")
        if self.bootstrap_params is None:
            nan = np.full(np.shape(C), np.nan)
            return nan, nan.copy()
        rows = self._predict_rows(self.bootstrap_params, C)
        if kind == "prediction" and self.bootstrap_noise is not None:
            rows = rows + self.bootstrap_noise.reshape((-1,) + (1,) * np.ndim(C))
        return bs.percentile_interval(rows, self.confidence, axis=0)

    def loo(self, C) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) of the prediction at C over the fits that each leave one point out (NaN with
        too few points to leave one out)."""
        if self.loo_params is None:
            nan = np.full(np.shape(C), np.nan)
            return nan, nan.copy()
        p = self._predict_rows(self.loo_params, C)
        return np.nanmin(p, axis=0), np.nanmax(p, axis=0)

    @property
    def n_params(self) -> int:
        return 3 if self.asymptote and self.ceiling is None else 2

    def predictions(self, C) -> list[dict]:
        """Rows {"flops", "loss", "ci_low", "ci_high", "loo_min", "loo_max"} (None where unavailable)."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if C.size == 0:  # nothing asked (e.g. `delphi fit loss-law` without --predict)
            return []
        pred = self.predict(C)
        lo = hi = mn = mx = [None] * len(C)
        if self.bootstrap_params is not None:
            lo, hi = self.interval(C)
        if self.loo_params is not None:
            mn, mx = self.loo(C)
        f = lambda v: None if v is None else float(v)  # noqa: E731
        return [{"flops": float(c), "loss": float(p), "ci_low": f(a), "ci_high": f(b), "loo_min": f(m1), "loo_max": f(m2)}
                for c, p, a, b, m1, m2 in zip(C, pred, lo, hi, mn, mx)]

    def to_dict(self, predict_at=None, *, draws: bool = False) -> dict:
        """The law as JSON. draws: also the parameter draws behind `interval` and `loo`
        (`bootstrap`, `loo`: columns E, A, alpha and the per-resample `noise`), so that
        `LossLaw.from_dict` rebuilds a law whose intervals equal this one's exactly."""
        d = {"schema_version": SCHEMA_VERSION,
             "E": self.E, "A": self.A, "alpha": self.alpha, "form": self.form, "ceiling": self.ceiling,
             "asymptote": self.asymptote, "vertex_resampling": self.vertex_resampling,
             "objective": "sum of squared residuals", "sse": self.sse, "rmse": self.rmse,
             "n_points": self.n_points, "converged": self.converged, "status": self.status,
             "E_at_upper_bound": self.E_at_upper_bound, "confidence": self.confidence,
             "n_bootstrap": 0 if self.bootstrap_params is None else int(len(self.bootstrap_params)),
             "interval": ("prediction interval: law refitted to resampled residuals"
                          + (" and resampled IsoFLOP vertices" if self.vertex_resampling else "")
                          + ", plus one new optimum's noise"),
             "seed": self.seed, "note": self.note, "points": [{"flops": c, "loss": v} for c, v in zip(self.flops, self.values)],
             "flags": [f.to_dict() for f in self.flags]}
        if predict_at is not None:
            d["predictions"] = self.predictions(predict_at)
        if draws:
            d["bootstrap"] = None if self.bootstrap_params is None else {
                **_columns(self.bootstrap_params),
                "noise": None if self.bootstrap_noise is None else _finite_list(self.bootstrap_noise)}
            d["loo"] = None if self.loo_params is None else _columns(self.loo_params)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LossLaw":
        """The inverse of `to_dict(draws=True)`: the same law, predictions and intervals. From a
        dict without draws (`to_dict()`, or version 1) the law predicts but has no intervals
        (`interval` and `loo` are NaN, `note` says so)."""
        schema_version(d, "loss law", SCHEMA_VERSION)
        form = d.get("form") or "E + A*C^-alpha"
        if form not in _FORMS:
            raise DelphiError(f"loss law: unknown form {form!r} (known: {', '.join(sorted(_FORMS))})")
        ceiling = None if d.get("ceiling") is None else float(d["ceiling"])
        boot, loo = d.get("bootstrap"), d.get("loo")
        note = d.get("note")
        if boot is None and loo is None and "bootstrap" not in d and int(d.get("n_bootstrap") or 0) > 0:
            note = "; ".join(filter(None, [note, "the bootstrap draws were not stored with this law"]))
        points = [p for p in d.get("points") or () if isinstance(p, dict)]
        noise = None if not isinstance(boot, dict) or boot.get("noise") is None else _array(boot["noise"])
        return cls(E=float(d.get("E") or 0.0), A=float(d["A"]), alpha=float(d["alpha"]), sse=_num(d.get("sse")),
                   rmse=_num(d.get("rmse")), n_points=int(d.get("n_points") or len(points)),
                   asymptote=bool(d.get("asymptote", form == "E + A*C^-alpha")),
                   converged=bool(d.get("converged", True)), status=str(d.get("status") or ""),
                   E_at_upper_bound=bool(d.get("E_at_upper_bound", False)),
                   flops=tuple(float(p["flops"]) for p in points), values=tuple(float(p["loss"]) for p in points),
                   confidence=float(d.get("confidence") or 0.95),
                   bootstrap_params=_params(boot) if isinstance(boot, dict) else None,
                   loo_params=_params(loo) if isinstance(loo, dict) else None, seed=int(d.get("seed") or 0),
                   note=note, bootstrap_noise=noise,
                   vertex_resampling=bool(d.get("vertex_resampling", "vertices" in str(d.get("interval") or ""))),
                   flags=tuple(Flag.from_dict(f) for f in d.get("flags") or ()), ceiling=ceiling)


def _finite_list(a) -> list:
    """Floats for JSON, non-finite ones as null."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).tolist()]


def _columns(params: np.ndarray) -> dict:
    p = np.asarray(params, dtype=float)
    return {"E": _finite_list(p[:, 0]), "A": _finite_list(p[:, 1]), "alpha": _finite_list(p[:, 2])}


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _params(cols: dict) -> np.ndarray:
    return np.stack([_array(cols["E"]), _array(cols["A"]), _array(cols["alpha"])], axis=1)


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _check(flops, values) -> tuple[np.ndarray, np.ndarray]:
    C = np.asarray(flops, dtype=float).reshape(-1)
    y = np.asarray(values, dtype=float).reshape(-1)
    if C.shape != y.shape:
        raise DelphiError(f"loss law: {C.size} compute values but {y.size} metric values")
    for name, a in (("flops", C), ("metric", y)):
        bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
        if bad.size:
            raise DelphiError(f"loss law: {name} must be positive and finite; point {int(bad[0])} has {a[bad[0]]!r}")
    return C, y


def fit_loss_law(flops, loss, *, bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95,
                 asymptote: bool = True, optima_resamples=None, ceiling: float | None = None) -> LossLaw:
    """Fit L(C) = E + A·C^(-alpha) (or A·C^(-alpha) with asymptote=False) to (compute, metric) points.

    bootstrap: resamples (see the module docstring), refitted in one batch; 0 disables intervals.
    optima_resamples: optional [R, n] resampled values of the points (row r, column i: point i's
    optimum refitted on its bucket's resampled runs; `IsoFlopFit.bootstrap_optima`), so the
    intervals include the vertices' uncertainty; row b % R serves resample b.
    ceiling: H of the ceiling form 1/L = 1/H + C^alpha/A (`asymptote` is then ignored: E = 0);
    every point must lie below it.
    With no more points than parameters there is no residual to resample: the law is still
    fitted, its intervals are NaN and `note` says why. Leave-one-out refits need more points than
    parameters too.
    """
    C, y = _check(flops, loss)
    if ceiling is not None:
        ceiling = _check_ceiling(C, y, ceiling)
        asymptote = False

    def fit_rows(logc, y, W):
        if ceiling is not None:
            return _fit_rows_ceiling(logc, y, W, ceiling)
        return _fit_rows(logc, y, W, asymptote)

    n_params = 3 if asymptote else 2
    if len(C) < n_params:
        raise DelphiError(f"loss law: need at least {n_params} points for {n_params} parameters, got {len(C)}")
    if len(np.unique(C)) < 2:
        raise DelphiError("loss law: all points have the same compute; need at least two budgets")
    c0 = float(np.exp(np.mean(np.log(C))))
    logc = np.log(C / c0)
    if np.polyfit(logc, y, 1)[0] >= 0:
        raise DelphiError("loss law: the metric does not decrease with compute (its trend against log C is flat "
                          "or rising); for a metric that rises with compute (e.g. log-probability) fit its negative")

    E, A0, al, sse, at_bound = fit_rows(logc, y, np.ones((1, len(y))))
    if not A0[0] > 0:
        raise DelphiError("loss law: the best fit is flat (A = 0): the metric does not decrease with compute")

    def to_flops_units(E, A0, al):  # A·C^-alpha = A0·(C/C0)^-alpha
        return np.stack([E, A0 * c0 ** al, al], axis=1)

    if bootstrap < 0:
        raise DelphiError(f"loss law: bootstrap must be >= 0, got {bootstrap}")
    delta = _vertex_deltas(optima_resamples, y)
    boot = noise = values = None
    notes = []
    min_points = n_params + 1
    if bootstrap and len(y) < min_points:
        notes.append(f"no bootstrap intervals: resamples need at least {min_points} points (more than the "
                     f"law's {n_params} parameters, so that a residual is left to resample) and there are {len(y)}")
    elif bootstrap:
        fitted = (1.0 / (1.0 / ceiling + np.exp(al[0] * logc) / A0[0]) if ceiling is not None
                  else E[0] + A0[0] * np.exp(-al[0] * logc))
        values, noise, why_none = _resampled_points(y, fitted, n_params, delta, bootstrap, seed, ceiling)
        if why_none:
            notes.append(why_none)
        else:
            boot = to_flops_units(*fit_rows(logc, values, np.ones_like(values))[:3])
    loo = None
    if len(y) > n_params:
        W = 1.0 - np.eye(len(y))
        loo = to_flops_units(*fit_rows(logc, y, W)[:3])
    else:
        notes.append(f"no leave-one-out spread: it needs more than {n_params} points")

    e_max = float(y.min() * (1 - 1e-9))
    E_top = bool(asymptote and E[0] >= e_max * (1 - 1e-12))
    status = ("alpha at the edge of the search range [%g, %g]" % (ALPHA_MIN, ALPHA_MAX) if at_bound[0]
              else "alpha bracketed to relative width %g" % ALPHA_XTOL)
    flags = rises_flags(C, y, "loss law")
    if E_top:
        flags.append(Flag(F.ASYMPTOTE_AT_DATA, f"the asymptote E = {E[0]:.5g} reached the lowest point "
                          f"({y.min():.5g}): the data do not fix E; the forecast leans on that point"))
    if at_bound[0]:
        flags.append(Flag(F.ALPHA_AT_BOUND, f"alpha = {al[0]:.4g} sits at the edge of its search range "
                          f"[{ALPHA_MIN:g}, {ALPHA_MAX:g}]: the points do not follow E + A·C^-alpha"))
    return LossLaw(E=float(E[0]), A=float(A0[0] * c0 ** al[0]), alpha=float(al[0]), sse=float(sse[0]),
                   rmse=float(math.sqrt(sse[0] / len(y))), n_points=len(y), asymptote=asymptote,
                   converged=not bool(at_bound[0]), status=status, E_at_upper_bound=E_top,
                   flops=tuple(map(float, C)), values=tuple(map(float, y)), confidence=confidence,
                   bootstrap_params=boot, loo_params=loo, seed=seed, note="; ".join(notes) or None,
                   bootstrap_noise=noise, bootstrap_values=values, vertex_resampling=delta is not None,
                   flags=tuple(flags), ceiling=ceiling)


def _check_ceiling(C: np.ndarray, y: np.ndarray, ceiling) -> float:
    """The ceiling H as a float: positive, finite and above every point."""
    ceiling = float(ceiling)
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise DelphiError(f"loss law: the ceiling H must be a positive number, got {ceiling!r}")
    above = np.flatnonzero(y >= ceiling)
    if above.size:
        i = int(above[0])
        raise DelphiError(f"loss law: the optimum at {C[i]:.3g} FLOPs ({y[i]:.4g}) is not below the ceiling "
                          f"H = {ceiling:.4g}; the ceiling form needs every point under it (is H the unigram "
                          "loss of the same metric?)")
    return ceiling


def _vertex_deltas(optima_resamples, y: np.ndarray) -> np.ndarray | None:
    """Each resample's shift of each point (resampled optimum − fitted optimum), or None."""
    if optima_resamples is None:
        return None
    R = np.asarray(optima_resamples, dtype=float)
    if R.ndim != 2 or R.shape[1] != len(y) or len(R) == 0:
        raise DelphiError(f"loss law: optima_resamples must have shape [resamples, {len(y)}], got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise DelphiError("loss law: optima_resamples must be finite")
    return R - y[None, :]


def _resampled_points(y: np.ndarray, fitted: np.ndarray, n_params: int, delta: np.ndarray | None, bootstrap: int,
                      seed: int, ceiling: float | None):
    """The bootstrap's resampled points [B, n] and each resample's noise for a new point [B]
    (see the module docstring), or (None, None, why) when there is nothing to resample."""
    dof = len(y) - n_params
    s2 = float(np.sum((y - fitted) ** 2)) / dof
    if delta is not None:
        # The residuals already contain the vertex noise that δ adds: keep only the scatter in
        # excess of it (robust scale of each point's δ, so one-sided resamples do not dominate).
        mad = np.median(np.abs(delta - np.median(delta, axis=0)), axis=0)
        s2 = max(s2 - float(np.mean((1.4826 * mad) ** 2)), 0.0)
    rng = np.random.default_rng(seed)
    # sigma_b^2 = s^2·dof/chi2_dof: the scatter's own uncertainty, which a plain residual
    # bootstrap ignores (with 1-2 residual degrees of freedom it is most of the uncertainty).
    sigma = np.sqrt(s2 * dof / rng.chisquare(dof, size=bootstrap))
    eta = sigma[:, None] * rng.standard_normal((bootstrap, len(y)))
    new_eta = sigma * rng.standard_normal(bootstrap)
    d = np.zeros((bootstrap, len(y))) if delta is None else delta[np.arange(bootstrap) % len(delta)]
    new_d = d[np.arange(bootstrap), rng.integers(0, len(y), size=bootstrap)]
    values = fitted[None, :] + d + eta
    noise = new_d + new_eta
    scale = max(float(np.abs(y).max()), 1e-300)
    if float(np.ptp(values, axis=0).max()) <= 1e-9 * scale:  # float round-off of an exact fit is not spread
        return None, None, ("no bootstrap intervals: the points lie exactly on the law and their vertices have no "
                            "spread, so there is nothing to resample (an interval would have zero width)")
    ok = np.all(values > 0, axis=1)  # a positive metric: drop the (rare) resample that is not
    if ceiling is not None:
        ok &= np.all(values < ceiling, axis=1)
    return values[ok], noise[ok], None


def rises_flags(flops, values, what: str) -> list[Flag]:
    """[`loss_rises` Flag] when the metric at a budget is above the one at the next lower budget
    (points of one compute averaged), else []. The loss law refuses a metric whose overall trend
    rises; this catches the budgets where it does while the trend still falls."""
    C, y = np.asarray(flops, dtype=float), np.asarray(values, dtype=float)
    u = np.unique(C)
    m = np.array([y[C == c].mean() for c in u])
    up = np.flatnonzero(np.diff(m) > 0)
    if not up.size:
        return []
    pairs = [f"{m[i + 1]:.4g} at {u[i + 1]:.3g} > {m[i]:.4g} at {u[i]:.3g}" for i in up[:3]]
    more = f" and {up.size - 3} more" if up.size > 3 else ""
    return [Flag(F.LOSS_RISES, f"{what}: the metric rises with compute ({'; '.join(pairs)}{more}); a rise means a "
                 "bad budget (an off-centre or flat curve, a failed run) — check those budgets",
                 {"rises": [{"flops_low": float(u[i]), "flops_high": float(u[i + 1]), "low": float(m[i]),
                             "high": float(m[i + 1])} for i in up]})]
