"""L-BFGS for many independent problems at once (numpy, no Python loop over problems).

Scaling-law fits solve the same small problem (five parameters, a few hundred points) from
thousands of starting points, and again for every bootstrap resample. Running scipy's L-BFGS-B
once per start spends almost all its time in per-call Python overhead; here every problem is a
row of one array, each iteration does one vectorised two-loop recursion and one vectorised
backtracking line search, and rows leave the active set as they converge.

`fun(x, rows)` must return `(f, g)` for the problems `rows` at points `x` (shape `[len(rows), P]`):
rows let a caller keep per-problem data (e.g. bootstrap weights) and index it.

Convergence per row (like L-BFGS-B's pgtol/factr, but relative without a floor of 1, because a
sum of Huber losses is ~1e-3 and an absolute test would stop far from the optimum):
  max |g| <= gtol, or (f_old - f_new) <= ftol * max(|f_old|, |f_new|, tiny).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRADIENT, FTOL, LINE_SEARCH, MAX_ITER = 0, 1, 2, 3
STATUS_TEXT = {GRADIENT: "gradient below gtol", FTOL: "relative decrease below ftol",
               LINE_SEARCH: "no further decrease along steepest descent", MAX_ITER: "iteration limit"}


@dataclass(frozen=True, eq=False)
class BatchResult:
    x: np.ndarray  # [B, P] final points
    f: np.ndarray  # [B] objective at x
    status: np.ndarray  # [B] one of GRADIENT, FTOL, LINE_SEARCH, MAX_ITER
    n_iter: np.ndarray  # [B] iterations taken
    n_eval: int  # objective+gradient evaluations, summed over rows

    @property
    def converged(self) -> np.ndarray:
        return self.status != MAX_ITER


def minimize_batched(fun, x0: np.ndarray, *, memory: int = 10, max_iter: int = 2000,
                     gtol: float = 1e-9, ftol: float = 1e-13, max_line_search: int = 40,
                     c1: float = 1e-4) -> BatchResult:
    """Minimise B independent smooth functions with L-BFGS (two-loop recursion, Armijo backtracking)."""
    x = np.array(x0, dtype=float, copy=True)
    B, P = x.shape
    m = memory
    S = np.zeros((B, m, P))
    Y = np.zeros((B, m, P))
    rho = np.zeros((B, m))  # 0 marks an empty slot: it then contributes nothing to the recursion
    f, g = fun(x, np.arange(B))
    f, g = np.array(f, dtype=float), np.array(g, dtype=float)
    status = np.full(B, MAX_ITER)
    n_iter = np.zeros(B, dtype=int)
    counter = [B]  # objective evaluations, summed over rows
    active = np.flatnonzero(np.abs(g).max(axis=1) > gtol)
    status[np.setdiff1d(np.arange(B), active)] = GRADIENT

    with np.errstate(all="ignore"):  # a row that overflows gets a non-finite step: it is rejected, not fatal
        _loop(fun, x, f, g, S, Y, rho, status, n_iter, active, m, max_iter, gtol, ftol, max_line_search, c1, counter)
    return BatchResult(x=x, f=f, status=status, n_iter=n_iter, n_eval=counter[0])


def _loop(fun, x, f, g, S, Y, rho, status, n_iter, active, m, max_iter, gtol, ftol, max_line_search, c1, counter):
    for _ in range(max_iter):
        if active.size == 0:
            break
        a = active
        xa, fa, ga = x[a], f[a], g[a]
        Sa, Ya, rhoa = S[a], Y[a], rho[a]
        d, has_mem = _two_loop_direction(ga, Sa, Ya, rhoa, m)
        gd = np.einsum("bp,bp->b", ga, d)
        bad = ~(gd < 0) | ~np.isfinite(gd)  # not a descent direction: restart from steepest descent
        if bad.any():
            d[bad] = -ga[bad]
            gd[bad] = -np.einsum("bp,bp->b", ga[bad], ga[bad])
            has_mem[bad] = False
            rho[a[bad]] = 0.0
            S[a[bad]] = 0.0
            Y[a[bad]] = 0.0
        # Without curvature information the first step has unit length (as L-BFGS-B does).
        t = np.where(has_mem, 1.0, np.minimum(1.0, 1.0 / np.sqrt(-gd)))

        x_new, f_new, g_new, ok = _line_search(fun, a, xa, fa, ga, d, gd, t, max_line_search, c1, counter)

        # Rows whose line search failed: retry once from steepest descent with empty memory;
        # if they already had no memory, nothing decreases f any more: stop them.
        failed = ~ok
        stop_ls = failed & ~has_mem
        status[a[stop_ls]] = LINE_SEARCH
        reset = a[failed & has_mem]
        rho[reset] = 0.0
        S[reset] = 0.0
        Y[reset] = 0.0

        oka = a[ok]
        s_vec = x_new[ok] - xa[ok]
        y_vec = g_new[ok] - ga[ok]
        sy = np.einsum("bp,bp->b", s_vec, y_vec)
        keep = sy > 1e-12 * np.einsum("bp,bp->b", y_vec, y_vec)  # skip pairs without positive curvature
        Sk, Yk, rk = S[oka], Y[oka], rho[oka]
        Sk[keep] = np.roll(Sk[keep], -1, axis=1)
        Yk[keep] = np.roll(Yk[keep], -1, axis=1)
        rk[keep] = np.roll(rk[keep], -1, axis=1)
        Sk[keep, -1], Yk[keep, -1], rk[keep, -1] = s_vec[keep], y_vec[keep], 1.0 / sy[keep]
        S[oka], Y[oka], rho[oka] = Sk, Yk, rk
        rel = (fa[ok] - f_new[ok]) <= ftol * np.maximum(np.maximum(np.abs(fa[ok]), np.abs(f_new[ok])), 1e-300)
        x[oka], f[oka], g[oka] = x_new[ok], f_new[ok], g_new[ok]
        n_iter[a] += 1
        gconv = np.abs(g_new[ok]).max(axis=1) <= gtol
        status[oka[gconv]] = GRADIENT
        status[oka[~gconv & rel]] = FTOL
        active = a[(ok & (status[a] == MAX_ITER)) | (failed & has_mem)]


def _two_loop_direction(ga, Sa, Ya, rhoa, m):
    """The L-BFGS search direction −H·g of every row by the two-loop recursion (newest pair in
    slot m-1), and which rows have curvature pairs in memory."""
    q = ga.copy()
    alpha = np.zeros((ga.shape[0], m))
    for i in range(m - 1, -1, -1):
        alpha[:, i] = rhoa[:, i] * np.einsum("bp,bp->b", Sa[:, i], q)
        q -= alpha[:, i, None] * Ya[:, i]
    has_mem = rhoa[:, -1] > 0
    # Initial inverse-Hessian scale s·y / y·y of the newest pair (= 1 / (rho · y·y)).
    ryy = rhoa[:, -1] * np.einsum("bp,bp->b", Ya[:, -1], Ya[:, -1])
    gamma = np.ones(ga.shape[0])
    np.divide(1.0, ryy, out=gamma, where=has_mem & (ryy > 0))
    r = gamma[:, None] * q
    for i in range(m):
        beta = rhoa[:, i] * np.einsum("bp,bp->b", Ya[:, i], r)
        r += Sa[:, i] * (alpha[:, i] - beta)[:, None]
    return -r, has_mem


def _line_search(fun, a, xa, fa, ga, d, gd, t, max_line_search, c1, counter):
    """Backtracking line search (Armijo) along `d`, all rows of the batch together; `t` (the first
    step of each row) is shortened in place. Returns the accepted points and which rows found one."""
    x_new = np.empty_like(xa)
    f_new = np.full(a.size, np.inf)
    g_new = np.empty_like(ga)
    ok = np.zeros(a.size, dtype=bool)
    todo = np.arange(a.size)
    for _ls in range(max_line_search):
        xt = xa[todo] + t[todo, None] * d[todo]
        ft, gt = fun(xt, a[todo])
        counter[0] += todo.size
        acc = np.isfinite(ft) & (ft <= fa[todo] + c1 * t[todo] * gd[todo])
        idx = todo[acc]
        x_new[idx], f_new[idx], g_new[idx] = xt[acc], ft[acc], gt[acc]
        ok[idx] = True
        rej = todo[~acc]
        if rej.size == 0:
            break
        # Quadratic interpolation of f along d, kept within [0.1 t, 0.5 t].
        ft_r = ft[~acc]
        t_r = t[rej]
        denom = 2.0 * (ft_r - fa[rej] - gd[rej] * t_r)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_q = -gd[rej] * t_r ** 2 / denom
        t_q = np.where(np.isfinite(t_q), t_q, 0.5 * t_r)
        t[rej] = np.clip(t_q, 0.1 * t_r, 0.5 * t_r)
        todo = rej
    return x_new, f_new, g_new, ok
