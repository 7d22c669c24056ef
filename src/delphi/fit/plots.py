"""Figures for the fits (matplotlib, Agg backend: works without a display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from delphi.errors import DelphiError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as e:
        raise DelphiError(f"plot: cannot write {p}: {e}") from None
    finally:
        _plt().close(fig)
    return p


def _draw_parabolas(ax, iso) -> None:
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    n = max(len(iso.buckets), 1)
    for i, b in enumerate(iso.buckets):
        col = cmap(i / max(n - 1, 1))
        ax.scatter(b.tokens, b.loss, color=col, s=18, zorder=3)
        if b.coeffs is not None and b.usable:
            lo, hi = min(min(b.tokens), b.optimal_tokens), max(max(b.tokens), b.optimal_tokens)
            d = np.geomspace(lo / 1.3, hi * 1.3, 100)
            ax.plot(d, b.predict(d), color=col, lw=1.2, label=f"C = {b.flops:.2g}")
            ax.scatter([b.optimal_tokens], [b.optimal_loss], marker="*", s=140, zorder=4,
                       facecolor="none" if b.flags else col, edgecolor="k", linewidth=0.8)
        else:
            ax.plot([], [], color=col, lw=0, marker="o", label=f"C = {b.flops:.2g} (skipped)")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D (log scale)")
    ax.set_ylabel(f"{iso.metric}")
    ax.set_title("IsoFLOP parabolas in log10(D)\n(stars: vertices; hollow: outside the grid)")
    ax.legend(fontsize=7, ncol=2)


def plot_isoflop(iso, path) -> Path:
    """Left: each bucket's runs, Huber parabola and vertex. Right: D*(C), N*(C) and their laws."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    _draw_parabolas(ax, iso)
    used = iso.used
    if used:
        C = np.array([b.flops for b in used])
        ax2.scatter(C, [b.optimal_tokens for b in used], color="C0", label="D* (tokens)", zorder=3)
        ax2.scatter(C, [b.optimal_params for b in used], color="C1", label="N* (params)", zorder=3)
        if iso.tokens_law is not None:
            cc = np.geomspace(C.min() / 2, C.max() * 2, 50)
            t, p = iso.tokens_law, iso.params_law
            ax2.plot(cc, t.predict(cc), color="C0", label=f"D* = {t.A:.3g}·C^{t.alpha:.3f}")
            ax2.plot(cc, p.predict(cc), color="C1", label=f"N* = {p.A:.3g}·C^{p.alpha:.3f}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("compute C (FLOPs, log scale)")
    ax2.set_ylabel("compute-optimal tokens / parameters (log scale)")
    ax2.set_title("allocation laws")
    ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_loss_law(law, path, targets=(), pure=None, metric: str = "loss", iso=None) -> Path:
    """The law with its bootstrap band through the optima, predictions at the targets, and the
    residuals; with the IsoFLOP fit (`iso`), its parabolas and vertices in a first panel."""
    plt = _plt()
    if iso is not None:
        fig, (ax0, ax, ax2) = plt.subplots(1, 3, figsize=(18, 5), layout="constrained", gridspec_kw={"width_ratios": [3, 3, 2]})
        _draw_parabolas(ax0, iso)
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained", gridspec_kw={"width_ratios": [2, 1]})
    C = np.array(law.flops)
    y = np.array(law.values)
    hi_c = max([C.max(), *targets]) * 2
    cc = np.geomspace(C.min() / 2, hi_c, 200)
    if law.bootstrap_params is not None:
        lo, hi = law.interval(cc)
        ax.fill_between(cc, lo, hi, color="C0", alpha=0.2,
                        label=f"{100 * law.confidence:g}% bootstrap band ({len(law.bootstrap_params)} resamples)")
    ax.plot(cc, law.predict(cc), color="C0", label=law.equation(digits=3))
    if pure is not None:
        ax.plot(cc, pure.predict(cc), color="C2", ls="--", label=f"pure power law {pure.A:.3g}·C^-{pure.alpha:.3f}")
    ax.scatter(C, y, color="k", zorder=3, label="IsoFLOP optima")
    if len(targets):
        t = np.asarray(targets, dtype=float)
        p = law.predict(t)
        if law.bootstrap_params is not None:
            lo, hi = law.interval(t)
            ax.errorbar(t, p, yerr=[p - lo, hi - p], fmt="s", color="C3", capsize=4, label="predictions")
        else:
            ax.scatter(t, p, marker="s", color="C3", label="predictions")
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs, log scale)")
    ax.set_ylabel(f"compute-optimal {metric}")
    ax.set_title("loss law through the IsoFLOP optima")
    ax.legend(fontsize=8)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.scatter(C, y - law.predict(C), color="k")
    ax2.set_xscale("log")
    ax2.set_xlabel("compute C (FLOPs, log scale)")
    ax2.set_ylabel(f"residual (observed - law), {metric}")
    ax2.set_title("residuals")
    return _save(fig, path)


def plot_parametric(fit, N, D, L, path, metric: str = "loss") -> Path:
    """Left: loss vs tokens (coloured by model size) with L(N, D) at five sizes. Right: log residuals vs 6ND."""
    plt = _plt()
    N, D, L = (np.asarray(v, dtype=float) for v in (N, D, L))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    C = 6 * N * D
    sc = ax.scatter(D, L, c=np.log10(N), cmap="viridis", s=14, zorder=3)
    fig.colorbar(sc, ax=ax, label="log10 N (parameters)")
    cmap = plt.get_cmap("viridis")
    lnmin, lnmax = np.log10(N).min(), np.log10(N).max()
    for q in np.linspace(lnmin, lnmax, 5):
        dd = np.geomspace(D.min(), D.max(), 100)
        ax.plot(dd, fit.predict(10 ** q, dd), color=cmap((q - lnmin) / max(lnmax - lnmin, 1e-12)), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D (log scale)")
    ax.set_ylabel(f"{metric}")
    ax.set_title(f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.3f} + {fit.B:.3g}/D^{fit.beta:.3f}")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.scatter(C, np.log(L) - np.log(fit.predict(N, D)), s=10, color="k")
    ax2.set_xscale("log")
    ax2.set_xlabel("compute 6·N·D (FLOPs, log scale)")
    ax2.set_ylabel("log observed - log predicted")
    ax2.set_title(f"residuals (Huber loss {fit.huber_loss:.4g})")
    return _save(fig, path)


def plot_backtest(bt, path) -> Path:
    """Residual (actual vs forecast, %) against the extrapolation factor, one colour per number of
    fitted budgets, with each forecast's interval as an error bar; one panel per law form."""
    plt = _plt()
    forms = list(bt.forms)
    fig, axes = plt.subplots(1, len(forms), figsize=(6.5 * len(forms), 4.8), layout="constrained", squeeze=False)
    cmap = plt.get_cmap("viridis")
    ks = sorted({len(r.fit_budgets) for r in bt.rows})
    for ax, form in zip(axes[0], forms):
        ax.axhline(0, color="grey", lw=0.8)
        for i, k in enumerate(ks):
            rows = [r for r in bt.rows if r.form == form and len(r.fit_budgets) == k]
            if not rows:
                continue
            f = np.array([r.factor for r in rows])
            res = np.array([r.residual_pct for r in rows])
            col = cmap(i / max(len(ks) - 1, 1))
            # The interval in residual units: where the actual could land, relative to the forecast.
            with_ci = [(r.factor, 100 * (r.ci_low - r.forecast) / r.forecast, 100 * (r.ci_high - r.forecast) / r.forecast)
                       for r in rows if r.ci_low is not None]
            if with_ci:
                cf, clo, chi = (np.array(v) for v in zip(*with_ci))
                ax.vlines(cf, clo, chi, color=col, alpha=0.35, lw=4)
            ax.plot(f, res, "o-", color=col, ms=5, lw=1, label=f"fit on lowest {k} budgets ({rows[0].fit_budgets[-1]:.2g})")
        cov = bt.coverage(form)
        ax.set_xscale("log")
        ax.set_xlabel("extrapolation factor (target budget / largest fitted budget, log scale)")
        ax.set_ylabel(f"residual, 100·(actual − forecast)/forecast  [{bt.metric}]")
        title = f"{form}: {FORMS_TEXT.get(form, form)}"
        if cov is not None:
            title += f"\n{100 * bt.confidence:g}% intervals (bars) cover {100 * cov:.0f}% of the actuals"
        ax.set_title(title)
        ax.legend(fontsize=7)
    return _save(fig, path)


FORMS_TEXT = {"asymptote": "L = E + A·C^-alpha", "power": "L = A·C^-alpha", "ceiling": "1/L = 1/H + C^alpha/A"}
