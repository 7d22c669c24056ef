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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stride", type=int, default=5, help="baseline runs every k-th start (1: all 4,500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of our fit (median reported)")
    ap.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    args = ap.parse_args()

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

    b_num, x_num, t_num, ev_num = baseline(sub, lN, lD, lL, analytic=False)
    b_ana, x_ana, t_ana, ev_ana = baseline(sub, lN, lD, lL, analytic=True)
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
    print("\n".join(lines))
    if args.append_results:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip()
        except OSError:
            commit = "?"
        load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        section = [
            "", f"## fit_speed: Approach 3 grid fit, ours vs per-start scipy L-BFGS-B ({time.strftime('%Y-%m-%d')})", "",
            f"Command: `python benchmarks/fit_speed.py --stride {args.stride} --repeats {args.repeats} --append-results` "
            f"(commit {commit}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {load_avg:.1f} at the end; both sides measured in the same run)", "",
            *[f"- {line}" for line in lines], "",
        ]
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n".join(section))
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
