"""Speed of the Approach 3 fit: Chinchilla's 4,500-start grid on Epoch's 240 Chinchilla runs.

Ours: `delphi.fit.parametric.fit_parametric` (all starts as rows of one batched L-BFGS, analytic
gradients). Baseline: a straightforward loop of `scipy.optimize.minimize(method="L-BFGS-B")`, one
call per start, numeric (2-point) gradients, scipy's default tolerances, on the same objective
(sum of Huber(1e-3) of log residuals, log-sum-exp form). For context, the same loop with the
analytic gradient is also timed.

The baseline loop is independent per start, so its time is linear in the number of starts; with
--stride k it runs every k-th start and its time is scaled by the number of starts (the output
says so). --stride 1 runs the whole grid.

    python benchmarks/fit_speed.py --stride 5 [--append-results]

`--part loss-law` times the loss law's bootstrap instead: `fit_loss_law(..., bootstrap=2000)` (every
resample a row of one batch, variable projection over alpha) vs a loop of `scipy.optimize.curve_fit`
per resample from 5 starting exponents (the best feasible one kept), same resamples.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from delphi.fit.parametric import CHINCHILLA_GRID, _grid_starts, fit_parametric, huber_objective

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "fit" / "chinchilla_epoch_svg_extracted_data.csv"


def load():
    d = pd.read_csv(DATA).sort_values("loss").iloc[:-5]
    N = d["Model Size"].to_numpy(float)
    return N, d["Training FLOP"].to_numpy(float) / (6 * N), d["loss"].to_numpy(float)


def baseline(starts, lN, lD, lL, analytic: bool):
    """One scipy L-BFGS-B call per start; returns (best objective, best x, seconds, evaluations)."""
    def f(p):  # Epoch's objective, written plainly
        a, b, e, al, be = p
        r = np.log(np.exp(a - al * lN) + np.exp(b - be * lD) + np.exp(e)) - lL
        ar = np.abs(r)
        return np.sum(np.where(ar <= 1e-3, 0.5 * r * r, 1e-3 * (ar - 0.5e-3)))

    def fg(p):
        v, g = huber_objective(p[None], lN, lD, lL)
        return v[0], g[0]

    best, best_x, nfev = np.inf, None, 0
    t = time.perf_counter()
    with np.errstate(all="ignore"):
        for x0 in starts:
            res = minimize(fg, x0, jac=True, method="L-BFGS-B") if analytic else minimize(f, x0, method="L-BFGS-B")
            nfev += res.nfev
            if res.fun < best:
                best, best_x = float(res.fun), res.x
    return best, best_x, time.perf_counter() - t, nfev


def loss_law_part(args) -> list[str]:
    from scipy.optimize import curve_fit

    from delphi.fit import bootstrap as bs
    from delphi.fit.loss_law import fit_loss_law

    C = np.array([3e18, 6e18, 1e19, 3e19, 6e19, 1e20, 3e20])
    y = 1.6 + 2.1e3 * C ** -0.17 + np.random.default_rng(1).normal(0, 0.005, len(C))
    fit_loss_law(C, y, bootstrap=10)  # warm-up
    t = time.perf_counter()
    law = fit_loss_law(C, y, bootstrap=args.resamples, seed=0)
    ours = time.perf_counter() - t
    W = bs.resample_weights(len(C), args.resamples, seed=0, min_distinct=4)
    c0 = np.exp(np.log(C).mean())
    f = lambda c, E, A, al: E + A * (c / c0) ** -al  # noqa: E731
    params, t = [], time.perf_counter()
    with np.errstate(all="ignore"):
        for w in W:
            idx = np.repeat(np.arange(len(C)), w)
            best = None
            for al0 in (0.05, 0.1, 0.2, 0.4, 0.8):
                try:
                    p, _ = curve_fit(f, C[idx], y[idx], p0=[0.5 * y.min(), 1.0, al0],
                                     bounds=([0, 0, 1e-3], [y[idx].min(), np.inf, 3]), maxfev=20000)
                except (RuntimeError, ValueError):
                    continue
                sse = np.sum((f(C[idx], *p) - y[idx]) ** 2)
                if best is None or sse < best[0]:
                    best = (sse, p)
            params.append(best[1])
    loop = time.perf_counter() - t
    pb = np.array(params)
    pred_loop = pb[:, 0] + pb[:, 1] * (1e22 / c0) ** -pb[:, 2]
    lo, hi = law.interval(1e22)
    lo2, hi2 = np.percentile(pred_loop, [2.5, 97.5])
    return [f"loss law on 7 synthetic optima, {args.resamples} bootstrap resamples (>= 4 distinct points each)",
            f"ours (fit_loss_law, all resamples in one batch): {ours:.3f} s",
            f"baseline (curve_fit per resample, 5 starts, bounded): {loop:.1f} s",
            f"95% interval at 1e22: ours [{lo:.5f}, {hi:.5f}], baseline [{lo2:.5f}, {hi2:.5f}]",
            f"speed-up: {loop / ours:.0f}x"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["parametric", "loss-law"], default="parametric")
    ap.add_argument("--resamples", type=int, default=2000, help="(loss-law) bootstrap resamples")
    ap.add_argument("--stride", type=int, default=5, help="baseline runs every k-th start (1: all 4,500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of our fit (median reported)")
    ap.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.part == "loss-law":
        lines = loss_law_part(args)
        title = "fit_speed: loss-law bootstrap, batched vs per-resample curve_fit"
        cmd = f"python benchmarks/fit_speed.py --part loss-law --resamples {args.resamples} --append-results"
    else:
        lines = parametric_part(args)
        title = "fit_speed: Approach 3 grid fit, ours vs per-start scipy L-BFGS-B"
        cmd = f"python benchmarks/fit_speed.py --stride {args.stride} --repeats {args.repeats} --append-results"
    print("\n".join(lines))
    if args.append_results:
        append(title, cmd, lines)


def parametric_part(args) -> list[str]:
    N, D, L = load()
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    starts = _grid_starts(CHINCHILLA_GRID)
    sub = starts[:: args.stride]
    scale = len(starts) / len(sub)

    fit_parametric(N, D, L, bootstrap=0)  # warm-up (imports, allocator)
    ours_t = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        fit = fit_parametric(N, D, L, bootstrap=0)
        ours_t.append(time.perf_counter() - t)
    ours = float(np.median(ours_t))

    b_num, _, t_num, ev_num = baseline(sub, lN, lD, lL, analytic=False)
    b_ana, _, t_ana, _ = baseline(sub, lN, lD, lL, analytic=True)
    full_num, full_ana = t_num * scale, t_ana * scale

    lines = [
        f"data: Epoch's Chinchilla runs, 5 highest losses dropped ({len(L)} runs); grid {len(starts)} starts",
        f"ours (batched L-BFGS, analytic gradient, all starts together): {ours:.2f} s "
        f"(median of {args.repeats}: {', '.join(f'{t:.2f}' for t in ours_t)}), "
        f"objective {fit.huber_loss:.15g}, E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} alpha={fit.alpha:.4f} beta={fit.beta:.4f}",
        f"baseline (scipy L-BFGS-B per start, numeric gradients): {t_num:.1f} s for {len(sub)} starts "
        f"({ev_num} evaluations) -> {full_num:.1f} s for {len(starts)} starts"
        + (" (scaled linearly)" if args.stride > 1 else "") + f", best objective {b_num:.15g}",
        f"context (scipy L-BFGS-B per start, analytic gradient): {t_ana:.1f} s for {len(sub)} starts "
        f"-> {full_ana:.1f} s for {len(starts)} starts, best objective {b_ana:.15g}",
        f"same optimum: |ours - baseline| = {abs(fit.huber_loss - b_num):.2e} (numeric), "
        f"{abs(fit.huber_loss - b_ana):.2e} (analytic); ours <= baseline: {fit.huber_loss <= b_num + 1e-15}",
        f"speed-up vs numeric-gradient loop: {full_num / ours:.1f}x; vs analytic-gradient loop: {full_ana / ours:.1f}x",
    ]
    return lines


def append(title: str, cmd: str, lines: list[str]) -> None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = "?"
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    section = [
        "", f"## {title} ({time.strftime('%Y-%m-%d')})", "",
        f"Command: `{cmd}` (commit {commit}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_avg:.1f} at the end; both sides measured in the same run)", "",
        *[f"- {line}" for line in lines], "",
    ]
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
        fh.write("\n".join(section))
    print("appended to benchmarks/RESULTS.md")

if __name__ == "__main__":
    main()
