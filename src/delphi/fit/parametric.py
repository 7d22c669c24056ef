"""Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to every run (Epoch AI's method).

Objective (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"), with
a = log A, b = log B, e = log E:

    pred_i = LSE(a - alpha·log N_i, b - beta·log D_i, e)          (= log of the law)
    f(a, b, e, alpha, beta) = sum_i Huber_delta(pred_i - log L_i),  delta = 1e-3

Optimiser: L-BFGS with the analytic gradient below, from Chinchilla's grid of starts
(alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1}; a, b in {0, 5, ..., 25}: 4,500 starts),
all starts as rows of one batch (`lbfgs.minimize_batched`, tolerances below); the best is polished
to gtol 1e-12 and relative ftol 1e-15. Internally log N and log D are centred (a is
shifted by alpha·mean log N, b by beta·mean log D): an exact change of coordinates that leaves the
objective and its minima unchanged but removes the near-collinearity of a and alpha that otherwise
costs L-BFGS hundreds of iterations.

Bootstrap: resample the runs with replacement (as weights on the same objective), refit every
resample from the full-data optimum (one batch), report percentile intervals of the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from delphi.errors import DelphiError
from delphi.fit import bootstrap as bs
from delphi.fit import flags as F
from delphi.fit.flags import Flag
from delphi.fit.lbfgs import STATUS_TEXT, minimize_batched

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

# Tolerances. Grid phase: like L-BFGS-B's defaults (pgtol 1e-5, factr 1e7), a little tighter;
# a start that has not converged after GRID_MAX_ITER iterations is on a flat ridge where one term
# of the law has vanished, far above the best objective. The best start is then polished tightly.
GRID_GTOL, GRID_FTOL, GRID_MAX_ITER = 1e-6, 1e-9, 300
POLISH_GTOL, POLISH_FTOL = 1e-12, 1e-15

# An exponent above this is flagged: published fits of L(N, D) put alpha and beta between ~0.05
# (Kaplan et al.) and ~0.7; 1 would mean the reducible loss falls faster than 1/N.
EXPONENT_MAX = 1.0

# Chinchilla's (and Epoch's) grid of initial values for (a, b, e, alpha, beta).
CHINCHILLA_GRID = {
    "a": tuple(np.arange(0, 30, 5.0)),
    "b": tuple(np.arange(0, 30, 5.0)),
    "e": tuple(np.arange(-1, 1.5, 0.5)),
    "alpha": tuple(np.arange(0, 2.5, 0.5)),
    "beta": tuple(np.arange(0, 2.5, 0.5)),
}


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                    delta: float = 1e-3, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of Huber losses of log-space residuals and its gradient, for each row of theta.

    theta: [R, 5] rows (a, b, e, alpha, beta); data: [n]; weights: None, [n] or [R, n].
    Returns f [R] and df/dtheta [R, 5].
    """
    # In-place numpy on [R, n] arrays: this function is the whole cost of a fit.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf/nan rows are rejected by the line search
        x1 = np.multiply.outer(-theta[:, 3], log_n)
        x1 += theta[:, 0:1]
        np.exp(x1, out=x1)  # A / N^alpha = exp(a - alpha log N)   [R, n]
        x2 = np.multiply.outer(-theta[:, 4], log_d)
        x2 += theta[:, 1:2]
        np.exp(x2, out=x2)  # B / D^beta = exp(b - beta log D)
        x3 = np.exp(theta[:, 2])  # E = exp(e)                   [R]
        tot = x1 + x2
        tot += x3[:, None]
        r = np.log(tot)
        r -= log_loss  # residual r = LSE(...) - log L
        psi = np.clip(r, -delta, delta)  # Huber'(r)
        h = r  # Huber(r) = psi·(r - psi/2): r^2/2 for |r| <= delta, delta(|r| - delta/2) beyond
        h -= 0.5 * psi
        h *= psi
        if weights is not None:
            h *= weights
            psi *= weights
        psi /= tot  # d LSE / d term_k = term_k / tot
        x1 *= psi
        x2 *= psi
        grad = np.stack([x1.sum(1), x2.sum(1), x3 * psi.sum(1),
                         -np.einsum("rn,n->r", x1, log_n), -np.einsum("rn,n->r", x2, log_d)], axis=1)
    return h.sum(1), grad


def _grid_starts(grid: dict) -> np.ndarray:
    missing = [k for k in ("a", "b", "e", "alpha", "beta") if k not in grid or not len(grid[k])]
    if missing:
        raise DelphiError(f"parametric fit: the grid of starts needs values for {', '.join(missing)}")
    axes = [np.asarray(grid[k], dtype=float) for k in ("a", "b", "e", "alpha", "beta")]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 5)


def _lse_to_params(theta: np.ndarray) -> np.ndarray:
    """(a, b, e, alpha, beta) rows -> (E, A, B, alpha, beta) rows."""
    return np.stack([np.exp(theta[:, 2]), np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 3], theta[:, 4]], axis=1)


@dataclass(frozen=True, eq=False)
class ParametricFit:
    """L(N, D) = E + A/N^alpha + B/D^beta, fitted by Epoch AI's method."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    huber_loss: float  # the objective at the optimum (sum over runs)
    delta: float
    n_runs: int
    n_starts: int
    n_starts_at_best: int  # starts that reached the best objective (within 1e-9 relative)
    converged: bool
    status: str
    confidence: float = 0.95
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)  # [n_boot, 5] (E, A, B, alpha, beta)
    n_bootstrap_converged: int = 0
    # What is doubtful (`delphi.fit.flags`): exponents <= 0 or above EXPONENT_MAX, losses that
    # rise with compute.
    flags: tuple[Flag, ...] = ()

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each parameter (empty without bootstrap)."""
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            return {}
        lo, hi = bs.percentile_interval(self.bootstrap_params, self.confidence, axis=0)
        return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(PARAM_NAMES)}

    def compute_optimal(self, C, flops_per_token: Callable[[np.ndarray], np.ndarray] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """N*(C), D*(C) minimising the law at compute C.

        With C = 6·N·D (default) the optimum is closed-form (Chinchilla eq. 4):
        N* = G·(C/6)^(beta/(alpha+beta)), G = (alpha·A/(beta·B))^(1/(alpha+beta)), D* = C/(6 N*).
        With `flops_per_token(N)` (training FLOPs per token of a model with N parameters, e.g.
        3 × forward FLOPs), C = flops_per_token(N)·D and N* is found numerically in log N.
        """
        C = np.asarray(C, dtype=float)
        if np.any(~np.isfinite(C)) or np.any(C <= 0):
            raise DelphiError("compute_optimal: compute budgets must be positive and finite")
        if flops_per_token is None:
            if self.alpha <= 0 or self.beta <= 0:
                raise DelphiError("compute_optimal: the fit has a non-positive exponent; no finite optimum")
            s = self.alpha + self.beta
            G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
            N = G * (C / 6.0) ** (self.beta / s)
            return N, C / (6.0 * N)
        return _optimal_numeric(self, C, flops_per_token)

    def to_dict(self) -> dict:
        d = {k: float(getattr(self, k)) for k in PARAM_NAMES}
        d.update(huber_loss=float(self.huber_loss), delta=self.delta, n_runs=self.n_runs,
                 n_starts=self.n_starts, n_starts_at_best=self.n_starts_at_best,
                 converged=bool(self.converged), status=self.status,
                 confidence=self.confidence,
                 n_bootstrap=0 if self.bootstrap_params is None else int(len(self.bootstrap_params)),
                 n_bootstrap_converged=self.n_bootstrap_converged,
                 ci={k: [lo, hi] for k, (lo, hi) in self.ci.items()}, flags=[f.to_dict() for f in self.flags])
        return d


def parametric_flags(N, D, L, alpha: float, beta: float) -> list[Flag]:
    """The flags of a fit with exponents (alpha, beta) to runs (N, D, L) (see `ParametricFit.flags`)."""
    out = []
    trend = float(np.polyfit(np.log(N * D), np.log(L), 1)[0]) if len(np.unique(N * D)) > 1 else 0.0
    if trend >= -1e-9:
        how = "do not change" if abs(trend) <= 1e-9 else "rise"
        out.append(Flag(F.LOSS_RISES, f"the losses {how} with compute (log L against log N·D: slope {trend:+.3g}); "
                        "the law assumes loss falls with size and data — check the metric column (fit its "
                        "negative if it rises with compute) and the runs", {"slope": trend}))
    bad = [(k, v) for k, v in (("alpha", alpha), ("beta", beta)) if not v > 0]
    if bad:
        out.append(Flag(F.EXPONENT_NOT_POSITIVE, f"{' and '.join(f'{k} = {v:.3g}' for k, v in bad)} <= 0: the fitted "
                        f"loss does not fall with {' or '.join('model size' if k == 'alpha' else 'data' for k, _ in bad)}; "
                        "the runs do not follow E + A/N^alpha + B/D^beta, and no compute-optimal allocation follows "
                        "from it", {k: v for k, v in bad}))
    steep = [(k, v) for k, v in (("alpha", alpha), ("beta", beta)) if v > EXPONENT_MAX]
    if steep:
        out.append(Flag(F.EXPONENT_IMPLAUSIBLE, f"{' and '.join(f'{k} = {v:.3g}' for k, v in steep)} above "
                        f"{EXPONENT_MAX:g}, far steeper than published fits (0.05-0.7): the runs likely span too "
                        "little of N or D to pin the exponents; treat the fit as unidentified", {k: v for k, v in steep}))
    return out


def _optimal_numeric(fit: ParametricFit, C: np.ndarray, fpt) -> tuple[np.ndarray, np.ndarray]:
    """Golden-section search in log N for each C (vectorised over C), bracket 1e3..1e15 parameters."""
    flat = C.reshape(-1)

    def loss_at(logN):
        N = np.exp(logN)
        f = np.asarray(fpt(N), dtype=float)
        if np.any(~np.isfinite(f)) or np.any(f <= 0):
            raise DelphiError("compute_optimal: flops_per_token(N) must return positive finite values")
        return fit.predict(N, flat / f)

    lo = np.full(flat.shape, math.log(1e3))
    hi = np.full(flat.shape, math.log(1e15))
    # Coarse scan first so the golden section starts in the right basin.
    grid = np.linspace(lo[0], hi[0], 241)
    vals = np.stack([loss_at(np.full(flat.shape, g)) for g in grid])  # [241, nC]
    k = vals.argmin(axis=0)
    lo, hi = grid[np.maximum(k - 1, 0)], grid[np.minimum(k + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
    f1, f2 = loss_at(x1), loss_at(x2)
    for _ in range(80):
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x2n = np.where(left, x1, lo + phi * (hi - lo))
        x1n = np.where(left, hi - phi * (hi - lo), x2)
        x1, x2 = x1n, x2n
        f1, f2 = loss_at(x1), loss_at(x2)
    N = np.exp((lo + hi) / 2).reshape(C.shape)
    return N, C / np.asarray(fpt(N), dtype=float)


def _check_inputs(params, tokens, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrs = []
    for name, v in (("params", params), ("tokens", tokens), ("loss", loss)):
        a = np.asarray(v, dtype=float).reshape(-1)
        bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
        if bad.size:
            raise DelphiError(f"parametric fit: {name} must be positive and finite; row {int(bad[0])} has {a[bad[0]]!r}")
        arrs.append(a)
    if not (len(arrs[0]) == len(arrs[1]) == len(arrs[2])):
        raise DelphiError("parametric fit: params, tokens and loss must have the same length")
    if len(arrs[0]) < 6:
        raise DelphiError(f"parametric fit: need at least 6 runs for 5 parameters, got {len(arrs[0])}")
    return tuple(arrs)


def fit_parametric(params, tokens, loss, *, delta: float = 1e-3, grid: dict | None = None,
                   bootstrap: int = 200, seed: int = 0, confidence: float = 0.95) -> ParametricFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to runs (N params, D tokens, final loss)."""
    N, D, L = _check_inputs(params, tokens, loss)
    cn, cd = float(np.log(N).mean()), float(np.log(D).mean())
    u, v, y = np.log(N) - cn, np.log(D) - cd, np.log(L)

    def to_internal(theta):  # a' = a - alpha·cn, b' = b - beta·cd (exact reparametrisation)
        t = theta.copy()
        t[:, 0] -= t[:, 3] * cn
        t[:, 1] -= t[:, 4] * cd
        return t

    def to_lse(t):
        theta = t.copy()
        theta[:, 0] += theta[:, 3] * cn
        theta[:, 1] += theta[:, 4] * cd
        return theta

    starts = _grid_starts(grid or CHINCHILLA_GRID)
    res = minimize_batched(lambda t, rows: huber_objective(t, u, v, y, delta), to_internal(starts),
                           gtol=GRID_GTOL, ftol=GRID_FTOL, max_iter=GRID_MAX_ITER)
    if not np.isfinite(res.f).any():
        raise DelphiError("parametric fit: the objective is not finite at any start (check the data for extreme values)")
    best = int(np.nanargmin(res.f))
    pol = minimize_batched(lambda t, rows: huber_objective(t, u, v, y, delta), res.x[best:best + 1],
                           gtol=POLISH_GTOL, ftol=POLISH_FTOL, max_iter=5000)
    t_best = pol.x[0] if pol.f[0] <= res.f[best] else res.x[best]
    f_best = float(min(pol.f[0], res.f[best]))
    at_best = int(np.sum(res.f <= f_best * (1 + 1e-9) + 1e-15))

    boot, boot_ok = None, 0
    if bootstrap:
        W = bs.resample_weights(len(L), bootstrap, seed=seed)
        x0 = np.repeat(t_best[None, :], bootstrap, axis=0)
        bres = minimize_batched(lambda t, rows: huber_objective(t, u, v, y, delta, W[rows]), x0,
                                gtol=POLISH_GTOL, ftol=POLISH_FTOL, max_iter=2000)
        boot, boot_ok = _lse_to_params(to_lse(bres.x)), int(bres.converged.sum())

    E, A, B, al, be = _lse_to_params(to_lse(t_best[None, :]))[0]
    return ParametricFit(E=float(E), A=float(A), B=float(B), alpha=float(al), beta=float(be),
                         huber_loss=f_best, delta=delta, n_runs=len(L), n_starts=len(starts),
                         n_starts_at_best=at_best, converged=bool(pol.converged[0]),
                         status=STATUS_TEXT[int(pol.status[0])], confidence=confidence,
                         bootstrap_params=boot, n_bootstrap_converged=boot_ok,
                         flags=tuple(parametric_flags(N, D, L, float(al), float(be))))
