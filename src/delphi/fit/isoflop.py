"""Approach 2: IsoFLOP parabolas, compute-optimal points, allocation laws, off-optimal penalty.

1. Buckets: runs are grouped by their declared `budget` when present, otherwise by the nearest
   power of 1.1 of their measured FLOPs (Delphi's rule); the bucket's compute is that value.
2. Per bucket, loss = a·x^2 + b·x + c with x = log10(tokens), fitted robustly: iteratively
   reweighted least squares with Huber weights, threshold 1.345·sigma, sigma = 1.4826·MAD of the
   residuals (or a fixed `huber_delta`). Vertex x* = -b/(2a) gives D* = 10^x*, L* = c - b^2/(4a);
   N* is interpolated in log-log space between the bucket's runs at D* (linear extrapolation
   from the end segments outside them). Skipped with a reason and a flag (`delphi.fit.flags`):
   fewer than 3 runs or distinct token counts (`too_few_runs`), a <= 0 (`no_minimum`), a
   curvature not distinguishable from the runs' noise (`flat_curve`: the vertex of a flat curve
   is noise). Flagged: vertex outside the bucket's token range, or one run on a side of it.
3. Allocation laws by least squares in log-log space: D*(C) = A·C^alpha, N*(C) = G·C^a; none
   (flag `no_allocation_law`) with fewer than two buckets that have a minimum, and flagged
   `allocation_implausible` when D* or N* does not grow with compute.
4. Off-optimal penalty: training D = s·D* instead of D* costs a·(log10 s)^2 (from the parabola);
   the curvature a is fitted as a power law in C, so the gap extrapolates to any C.
5. Vertex uncertainty (`IsoFlopFit.bootstrap_optima`): each bucket's runs are resampled with
   replacement and its Huber parabola refitted, giving resampled optimum losses that the loss
   law's intervals propagate (`loss_law.fit_loss_law(..., optima_resamples=)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from delphi.errors import DelphiError
from delphi.fit import flags as F
from delphi.fit.flags import FLAG_TEXT, Flag  # noqa: F401 - FLAG_TEXT: the codes' text, importable from here too
from delphi.files import schema_version

# `IsoFlopFit.to_dict()["schema_version"]`: 2 adds each bucket's runs and every known parabola
# (a dict without the field is version 1, whose buckets lack them); see docs/artefacts.md.
SCHEMA_VERSION = 2

HUBER_K = 1.345  # 95% efficiency at the normal distribution
MAX_IRLS = 100
FLAG_ABOVE, FLAG_BELOW, FLAG_ONE_SIDED = F.VERTEX_ABOVE, F.VERTEX_BELOW, F.VERTEX_ONE_SIDED
# A curve is flat when the 95% confidence interval of its curvature a includes 0 (t = a/se(a)
# below the two-sided 97.5% quantile of Student's t), or when the parabola's depth across the runs
# is below FLAT_RTOL of the loss (equal losses: a is float round-off, of either sign). The noise
# behind se(a) is the bucket's own residual scale when it has >= MIN_OWN_DOF residual degrees of
# freedom (7 runs); a bucket of 4-6 runs leaves 1-3, too few to judge its curvature by, and takes
# the table's: the median of its buckets' residual scales (seed noise is a property of the training
# setup; the median, because a bucket whose runs span more than a parabola fits has a large
# residual that is misfit, not noise), if those rest on >= MIN_OWN_DOF residual degrees of freedom
# in total. Without either, only the FLAT_RTOL test applies.
CURVATURE_CONFIDENCE = 0.95
FLAT_RTOL = 1e-9
MIN_OWN_DOF = 4


@dataclass(frozen=True)
class PowerLaw:
    """y = A·C^alpha, fitted by least squares on log10 y vs log10 C."""

    A: float
    alpha: float
    n_points: int
    rmse_log10: float  # residual RMS in log10 units

    def predict(self, C):
        return self.A * np.asarray(C, dtype=float) ** self.alpha

    def to_dict(self) -> dict:
        return {"A": self.A, "alpha": self.alpha, "n_points": self.n_points, "rmse_log10": self.rmse_log10}

    @classmethod
    def from_dict(cls, d: dict) -> "PowerLaw":
        return cls(A=float(d["A"]), alpha=float(d["alpha"]), n_points=int(d.get("n_points", 0)),
                   rmse_log10=_float(d.get("rmse_log10")))


def _float(v) -> float:
    """A number from JSON, NaN for null/absent."""
    return math.nan if v is None else float(v)


def _opt(v: float):
    """NaN -> None, for JSON."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def fit_power_law(x, y) -> PowerLaw:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise DelphiError("power law: need at least two distinct compute values")
    if np.any(x <= 0) or np.any(y <= 0):
        raise DelphiError("power law: values must be positive for a log-log fit")
    lx, ly = np.log10(x), np.log10(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    return PowerLaw(A=float(10 ** intercept), alpha=float(slope), n_points=len(x),
                    rmse_log10=float(np.sqrt(np.mean(resid ** 2))))


@dataclass(frozen=True)
class BucketFit:
    flops: float  # the bucket's compute (declared budget, or the power of 1.1)
    n_runs: int
    tokens: tuple[float, ...]  # the runs (for plots and re-fits)
    params: tuple[float, ...]
    loss: tuple[float, ...]
    coeffs: tuple[float, float, float] | None = None  # (a, b, c) in x = log10(tokens)
    optimal_tokens: float = math.nan
    optimal_params: float = math.nan
    optimal_loss: float = math.nan
    flags: tuple[str, ...] = ()
    skipped: str | None = None  # reason, when no optimum was extracted
    # Runs with fewer / more tokens than the optimum: a vertex is bracketed when both are >= 2.
    n_below: int = 0
    n_above: int = 0
    # The optimum's compute in the fit's compute definition (`delphi.fit.compute`): the bucket's
    # planned budget for "total", else the compute of the optimal shape at D* (interpolated).
    optimal_compute: float = math.nan
    widths: tuple[float, ...] = ()  # the runs' hidden sizes, when the table has them (for advice)
    # The curvature test (`FLAT_RTOL`, `CURVATURE_CONFIDENCE`): standard error of a, the noise
    # (residual standard deviation) it rests on and that noise's degrees of freedom (0: untested).
    curvature_se: float = math.nan
    noise_sd: float = math.nan
    noise_dof: int = 0

    @property
    def usable(self) -> bool:
        return self.skipped is None

    @property
    def curvature_t(self) -> float:
        """a / se(a): how many standard errors the curvature stands above zero (NaN: untested)."""
        if self.coeffs is None or not self.curvature_se >= 0:
            return math.nan
        return self.coeffs[0] / self.curvature_se if self.curvature_se > 0 else math.copysign(math.inf, self.coeffs[0])

    def predict(self, tokens):
        """The fitted parabola's loss at `tokens`."""
        if self.coeffs is None:
            raise DelphiError(f"bucket {self.flops:.3g}: skipped ({self.skipped}); no parabola")
        a, b, c = self.coeffs
        x = np.log10(np.asarray(tokens, dtype=float))
        return a * x * x + b * x + c

    def gap(self, s):
        """Loss gap between training D = s·D* and D* (same bucket): a·(log10 s)^2."""
        return self.coeffs[0] * np.log10(np.asarray(s, dtype=float)) ** 2

    def curvature_dict(self) -> dict | None:
        if self.coeffs is None:
            return None
        t = self.curvature_t
        return {"a": self.coeffs[0], "se": None if math.isnan(self.curvature_se) else self.curvature_se,
                "t": None if math.isnan(t) else t, "noise_sd": None if math.isnan(self.noise_sd) else self.noise_sd,
                "noise_dof": self.noise_dof}

    def to_dict(self) -> dict:
        """The bucket as JSON; `from_dict` inverts it (the runs and every known parabola included)."""
        d = {"flops": self.flops, "n_runs": self.n_runs}
        parabola = None if self.coeffs is None else {"a": self.coeffs[0], "b": self.coeffs[1], "c": self.coeffs[2],
                                                     "x": "log10(tokens)"}
        if self.usable:
            d.update(optimal_tokens=self.optimal_tokens, optimal_params=self.optimal_params,
                     optimal_loss=self.optimal_loss, optimal_compute=_opt(self.optimal_compute),
                     flags=list(self.flags), runs_below_optimum=self.n_below, runs_above_optimum=self.n_above,
                     parabola=parabola, curvature=self.curvature_dict())
        else:
            d.update(reason=self.skipped, flags=list(self.flags))
            if parabola is not None:
                d.update(parabola=parabola, curvature=self.curvature_dict())
        d["runs"] = {"tokens": list(self.tokens), "params": list(self.params), "loss": list(self.loss),
                     **({"widths": list(self.widths)} if self.widths else {})}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BucketFit":
        """The inverse of `to_dict`. A version-1 bucket (no `runs`) loads without its runs: it
        draws and reports, but `bootstrap_optima` has nothing to resample."""
        runs = d.get("runs") or {}
        par = d.get("parabola")
        coeffs = (float(par["a"]), float(par["b"]), float(par["c"])) if isinstance(par, dict) else None
        curv = d.get("curvature") or {}
        has_optimum = d.get("optimal_loss") is not None
        return cls(flops=float(d["flops"]), n_runs=int(d.get("n_runs") or len(runs.get("tokens") or ())),
                   tokens=tuple(map(float, runs.get("tokens") or ())),
                   params=tuple(map(float, runs.get("params") or ())), loss=tuple(map(float, runs.get("loss") or ())),
                   widths=tuple(map(float, runs.get("widths") or ())),
                   coeffs=coeffs, optimal_tokens=_float(d.get("optimal_tokens")),
                   optimal_params=_float(d.get("optimal_params")), optimal_loss=_float(d.get("optimal_loss")),
                   optimal_compute=_float(d.get("optimal_compute")), flags=tuple(map(str, d.get("flags") or ())),
                   skipped=None if has_optimum else str(d.get("reason") or "no optimum"),
                   n_below=int(d.get("runs_below_optimum") or 0), n_above=int(d.get("runs_above_optimum") or 0),
                   curvature_se=_float(curv.get("se")), noise_sd=_float(curv.get("noise_sd")),
                   noise_dof=int(curv.get("noise_dof") or 0))


def _huber_irls(x: np.ndarray, y: np.ndarray, delta: float | None = None):
    """IRLS with Huber weights on the centred design; -> (centred coefficients, design X, weights)."""
    xm = float(np.mean(x))
    X = np.stack([(x - xm) ** 2, x - xm, np.ones_like(x)], axis=1)  # centred for conditioning
    w = np.ones_like(y)
    coef = np.zeros(3)
    for _ in range(MAX_IRLS):
        sw = np.sqrt(w)
        coef = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        r = np.abs(y - X @ coef)
        k = delta if delta is not None else HUBER_K * 1.4826 * float(np.median(r))
        if not k > 1e-12 * max(1.0, float(np.abs(y).max())):
            break  # (near-)exact fit: nothing to down-weight
        w_new = np.where(r <= k, 1.0, k / np.maximum(r, 1e-300))
        if np.max(np.abs(w_new - w)) < 1e-10:
            break
        w = w_new
    return coef, X, w


def huber_parabola(x: np.ndarray, y: np.ndarray, delta: float | None = None) -> tuple[float, float, float]:
    """Robust fit y = a x^2 + b x + c by IRLS with Huber weights; returns (a, b, c)."""
    return _uncentre(_huber_irls(x, y, delta)[0], float(np.mean(x)))


def _uncentre(coef, xm: float) -> tuple[float, float, float]:
    a, bc, cc = coef  # a(x-m)^2 + b'(x-m) + c' -> a x^2 + (b' - 2am) x + (a m^2 - b' m + c')
    return float(a), float(bc - 2 * a * xm), float(a * xm * xm - bc * xm + cc)


def bucket_noise(tokens, loss, huber_delta: float | None = None) -> tuple[float, int]:
    """(residual standard deviation, residual degrees of freedom) of one bucket's Huber parabola
    (residuals weighted by their Huber weights); (nan, 0) when it leaves no residual."""
    x = np.log10(np.asarray(tokens, dtype=float))
    y = np.asarray(loss, dtype=float)
    if len(x) <= 3 or len(np.unique(x)) < 3:
        return math.nan, 0
    coef, X, w = _huber_irls(x, y, huber_delta)
    r = y - X @ coef
    return math.sqrt(float(np.sum(w * r * r)) / (len(x) - 3)), len(x) - 3


def table_noise(shares: list[tuple[float, int]]) -> tuple[float, int] | None:
    """The table's noise from its buckets' `bucket_noise`: (median residual sd, total degrees of
    freedom), or None when no bucket leaves a residual."""
    sds = [sd for sd, dof in shares if dof > 0]
    return (float(np.median(sds)), sum(dof for _, dof in shares)) if sds else None


def _t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (scipy.special: a fraction of scipy.stats' import time)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, p))


def _interp_loglog(x0: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear interpolation of log y at log x0, extrapolating the end segments."""
    lx, ly = np.log(xs), np.log(ys)
    order = np.argsort(lx)
    lx, ly = lx[order], ly[order]
    ux = np.unique(lx)
    uy = np.array([ly[lx == u].mean() for u in ux])  # repeated token counts (seeds): average
    t = math.log(x0)
    if len(ux) == 1:
        return float(np.exp(uy[0]))
    if t < ux[0]:
        j = 0
    elif t > ux[-1]:
        j = len(ux) - 2
    else:
        return float(np.exp(np.interp(t, ux, uy)))
    slope = (uy[j + 1] - uy[j]) / (ux[j + 1] - ux[j])
    return float(np.exp(uy[j] + slope * (t - ux[j])))


def fit_bucket(flops: float, tokens, params, loss, huber_delta: float | None = None, *, compute=None,
               widths=None, noise: tuple[float, int] | None = None) -> BucketFit:
    """One bucket's parabola and vertex. compute: each run's compute in the fit's definition
    (None: total FLOPs, and the optimum's compute is the bucket's `flops`); widths: the runs'
    hidden sizes (reported in advice about off-centre grids); noise: the table's (`table_noise`),
    for the curvature test of a bucket with too few runs to measure its own (`MIN_OWN_DOF`)."""
    D, N, L = (np.asarray(v, dtype=float) for v in (tokens, params, loss))
    base = dict(flops=float(flops), n_runs=len(D), tokens=tuple(D), params=tuple(N), loss=tuple(L),
                widths=tuple(float(w) for w in widths) if widths is not None else ())
    if len(D) < 3:
        return BucketFit(**base, skipped=f"fewer than 3 runs ({len(D)})", flags=(F.TOO_FEW_RUNS,))
    x = np.log10(D)
    if len(np.unique(x)) < 3:
        return BucketFit(**base, skipped=f"fewer than 3 distinct token counts ({len(np.unique(x))})",
                         flags=(F.TOO_FEW_RUNS,))
    coef, X, w = _huber_irls(x, L, huber_delta)
    a, b, c = _uncentre(coef, float(np.mean(x)))
    dof = len(x) - 3
    sd = math.sqrt(float(np.sum(w * (L - X @ coef) ** 2)) / dof) if dof > 0 else math.nan  # = bucket_noise
    if dof < MIN_OWN_DOF:
        # The table's noise, when it rests on enough residuals to judge by (the same bar as a
        # bucket's own): a few 4-run buckets leave 1-2 residual dof of mostly parabola misfit.
        sd, dof = noise if noise is not None and noise[1] >= MIN_OWN_DOF else (math.nan, 0)
    se = math.nan
    if dof > 0:
        cov = np.linalg.pinv(X.T @ (w[:, None] * X))
        se = sd * math.sqrt(max(float(cov[0, 0]), 0.0))
    stats = dict(curvature_se=se, noise_sd=sd, noise_dof=int(dof))
    depth = a * ((x.max() - x.min()) / 2) ** 2  # the parabola's rise from its vertex to the runs' edges
    if not abs(depth) > FLAT_RTOL * float(np.abs(L).max()):
        return BucketFit(**base, coeffs=(a, b, c), skipped=f"flat: the loss does not change across the runs "
                         f"(depth {depth:.2g})", flags=(F.FLAT_CURVE,), **stats)
    if not a > 0:
        return BucketFit(**base, coeffs=(a, b, c), skipped=f"parabola opens downward (a = {a:.3g} <= 0): no minimum",
                         flags=(F.NO_MINIMUM,), **stats)
    if dof > 0:
        t, t_min = (a / se if se > 0 else math.inf), _t_quantile(0.5 + CURVATURE_CONFIDENCE / 2, dof)
        if not t > t_min:
            return BucketFit(**base, coeffs=(a, b, c), skipped=(
                f"flat: the curve's depth across its runs ({depth:.2g}) is not distinguishable from the runs' "
                f"noise ({sd:.2g}; curvature a = {a:.3g} ± {se:.2g}, t = {t:.2f} < {t_min:.2f})"),
                flags=(F.FLAT_CURVE,), **stats)
    xs = -b / (2 * a)
    flags = (FLAG_ABOVE,) if xs > x.max() else (FLAG_BELOW,) if xs < x.min() else ()
    n_below, n_above = int(np.sum(x < xs)), int(np.sum(x > xs))
    if not flags and min(n_below, n_above) < 2:
        flags = (FLAG_ONE_SIDED,)
    Dopt = 10 ** xs
    # Compute per token varies with the shape along the bucket: take the optimal shape's, the way
    # N* is (log-log interpolation at D*), times D*.
    Copt = float(flops) if compute is None else _interp_loglog(Dopt, D, np.asarray(compute, dtype=float) / D) * Dopt
    return BucketFit(**base, coeffs=(a, b, c), optimal_tokens=float(Dopt),
                     optimal_params=_interp_loglog(Dopt, D, N), optimal_loss=float(c - b * b / (4 * a)), flags=flags,
                     n_below=n_below, n_above=n_above, optimal_compute=Copt, **stats)


def huber_parabolas(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`huber_parabola` for every row of x, y [R, n] at once (the same IRLS, batched); -> [R, 3]."""
    xm = x.mean(axis=1, keepdims=True)
    X = np.stack([(x - xm) ** 2, x - xm, np.ones_like(x)], axis=2)  # [R, n, 3]
    w = np.ones_like(y)
    coef = np.zeros((len(y), 3))
    active = np.ones(len(y), dtype=bool)
    for _ in range(MAX_IRLS):
        Xw = X[active] * w[active, :, None]
        M = np.einsum("rni,rnj->rij", Xw, X[active]) + 1e-300 * np.eye(3)
        rhs = np.einsum("rni,rn->ri", Xw, y[active])
        try:
            coef[active] = np.linalg.solve(M, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular row: solve row by row, least squares for that one
            for i, r in enumerate(np.flatnonzero(active)):
                coef[r] = np.linalg.lstsq(M[i], rhs[i], rcond=None)[0]
        r = np.abs(y[active] - np.einsum("rni,ri->rn", X[active], coef[active]))
        k = HUBER_K * 1.4826 * np.median(r, axis=1)
        exact = ~(k > 1e-12 * np.maximum(1.0, np.abs(y[active]).max(axis=1)))
        w_new = np.where(r <= k[:, None], 1.0, k[:, None] / np.maximum(r, 1e-300))
        done = exact | (np.abs(w_new - w[active]).max(axis=1) < 1e-10)
        w[active] = np.where(exact[:, None], w[active], w_new)
        active[np.flatnonzero(active)[done]] = False
        if not active.any():
            break
    a, bc, cc = coef.T
    m = xm[:, 0]
    return np.stack([a, bc - 2 * a * m, a * m * m - bc * m + cc], axis=1)


def bootstrap_vertex_losses(bucket: BucketFit, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Optimum losses [n_resamples] of the bucket's Huber parabola refitted on its runs resampled
    with replacement.

    A resample needs what the bucket itself needed (3 distinct token counts, a minimum); one that
    lacks it is redrawn, so the spread is conditional on the vertex existing. A bucket whose
    resamples almost never qualify (3 runs: only a permutation does) contributes no spread, and
    the loss law's residual bootstrap has to carry it.
    """
    x = np.log10(np.asarray(bucket.tokens, dtype=float))
    y = np.asarray(bucket.loss, dtype=float)
    n = len(x)
    out = np.empty(0)
    for _ in range(20):  # redraws; 20 rounds of 2x oversampling leave nothing missing in practice
        want = n_resamples - len(out)
        if want <= 0:
            break
        idx = rng.integers(0, n, size=(2 * want + 16, n))
        xs = x[idx]
        srt = np.sort(xs, axis=1)
        ok = 1 + (np.diff(srt, axis=1) > 0).sum(axis=1) >= 3  # distinct token counts per resample
        if not ok.any():
            continue
        coef = huber_parabolas(xs[ok], y[idx[ok]])
        a, b, c = coef.T
        good = a > 0
        out = np.concatenate([out, (c - b * b / (4 * np.where(good, a, 1.0)))[good][:want]])
    if len(out) < n_resamples:  # the bucket's own vertex for the rest: no spread from this bucket
        out = np.concatenate([out, np.full(n_resamples - len(out), bucket.optimal_loss)])
    return out


def bucket_flops(flops, budget=None) -> np.ndarray:
    """Each run's bucket compute: its declared budget, else the nearest power of 1.1 of its FLOPs."""
    f = np.asarray(flops, dtype=float)
    k = np.round(np.log(f) / math.log(1.1))
    out = 1.1 ** k
    if budget is not None:
        b = np.asarray(budget, dtype=float)
        has = np.isfinite(b) & (b > 0)
        out = np.where(has, b, out)
    return out


def _bucket_key(flops: float) -> int:
    """A stable integer per bucket compute (seeds each bucket's own random stream)."""
    return int(round(math.log(flops) * 1e6)) & 0x7FFFFFFF


@dataclass(frozen=True, eq=False)
class OffOptimalPenalty:
    """Loss gap of training s× the optimal tokens: gap(s, C) = K·C^gamma·(log10 s)^2.

    K, gamma: a power law through the buckets' parabola curvatures a(C).
    """

    curvature: PowerLaw

    def gap(self, s, C):
        return self.curvature.predict(C) * np.log10(np.asarray(s, dtype=float)) ** 2

    predict = gap  # the common interface of the fit results

    def extra_compute(self, s, C, law) -> np.ndarray:
        """Compute an s-times over(under)-trained run needs, relative to C, to match L*(C).

        Solves L*(C') + gap(s, C') = L*(C) for C' (bisection in log C') and returns C'/C - 1.
        """
        s, C = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(C, dtype=float))
        target = law.predict(C)
        lo, hi = np.log(C), np.log(C) + math.log(1e6)
        f = lambda lc: law.predict(np.exp(lc)) + self.gap(s, np.exp(lc)) - target  # noqa: E731
        if np.any(f(hi) > 0):
            return np.where(f(hi) > 0, np.inf, self._bisect(f, lo, hi, C))
        return self._bisect(f, lo, hi, C)

    @staticmethod
    def _bisect(f, lo, hi, C):
        for _ in range(200):
            mid = (lo + hi) / 2
            pos = f(mid) > 0
            lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
        return np.exp((lo + hi) / 2) / C - 1

    def effective_compute(self, s, C, law) -> np.ndarray:
        """C_eq / C where a compute-optimal run at C_eq reaches the s-times over-trained run's loss."""
        s, C = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(C, dtype=float))
        L = law.predict(C) + self.gap(s, C)
        with np.errstate(invalid="ignore", divide="ignore"):
            Ceq = ((L - law.E) / law.A) ** (-1.0 / law.alpha)
        return Ceq / C

    def table(self, s_values, C_values, law=None) -> list[dict]:
        rows = []
        for C in np.atleast_1d(C_values):
            for s in np.atleast_1d(s_values):
                row = {"flops": float(C), "s": float(s), "loss_gap": float(self.gap(s, C))}
                if law is not None:
                    row["extra_compute"] = float(self.extra_compute(s, C, law))
                    row["effective_compute"] = float(self.effective_compute(s, C, law))
                rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {"curvature": self.curvature.to_dict(), "form": "gap(s, C) = A*C^alpha*log10(s)^2"}


@dataclass(frozen=True, eq=False)
class IsoFlopFit:
    metric: str
    buckets: tuple[BucketFit, ...]
    tokens_law: PowerLaw | None  # D*(C) = A·C^alpha
    params_law: PowerLaw | None  # N*(C) = G·C^a
    excluded: dict = field(default_factory=dict)  # status -> runs dropped before fitting
    excluded_flagged: bool = False  # flagged buckets left out of the allocation laws
    compute: str = "total"  # the compute definition of optimal_compute (`delphi.fit.compute`)
    # The fit's own flags (`delphi.fit.flags`): repeated runs removed, no or an implausible
    # allocation law. Each bucket carries its own (`BucketFit.flags`); `flag_codes` has both.
    flags: tuple[Flag, ...] = ()

    def flag_codes(self) -> list[str]:
        """Every flag code of the fit and its buckets, in order of first appearance."""
        return F.codes([*self.flags, *(f for b in self.buckets for f in b.flags)])

    @property
    def used(self) -> tuple[BucketFit, ...]:
        return tuple(b for b in self.buckets if b.usable and not (self.excluded_flagged and b.flags))

    def optima(self) -> dict[str, np.ndarray]:
        """{"flops", "loss", "tokens", "params"} arrays of the buckets used for the laws (the loss law's input)."""
        u = self.used
        return {"flops": np.array([b.flops for b in u]), "loss": np.array([b.optimal_loss for b in u]),
                "tokens": np.array([b.optimal_tokens for b in u]), "params": np.array([b.optimal_params for b in u]),
                "compute": np.array([b.optimal_compute for b in u])}

    def allocation_in_compute(self) -> tuple[PowerLaw, PowerLaw] | None:
        """D*(C) and N*(C) against the optima's compute in the fit's definition (None for "total",
        where they are `tokens_law`, `params_law`, or with fewer than two usable buckets)."""
        u = self.used
        if self.compute == "total" or len(u) < 2:
            return None
        C = [b.optimal_compute for b in u]
        return fit_power_law(C, [b.optimal_tokens for b in u]), fit_power_law(C, [b.optimal_params for b in u])

    def off_centre(self) -> list[BucketFit]:
        """Buckets whose optimum lies outside their runs' token range (vertex extrapolated)."""
        return [b for b in self.buckets if b.usable and (FLAG_ABOVE in b.flags or FLAG_BELOW in b.flags)]

    def explain_off_centre(self) -> str:
        """'the optima of budgets 2e+11, 4e+11 lie beyond the narrowest width (…)' or ''."""
        edge = self.off_centre()
        if not edge:
            return ""
        parts = []
        for flag, side in ((FLAG_ABOVE, "narrowest"), (FLAG_BELOW, "widest")):
            bs = [b for b in edge if flag in b.flags]
            if bs:
                parts.append(f"budget{'s' if len(bs) > 1 else ''} {', '.join(f'{b.flops:.3g}' for b in bs)} "
                             f"{'have their' if len(bs) > 1 else 'has its'} optimum beyond the {side} width "
                             f"({'smaller' if side == 'narrowest' else 'larger'} models than any run)")
        return "the IsoFLOP optima sit at the edge of the width range: " + "; ".join(parts)

    def predict(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N*, D*) at C from the allocation laws."""
        if self.tokens_law is None:
            why = next((f.text for f in self.flags if f.code == F.NO_ALLOCATION_LAW), "")
            raise DelphiError(f"isoflop: {why or 'fewer than two usable buckets, so there is no allocation law'}")
        return self.params_law.predict(C), self.tokens_law.predict(C)

    def bootstrap_optima(self, n_resamples: int, seed: int = 0) -> np.ndarray:
        """Resampled optimum losses [n_resamples, len(self.used)]: each used bucket's runs
        resampled with replacement and its parabola refitted (`bootstrap_vertex_losses`).

        Column j belongs to `self.used[j]` (the order of `optima()`); each bucket draws from its
        own stream of the seed, so a bucket's column is the same whichever other buckets are used.
        """
        if n_resamples < 1:
            raise DelphiError(f"bootstrap: the number of resamples must be at least 1, got {n_resamples}")
        cols = [bootstrap_vertex_losses(b, n_resamples, np.random.default_rng([seed, _bucket_key(b.flops)]))
                for b in self.used]
        return np.stack(cols, axis=1) if cols else np.empty((n_resamples, 0))

    def penalty(self) -> OffOptimalPenalty:
        u = self.used
        if len(u) < 2:
            raise DelphiError("isoflop: the off-optimal penalty needs at least two usable buckets")
        return OffOptimalPenalty(fit_power_law([b.flops for b in u], [b.coeffs[0] for b in u]))

    def to_dict(self) -> dict:
        alloc = None
        if self.tokens_law is not None:
            alloc = {"tokens": self.tokens_law.to_dict(), "params": self.params_law.to_dict(),
                     "sum_of_exponents": self.tokens_law.alpha + self.params_law.alpha}
        d = {"schema_version": SCHEMA_VERSION, "metric": self.metric, "compute": self.compute,
                "buckets": [b.to_dict() for b in self.buckets if b.usable],
                "skipped": [b.to_dict() for b in self.buckets if not b.usable],
                "allocation": alloc, "excluded_runs": dict(self.excluded),
                "flagged_buckets_excluded": self.excluded_flagged, "flags": [f.to_dict() for f in self.flags]}
        laws = self.allocation_in_compute()
        if laws is not None:
            d["allocation_compute"] = {"tokens": laws[0].to_dict(), "params": laws[1].to_dict(),
                                       "sum_of_exponents": laws[0].alpha + laws[1].alpha}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "IsoFlopFit":
        """The inverse of `to_dict` (`from_dict(fit.to_dict())` fits, predicts and resamples like
        `fit`); a version-1 dict (no `schema_version`) loads without the buckets' runs."""
        schema_version(d, "IsoFLOP fit", SCHEMA_VERSION)
        buckets = sorted((BucketFit.from_dict(b) for b in [*(d.get("buckets") or ()), *(d.get("skipped") or ())]),
                         key=lambda b: b.flops)
        alloc = d.get("allocation") or {}
        return cls(metric=str(d.get("metric") or "loss"), buckets=tuple(buckets),
                   tokens_law=PowerLaw.from_dict(alloc["tokens"]) if alloc.get("tokens") else None,
                   params_law=PowerLaw.from_dict(alloc["params"]) if alloc.get("params") else None,
                   excluded=dict(d.get("excluded_runs") or {}),
                   excluded_flagged=bool(d.get("flagged_buckets_excluded")), compute=str(d.get("compute") or "total"),
                   flags=tuple(Flag.from_dict(f) for f in d.get("flags") or ()))


def fit_isoflop(table, metric: str = "loss", *, huber_delta: float | None = None,
                exclude_flagged: bool = False, compute: str = "total") -> IsoFlopFit:
    """Fit every compute bucket of a runs table (see `runs_table.load_runs_table`).

    A DataFrame that did not come from `load_runs_table` with this metric is validated here the
    same way (non-completed runs dropped, bad values reported by row and column).

    compute: the definition of each optimum's compute (`delphi.fit.compute`). Buckets are always
    the planned budgets (total FLOPs: every run of a bucket has the same one, while under another
    definition their compute differs with their shape) and the allocation laws `tokens_law`,
    `params_law` stay in those planned budgets, which is what the recipe plans held-out runs
    with. Each optimum's `optimal_compute` is the optimal shape's compute at D* in the chosen
    definition; the loss law is fitted against it (`optima()["compute"]`).
    """
    from delphi.fit.compute import check_definition, table_compute
    from delphi.fit.runs_table import validate_table

    check_definition(compute)
    if getattr(table, "attrs", {}).get("metric") != metric:
        table = validate_table(table, metric=metric, where="isoflop")
    budget = table["budget"].to_numpy(dtype=float) if "budget" in table.columns else None
    labels = bucket_flops(table["flops"].to_numpy(dtype=float), budget)
    keys = np.array([float(f"{k:.6g}") for k in labels])  # group across float noise in declared budgets
    run_c = None if compute == "total" else table_compute(table, compute, where=table.attrs.get("source", "isoflop"))
    widths = None
    if "hidden_size" in table.columns:
        import pandas as pd

        w = pd.to_numeric(table["hidden_size"], errors="coerce").to_numpy(dtype=float)
        widths = w if np.all(np.isfinite(w)) else None
    tokens, params, loss = (table[c].to_numpy(float) for c in ("tokens", "params", metric))
    sels = [keys == k for k in np.unique(keys)]
    # The noise the curvature test of a bucket with few runs compares with: the table's.
    pooled = table_noise([bucket_noise(tokens[sel], loss[sel], huber_delta) for sel in sels])
    buckets = []
    for sel in sels:
        buckets.append(fit_bucket(float(labels[sel][0]), tokens[sel], params[sel], loss[sel], huber_delta,
                                  compute=None if run_c is None else run_c[sel],
                                  widths=None if widths is None else widths[sel], noise=pooled))
    used = [b for b in buckets if b.usable and not (exclude_flagged and b.flags)]
    tl = pl = None
    if len(used) >= 2:
        C = [b.flops for b in used]
        tl = fit_power_law(C, [b.optimal_tokens for b in used])
        pl = fit_power_law(C, [b.optimal_params for b in used])
    return IsoFlopFit(metric=metric, buckets=tuple(buckets), tokens_law=tl, params_law=pl,
                      excluded=dict(getattr(table, "attrs", {}).get("excluded", {})), excluded_flagged=exclude_flagged,
                      compute=compute, flags=tuple(_fit_flags(table, buckets, used, tl, pl, exclude_flagged)))


# Each reason a bucket gives no optimum, and what to change (the text of `no_allocation_law`).
_NO_OPTIMUM_WHAT = {F.TOO_FEW_RUNS: "fewer than 3 runs of different sizes",
                    F.FLAT_CURVE: "flat (curvature within the runs' noise)",
                    F.NO_MINIMUM: "no minimum (the curve opens downward)"}
_NO_OPTIMUM_FIX = {
    F.TOO_FEW_RUNS: "each budget needs >= 3 runs of different sizes (a table of one optimum per budget is "
                    "fitted with `delphi fit loss-law`)",
    F.FLAT_CURVE: "the loss barely changes across the sizes there: widen the range of widths at those budgets "
                  "(or add runs) until the curve shows a minimum above its noise",
    F.NO_MINIMUM: "those curves open downward: check their runs, or widen the widths to reach the minimum",
}


def explain_unused(buckets, exclude_flagged: bool = False) -> str:
    """Why buckets gave no optimum, grouped by reason, with what to change:
    'flat (curvature within the runs' noise) at 1e+17, 3e+17; …; widen the range of widths …'
    ('' when every bucket gave one)."""
    groups: dict[str, list[float]] = {}
    for b in buckets:
        if not b.usable:
            groups.setdefault(b.flags[0] if b.flags else "", []).append(b.flops)
        elif exclude_flagged and b.flags:
            groups.setdefault("excluded", []).append(b.flops)
    parts, fixes = [], []
    for code, fl in groups.items():
        what = ("flagged and left out (--exclude-flagged)" if code == "excluded"
                else _NO_OPTIMUM_WHAT.get(code, "no optimum"))
        parts.append(f"{what} at {', '.join(f'{c:.3g}' for c in fl)}")
        if code in _NO_OPTIMUM_FIX:
            fixes.append(_NO_OPTIMUM_FIX[code])
    return "; ".join(parts + fixes)


def _fit_flags(table, buckets, used, tokens_law, params_law, exclude_flagged: bool) -> list[Flag]:
    from delphi.fit.runs_table import duplicates_flag

    dup = duplicates_flag(table)
    out = [dup] if dup is not None else []
    if len(used) < 2:
        why = explain_unused(buckets, exclude_flagged)
        text = (f"no allocation law: {len(used)} of {len(buckets)} budget{'s' if len(buckets) != 1 else ''} "
                f"give{'s' if len(used) == 1 else ''} an optimum and the law needs 2" + (f": {why}" if why else ""))
        out.append(Flag(F.NO_ALLOCATION_LAW, text, {"budgets_with_optimum": [b.flops for b in used]}))
    elif tokens_law.alpha <= 0 or params_law.alpha <= 0:
        which = [f"{name} ∝ C^{law.alpha:.3f}" for name, law in (("D*", tokens_law), ("N*", params_law))
                 if law.alpha <= 0]
        out.append(Flag(F.ALLOCATION_IMPLAUSIBLE,
                        f"the allocation law is implausible: {', '.join(which)} (the optimal "
                        f"{'tokens' if tokens_law.alpha <= 0 else 'model size'} shrinks as compute grows); the "
                        f"optima do not follow a law, check each budget's curve (`delphi fit isoflop`)",
                        {"tokens_alpha": tokens_law.alpha, "params_alpha": params_law.alpha}))
    return out


def fit_law_on_optima(iso: IsoFlopFit, *, bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95,
                      asymptote: bool = True, vertex_resamples: bool = True, ceiling: float | None = None):
    """The loss law through `iso`'s optima (against their compute in `iso.compute`), with each
    bucket's runs resampled into the interval. When the law cannot be fitted and some vertices
    are off-centre, the error says so: an off-centre grid, not the metric, is then the cause."""
    from delphi.fit.loss_law import fit_loss_law

    opt = iso.optima()
    try:
        vert = iso.bootstrap_optima(bootstrap, seed) if bootstrap and vertex_resamples and len(opt["loss"]) else None
        return fit_loss_law(opt["compute"], opt["loss"], bootstrap=bootstrap, seed=seed, confidence=confidence,
                            asymptote=asymptote, optima_resamples=vert, ceiling=ceiling)
    except DelphiError as e:
        why = iso.explain_off_centre()
        unused = explain_unused(iso.buckets, iso.excluded_flagged)
        if not why and unused:
            raise DelphiError(f"{e}; {len(opt['loss'])} of {len(iso.buckets)} budgets gave an optimum: {unused}") from None
        if not why:
            raise
        raise DelphiError(f"loss law: not fitted because {why}. Those vertices are extrapolated past the grid, so "
                          "the optima do not follow a law; re-centre the widths at those budgets "
                          f"(`delphi fit isoflop` lists each bucket). [the fit said: {e}]") from None
