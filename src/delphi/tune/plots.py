"""Figures for the tuning commands (matplotlib, Agg backend: files only, no display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_x(ax) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on < 2 decades


def plot_partial_dependence(table, space, best_trial: int, path: Path) -> Path:
    """Loss vs each searched constant across completed trials; the chosen trial is a red star and
    a dashed line; colour shows trial order (where the sampler concentrated later trials)."""
    plt = _plt()
    done = table[table["state"] == "COMPLETE"]
    n = len(space)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    best = done[done["trial"] == best_trial]
    for ax, p in zip(axes.flat, space):
        x = done[p.constant].to_numpy(dtype=float)
        y = done["loss"].to_numpy(dtype=float)
        shown_x = 1 - x if p.constant == "beta2_0" else x
        ax.scatter(shown_x, y, s=22, c=done["trial"], cmap="viridis", alpha=0.85, label="trials (colour: order)")
        if len(best):
            bx = float(best[p.constant].iloc[0])
            bx = 1 - bx if p.constant == "beta2_0" else bx
            ax.axvline(bx, color="tab:red", ls="--", lw=1)
            ax.scatter([bx], [float(best["loss"].iloc[0])], marker="*", s=180, color="tab:red", zorder=5,
                       label=f"chosen: {bx:.3g}")
        if p.log:
            _log_x(ax)
        # The whole searched range, so a choice at its edge (range too narrow) is visible.
        pad = (p.high / p.low) ** 0.03 if p.log else 0.0
        ax.set_xlim(p.low / pad, p.high * pad) if p.log else ax.set_xlim(p.low - 0.03 * (p.high - p.low),
                                                                         p.high + 0.03 * (p.high - p.low))
        ax.set_xlabel("1 − β2,0" if p.constant == "beta2_0" else p.constant)
        ax.set_ylabel("macro validation loss")
        if len(y):
            lo = float(np.min(y))
            hi = float(np.quantile(y, 0.9)) if len(y) >= 10 else float(np.max(y))
            top = hi + 0.1 * max(hi - lo, 1e-3)
            ax.set_ylim(lo - 0.05 * max(hi - lo, 1e-3), top)
            above = y > top
            if above.any():  # clipped trials stay visible as triangles on the top edge
                ax.scatter(shown_x[above], np.full(above.sum(), top), marker="^", s=30, color="gray",
                           clip_on=False, label="loss above the axis")
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"delphi tune search: {len(done)} completed trials"
                 + (" (loss axis clipped at the 90th percentile: ▲)" if len(done) >= 10 else ""),
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_horizon(fit, lrs: Sequence[Sequence[float]], losses: Sequence[Sequence[float]],
                 recipe_lrs: Sequence[float], path: Path) -> Path:
    """Left: each horizon's LR sweep with its fitted optimum and the recipe's LR. Right: η*(T)
    with the fitted power law and the recipe's own exponent through the same reference."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(fit.tokens)))
    for T, l, y, r, lo, yo, c in zip(fit.tokens, lrs, losses, recipe_lrs, fit.lr_opt, fit.loss_opt, colors):
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        a1.plot(np.asarray(l)[ok], y[ok], "o-", color=c, label=f"T = {T:.3g}")
        a1.plot([lo], [yo], "*", ms=14, color=c, mec="k")
        a1.axvline(r, color=c, ls=":", lw=1)
    _log_x(a1)
    a1.set_xlabel("projection (AdamH) LR")
    a1.set_ylabel("macro validation loss")
    a1.set_title("LR sweeps (★ fitted optimum, dotted: recipe LR)", fontsize=9)
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    T = np.asarray(fit.tokens)
    grid = np.geomspace(T.min() / 1.5, T.max() * 1.5, 50)
    a2.loglog(T, fit.lr_opt, "o", color="k", label="η*(T) per horizon")
    a2.loglog(grid, fit.predict(grid), "-", color="tab:blue",
              label=f"fit: exponent {fit.exponent:.3f} [{fit.interval[0]:.2f}, {fit.interval[1]:.2f}]")
    a2.loglog(grid, fit.lr_at_ref * (fit.ref_tokens / grid) ** 0.3, "--", color="tab:gray",
              label="Delphi's exponent 0.3 (same η*(T0))")
    a2.set_xlabel("token horizon T")
    a2.set_ylabel("optimal LR")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_transfer(checks, path: Path) -> Path:
    """One panel per setting: the LR sweep, the tolerance band above its best, the recipe's LR."""
    plt = _plt()
    n = len(checks)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, c in zip(axes.flat, checks):
        lr = np.asarray(c.lrs)
        y = np.asarray(c.losses, dtype=float)
        ok = np.isfinite(y)
        ax.plot(lr[ok], y[ok], "o-", color="k")
        ax.axhspan(c.best_loss, c.best_loss * (1 + c.tolerance), color="tab:green", alpha=0.2,
                   label=f"within {c.tolerance:.1%} of best")
        ax.axvline(c.recipe_lr, color="tab:green" if c.ok else "tab:red", ls="--",
                   label=f"recipe LR {c.recipe_lr:.3g} ({'pass' if c.ok else 'FAIL'})")
        _log_x(ax)
        ax.set_title(f"width {c.hidden}, batch {c.batch}, T {c.tokens:.3g}", fontsize=9)
        ax.set_xlabel("projection LR")
        ax.set_ylabel("macro validation loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
