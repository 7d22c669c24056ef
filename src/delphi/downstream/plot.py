"""Delphi-style two-panel downstream figure: soft metric vs compute (step 1, left) and accuracy
vs soft metric with the pool and the sigmoid (step 2, right); forecasts marked in both."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_forecast(fc, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    s1, s2 = fc.step1, fc.step2
    colors = plt.cm.viridis(np.linspace(0.15, 0.85, max(len(fc.target_flops), 1)))

    # Left: step 1.
    C = np.array(s1.flops)
    cmin, cmax = C.min() / 2, max(max(fc.target_flops), C.max()) * 2
    grid = np.logspace(np.log10(cmin), np.log10(cmax), 60)
    ax1.plot(grid, s1.predict(grid), "k--", lw=1.2, label="power law (step 1)")
    band = np.array([s1.interval(c) for c in grid])
    ax1.fill_between(grid, band[:, 0], band[:, 1], color="0.6", alpha=0.25, lw=0,
                     label=f"{int(100 * fc.confidence)}% bootstrap")
    ax1.scatter(C, s1.values, color="tab:blue", zorder=3, label="suite optima")
    for c, s, (lo, hi), col in zip(fc.target_flops, fc.soft_pred, fc.soft_interval, colors):
        ax1.errorbar([c], [s], yerr=_bars(s, lo, hi), fmt="*", ms=12, color=col, capsize=3, zorder=4,
                     label=f"forecast {c:.0e}")
    ax1.set_xscale("log")
    ax1.set_xlabel("training compute C (FLOPs)")
    ax1.set_ylabel(fc.soft)
    ax1.set_title("step 1: soft metric vs compute")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)

    # Right: step 2.
    pool = fc.pool
    xs_all = np.concatenate([pool["soft"].to_numpy(dtype=float), np.array(fc.soft_pred), np.array(s1.values)])
    lo_x, hi_x = xs_all.min(), xs_all.max()
    pad = 0.08 * (hi_x - lo_x or 1.0)
    xg = np.linspace(lo_x - pad, hi_x + pad, 200)
    ax2.scatter(pool["soft"], pool["hard"], s=14, color="tab:gray", alpha=0.6, label="pool models")
    if len(s2.samples):
        blo, bhi = s2.interval(xg, fc.confidence)
        ax2.fill_between(xg, blo, bhi, color="tab:red", alpha=0.15, lw=0, label="sigmoid bootstrap")
    ax2.plot(xg, s2.predict(xg), color="tab:red", lw=1.5, label="sigmoid (step 2)")
    if s2.floor > 0:
        ax2.axhline(s2.floor, color="0.4", ls=":", lw=1, label=f"chance floor {s2.floor:.2f}")
    for c, s, (slo, shi), a, (alo, ahi), col in zip(fc.target_flops, fc.soft_pred, fc.soft_interval, fc.acc_pred,
                                                     fc.acc_interval, colors):
        ax2.errorbar([s], [a], xerr=_bars(s, slo, shi), yerr=_bars(a, alo, ahi), fmt="*", ms=12,
                     color=col, capsize=3, zorder=4, label=f"{c:.0e}: {100 * a:.1f}% [{100 * alo:.1f}, {100 * ahi:.1f}]")
    ax2.set_xlabel(fc.soft)
    ax2.set_ylabel("accuracy")
    ax2.set_title("step 2: accuracy vs soft metric")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _bars(value: float, lo: float, hi: float) -> list[list[float]]:
    """Error-bar lengths; a bootstrap percentile interval need not contain the point estimate
    (e.g. a saturated sigmoid), so a side that would be negative is drawn with zero length."""
    return [[max(0.0, value - lo)], [max(0.0, hi - value)]]
