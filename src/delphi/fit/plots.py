"""The fit figures, drawn one way for `delphi fit ... --plot` and for the suite report.

matplotlib with the Agg backend (works without a display). The conventions hold in every figure,
so a reader can move between them without re-learning them: one colour per compute budget
(viridis, small budgets dark), runs as dots, compute-optimal points as black-edged diamonds (white
when the bucket is flagged), held-out runs as red stars, forecasts as red bars with their interval,
law segments beyond the fitted compute dashed.

The drawing lives in axes-level functions, each the only code that draws its part:
`draw_isoflop` (runs, parabolas and vertices per budget), `draw_allocation` (N*(C) or D*(C) with its
power law), `draw_loss_law` (the law through the optima, its band, forecasts and held-out runs) and
`draw_residuals`. `plot_isoflop` and `plot_loss_law` lay them out for the CLI; the report
(`delphi.report.plots`) lays out the same functions with what only a suite has (its grid runs,
registered forecasts, held-out actuals). Figures are built inside `figure_style()` and written by
`save_png`, at the style's `savefig.dpi`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from delphi import fmt
from delphi.errors import DelphiError

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 130, "font.size": 9.5, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 8.5, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
}
METRIC_LABELS = {"loss": "validation loss (nats/token, macro over domains)",
                 "bpb": "validation bits per byte (macro over domains)"}
RED = "#d62728"  # held-out runs and forecasts
LAW_BLUE = "#1f77b4"  # the loss law and its band

Band = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # C -> (lo(C), hi(C))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_style():
    """The context every fit figure is built in (`with figure_style(): fig = ...`)."""
    return _plt().rc_context(STYLE)


def save_png(fig, path) -> bytes:
    """Write `fig` to `path` as PNG at the style's `savefig.dpi` (whichever rc settings are active
    now) on white, close it and return the bytes (the report embeds them). The layout is the
    figure's own (tight or constrained), so the PNG is the figure size times the dpi."""
    import io

    p = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=STYLE["savefig.dpi"], facecolor="white")
        data = buf.getvalue()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    except (OSError, ValueError) as e:
        raise DelphiError(f"plot: cannot write {p}: {e}") from None
    finally:
        _plt().close(fig)
    return data


def metric_label(metric: str) -> str:
    """An axis label for a runs-table metric (the metric's own name when it is not a known one)."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith(("loss/", "bpb/")):
        kind, dom = metric.split("/", 1)
        return f"{dom} validation {'loss (nats/token)' if kind == 'loss' else 'bits per byte'}"
    return metric


def budget_colors(budgets) -> dict[float, Any]:
    """One colour per budget, ordered by size (log scale), stable for every figure of a report."""
    cmap = _plt().get_cmap("viridis")
    bs = sorted({float(b) for b in budgets if fmt.num(b) is not None and b > 0})
    if not bs:
        return {}
    if len(bs) == 1:
        return {bs[0]: cmap(0.35)}
    lo, hi = math.log(bs[0]), math.log(bs[-1])
    return {b: cmap(0.05 + 0.8 * (math.log(b) - lo) / (hi - lo)) for b in bs}


def color_for(colors: dict[float, Any], budget: Any) -> Any:
    """The colour of the budget in `colors` nearest to `budget` (log scale); grey without one."""
    v = fmt.num(budget)
    if v is None or not colors:
        return "0.4"
    key = min(colors, key=lambda b: abs(math.log(b / v)) if v > 0 else math.inf)
    return colors[key]


def law_band(law) -> Band | None:
    """lo(C), hi(C) of a `LossLaw`'s bootstrap interval, shaped like C; None without draws."""
    if law.bootstrap_params is None:
        return None

    def band(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        C = np.asarray(C, dtype=float)
        lo, hi = law.interval(C)
        return (np.broadcast_to(np.asarray(lo, dtype=float), C.shape),
                np.broadcast_to(np.asarray(hi, dtype=float), C.shape))

    return band


# ---- IsoFLOP curves ------------------------------------------------------------------------------

def draw_isoflop(ax, buckets: Sequence, colors: dict[float, Any], *, metric: str = "loss",
                 runs: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None) -> list[tuple[float, list]]:
    """Each bucket's runs (loss against tokens), its parabola in log10 tokens and its vertex, and
    a dotted line through the optima. A bucket has `flops`, `coeffs` (a, b, c in x = log10 tokens,
    or None), `optimal_tokens`, `optimal_loss`, `flags` and `skipped` (`delphi.fit.isoflop.BucketFit`
    or the report's view of one). `runs[i]` is bucket i's (tokens, loss); by default its own
    `tokens` and `loss`. Returns the flagged buckets as (flops, flags), for a footnote."""
    flagged = []
    optima = []
    for i, bucket in enumerate(buckets):
        tokens, loss = runs[i] if runs is not None else (bucket.tokens, bucket.loss)
        tokens, loss = np.asarray(tokens, dtype=float), np.asarray(loss, dtype=float)
        col = color_for(colors, bucket.flops)
        # fmt.num: a fit's bucket marks a missing optimum with NaN, the report's view with None
        d_opt, l_opt = fmt.num(bucket.optimal_tokens), fmt.num(bucket.optimal_loss)
        label = f"{fmt.pretty_flops(bucket.flops)} FLOPs ({len(tokens)} runs)"
        if bucket.flags:
            label += " ⚑"
            flagged.append((bucket.flops, list(bucket.flags)))
        if bucket.skipped and l_opt is None:
            label += " – no optimum"
        ax.scatter(tokens, loss, color=col, s=26, zorder=3, label=label, edgecolor="white", linewidth=0.5)
        if bucket.coeffs is not None and len(tokens):
            a, b, c = bucket.coeffs
            x = np.log10(tokens)
            lo, hi = x.min(), x.max()
            if d_opt:
                lo, hi = min(lo, math.log10(d_opt)), max(hi, math.log10(d_opt))
            pad = 0.12 * max(hi - lo, 0.2)
            xs = np.linspace(lo - pad, hi + pad, 200)
            ax.plot(10**xs, a * xs**2 + b * xs + c, color=col, lw=1.4, alpha=0.9, zorder=2)
        if d_opt and l_opt is not None:
            # Hollow when flagged: the vertex is extrapolated beyond the runs' token range.
            ax.scatter([d_opt], [l_opt], marker="D", s=46, color="white" if bucket.flags else col,
                       edgecolor="black", linewidth=0.9, zorder=4)
            optima.append((bucket.flops, d_opt, l_opt))
    if len(optima) >= 2:
        o = sorted(optima)
        ax.plot([d for _, d, _ in o], [v for _, _, v in o], color="0.3", lw=0.8, ls=":", zorder=1,
                label="optima across budgets")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D (log scale)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title("IsoFLOP curves: loss vs tokens at fixed compute")
    # Outside the axes: IsoFLOP curves fill the whole frame, any inside corner hides points.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="budget (◆ = optimum)", borderaxespad=0)
    return flagged


def flag_footnote(fig, flagged: list[tuple[float, list]]) -> bool:
    """The flagged buckets' reasons along the bottom of the figure; True when there are any (the
    layout then leaves room for them)."""
    if not flagged:
        return False
    txt = "⚑ " + "; ".join(f"{fmt.pretty_flops(c)}: {', '.join(map(str, f))}" for c, f in flagged)
    fig.text(0.01, 0.005, txt, fontsize=7.5, color="#a33", ha="left", va="bottom", wrap=True)
    return True


def _draw_optima(ax, optima: Sequence[tuple[float, float]], colors: dict[float, Any], *, size: float,
                 zorder: int) -> None:
    """The IsoFLOP optima (C, y) as diamonds in their budget's colour, with one grey legend entry
    for all of them (a legend line per budget would repeat the IsoFLOP figure's)."""
    for c, y in optima:
        ax.scatter([c], [y], marker="D", s=size, color=color_for(colors, c), edgecolor="black", linewidth=0.8,
                   zorder=zorder)
    if optima:
        ax.scatter([], [], marker="D", s=size, color="0.6", edgecolor="black", linewidth=0.8,
                   label="IsoFLOP optima (fit points)")


# ---- allocation laws -----------------------------------------------------------------------------

def draw_allocation(ax, optima: Sequence[tuple[float, float]], law, colors: dict[float, Any], *, symbol: str,
                    ylabel: str, c_range: tuple[float, float] | None = None,
                    heldout: Sequence[tuple[float, float]] = ()) -> None:
    """One allocation law, log–log: the IsoFLOP optima (C, N* or D*), the power law `law` (A,
    alpha: y = A·C^alpha, or None) over `c_range` (default: the optima's), solid over the fitted
    compute and dashed beyond it, and held-out runs (C, size) as stars."""
    _draw_optima(ax, optima, colors, size=42, zorder=3)
    if law is not None and optima:
        c_fit_hi = max(c for c, _ in optima)
        c_lo, c_hi = c_range or (min(c for c, _ in optima) / 1.6, c_fit_hi)
        cs = np.geomspace(c_lo, c_fit_hi, 100)
        ax.plot(cs, law.A * cs**law.alpha, color="black", lw=1.3,
                label=f"{symbol}(C) = {fmt.sci(law.A)}·C^{law.alpha:.3f}")
        if c_hi > c_fit_hi * 1.01:
            cx = np.geomspace(c_fit_hi, c_hi, 100)
            ax.plot(cx, law.A * cx**law.alpha, color="black", lw=1.3, ls="--", label="extrapolation")
    if heldout:
        ax.scatter([c for c, _ in heldout], [y for _, y in heldout], marker="*", s=160, color=RED,
                   edgecolor="black", linewidth=0.6, zorder=5, label="held-out run (chosen by the law)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs, log)")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")


def draw_allocation_pair(axes, buckets: Sequence, params_law, tokens_law, colors: dict[float, Any], *,
                         c_range: tuple[float, float] | None = None, heldout: Sequence[dict] = ()) -> None:
    """N*(C) on `axes[0]` and D*(C) on `axes[1]` from the buckets with an optimum; `heldout`:
    dicts with the run's compute (`flops`, else `budget`) and, where known, `params`, `tokens`."""
    panels = ((axes[0], "optimal_params", params_law, "params", "N*", "compute-optimal parameters N* (log)"),
              (axes[1], "optimal_tokens", tokens_law, "tokens", "D*", "compute-optimal tokens D* (log)"))
    for ax, attr, law, key, symbol, ylabel in panels:
        pts = [(b.flops, fmt.num(getattr(b, attr))) for b in buckets]
        held = [(p.get("flops", p.get("budget")), p.get(key)) for p in heldout if p.get(key)]
        draw_allocation(ax, [(c, y) for c, y in pts if y], law, colors, symbol=symbol, ylabel=ylabel,
                        c_range=c_range, heldout=held)
    axes[0].set_title("Parameters N*(C)")
    axes[1].set_title("Tokens D*(C)")


# ---- the loss law --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mark:
    """A point at compute `flops` on the loss-law figure: a forecast with its interval (`low`,
    `high`) and/or the actual loss of the run trained there, with an optional text beside it."""

    flops: float
    forecast: float | None = None
    low: float | None = None
    high: float | None = None
    actual: float | None = None
    note: str | None = None


def draw_loss_law(ax, law, optima: Sequence[tuple[float, float]], colors: dict[float, Any], *,
                  band: Band | None = None, band_label: str = "bootstrap band", law_label: str | None = None,
                  marks: Sequence[Mark] = (), forecast_label: str = "forecast and its interval",
                  grid: tuple[Sequence[float], Sequence[float]] | None = None, pure=None,
                  metric: str = "loss") -> None:
    """The loss law (`law`: a `LossLaw`, or None) through the IsoFLOP optima (C, loss), solid over
    the fitted compute and dashed beyond it; its `band` (lo(C), hi(C)); `marks` (forecasts as red
    bars with their interval, actual losses as red stars, notes beside them); optionally every
    grid run in grey (`grid`: C, loss) and a pure power law `pure` for comparison. The y range
    frames the law, the optima and the marks: grid runs far above them may fall off the top."""
    if grid is not None:
        ax.scatter(grid[0], grid[1], s=10, color="0.75", zorder=1, label="IsoFLOP grid runs")
    _draw_optima(ax, optima, colors, size=46, zorder=4)
    c_all = [c for c, _ in optima] + [m.flops for m in marks]
    c_lo, c_hi = min(c_all) / 1.5, max(c_all) * 1.6
    c_fit_hi = max((c for c, _ in optima), default=c_lo)
    if law is not None:
        cs = np.geomspace(c_lo, c_hi, 240)
        if band is not None:
            try:
                lo, hi = band(cs)
                ax.fill_between(cs, lo, hi, color=LAW_BLUE, alpha=0.22, lw=0, zorder=0, label=band_label)
            except Exception:  # noqa: BLE001 — a band that fails to evaluate is left out, not fatal
                pass
        inside = cs <= c_fit_hi * 1.0001
        ax.plot(cs[inside], law.predict(cs[inside]), color=LAW_BLUE, lw=1.6,
                label=law_label or law.equation(digits=3))
        if (~inside).any():
            ax.plot(cs[~inside], law.predict(cs[~inside]), color=LAW_BLUE, lw=1.6, ls="--", label="extrapolation")
        if pure is not None:
            ax.plot(cs, pure.predict(cs), color="C2", lw=1.0, ls="-.", label=f"pure power law {pure.equation(digits=3)}")
    _draw_marks(ax, marks, forecast_label)
    focus = [y for _, y in optima]
    for m in marks:
        focus += [v for v in (m.forecast, m.low, m.high, m.actual) if v is not None]
    if law is not None:
        focus += list(law.predict(np.array([c_lo, c_hi])))
    if focus:
        lo_y, hi_y = min(focus), max(focus)
        span = max(hi_y - lo_y, 0.02 * abs(hi_y) + 1e-6)
        ax.set_ylim(lo_y - 0.12 * span, hi_y + 0.35 * span)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, log)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title("Loss law through the compute-optimal points")
    ax.legend(loc="upper right")


def _draw_marks(ax, marks: Sequence[Mark], forecast_label: str) -> None:
    shown_f = shown_a = False
    stacked: dict[float, int] = {}  # marks of one compute (seeds) share an x: stack their notes
    # Notes go right of the largest compute's marks and left of the others, so that the notes of
    # two held-out budgets half a decade apart do not run into each other.
    last = max((m.flops for m in marks if m.note), default=None)
    for m in marks:
        if m.forecast is not None:
            f = m.forecast
            lo, hi = (m.low if m.low is not None else f), (m.high if m.high is not None else f)
            # A wide horizontal tick, so the actual's star on top of it leaves both visible.
            ax.errorbar([m.flops], [f], yerr=[[max(f - lo, 0)], [max(hi - f, 0)]], fmt="_", ms=22, mew=2.2,
                        color=RED, ecolor=RED, elinewidth=1.4, capsize=5, zorder=5,
                        label=None if shown_f else forecast_label)
            shown_f = True
        if m.actual is not None:
            ax.scatter([m.flops], [m.actual], marker="*", s=190, color=RED, edgecolor="black", linewidth=0.6,
                       zorder=6, label=None if shown_a else "held-out run (actual)")
            shown_a = True
        if m.note:
            key = round(math.log10(m.flops), 2)
            k = stacked.get(key, 0)
            stacked[key] = k + 1
            y = m.actual if m.actual is not None else m.forecast
            right = m.flops == last
            ax.annotate(m.note, (m.flops, y), xytext=(16 if right else -16, -3 - 11 * k), textcoords="offset points",
                        fontsize=8.5, color=RED, ha="left" if right else "right")


def draw_residuals(ax, law, flops: Sequence[float], values: Sequence[float], colors: dict[float, Any], *,
                   metric: str = "loss") -> None:
    """Observed minus the law at each of its points, against compute."""
    C, y = np.asarray(flops, dtype=float), np.asarray(values, dtype=float)
    ax.axhline(0, color="grey", lw=0.8)
    ax.scatter(C, y - law.predict(C), marker="D", s=36, color=[color_for(colors, c) for c in C], edgecolor="black",
               linewidth=0.8, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, log)")
    ax.set_ylabel(f"residual (observed − law), {metric}")
    ax.set_title("residuals")


# ---- the CLI's figures ---------------------------------------------------------------------------
# Constrained layout: it spaces each panel by its own needs (the IsoFLOP legend sits outside its
# axes, and a uniform tight_layout gap would open between the other panels too).

def _readable(flagged: list[tuple[float, list]]) -> list[tuple[float, list]]:
    """A fit's buckets carry flag codes; the footnote shows their explanations."""
    from delphi.fit.flags import flag_text

    return [(c, [flag_text(code) for code in codes]) for c, codes in flagged]


def _leave_room_for_footnote(fig, footnote: bool) -> None:
    if footnote:  # the footnote is figure text, which the layout does not see
        fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))


def plot_isoflop(iso, path) -> Path:
    """`delphi fit isoflop --plot`: each bucket's runs, parabola and vertex, then N*(C) and D*(C)
    with their laws (through the buckets the laws were fitted on)."""
    plt = _plt()
    colors = budget_colors(b.flops for b in iso.buckets)
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(16.0, 4.8), layout="constrained",
                                 gridspec_kw={"width_ratios": [4, 3, 3]})
        flagged = draw_isoflop(axes[0], iso.buckets, colors, metric=iso.metric)
        draw_allocation_pair(axes[1:], iso.used, iso.params_law, iso.tokens_law, colors)
        _leave_room_for_footnote(fig, flag_footnote(fig, _readable(flagged)))
        save_png(fig, path)
    return Path(path)


def plot_loss_law(law, path, targets=(), pure=None, metric: str = "loss", iso=None) -> Path:
    """`delphi fit loss-law --plot`: the law through the optima with its bootstrap band and the
    forecasts at `targets`, and its residuals; with the IsoFLOP fit (`iso`), its curves first."""
    plt = _plt()
    C, y = np.asarray(law.flops, dtype=float), np.asarray(law.values, dtype=float)
    colors = budget_colors(list(C) + ([b.flops for b in iso.buckets] if iso is not None else []))
    marks = []
    if len(targets):
        t = np.asarray(targets, dtype=float)
        p = law.predict(t)
        lo, hi = law.interval(t) if law.bootstrap_params is not None else (p, p)
        marks = [Mark(float(c), float(v), float(a), float(b)) for c, v, a, b in zip(t, p, lo, hi)]
    band = law_band(law)
    with figure_style():
        if iso is not None:
            fig, (ax_iso, ax_law, ax_res) = plt.subplots(1, 3, figsize=(18.0, 4.8), layout="constrained",
                                                         gridspec_kw={"width_ratios": [4, 3, 2]})
            flagged = draw_isoflop(ax_iso, iso.buckets, colors, metric=metric)
        else:
            fig, (ax_law, ax_res) = plt.subplots(1, 2, figsize=(12.0, 4.8), layout="constrained",
                                                 gridspec_kw={"width_ratios": [3, 2]})
            flagged = []
        draw_loss_law(ax_law, law, list(zip(C, y)), colors, band=band, marks=marks, pure=pure, metric=metric,
                      band_label=(f"{100 * law.confidence:g}% bootstrap band ({len(law.bootstrap_params)} resamples)"
                                  if band is not None else ""),
                      forecast_label=f"forecast and its {100 * law.confidence:g}% interval" if band is not None
                      else "forecast")
        draw_residuals(ax_res, law, C, y, colors, metric=metric)
        _leave_room_for_footnote(fig, flag_footnote(fig, _readable(flagged)))
        save_png(fig, path)
    return Path(path)


def plot_parametric(fit, N, D, L, path, metric: str = "loss") -> Path:
    """Left: loss vs tokens (coloured by model size) with L(N, D) at five sizes. Right: log residuals vs 6ND."""
    plt = _plt()
    N, D, L = (np.asarray(v, dtype=float) for v in (N, D, L))
    with figure_style():
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
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.3f} + {fit.B:.3g}/D^{fit.beta:.3f}")
        ax2.axhline(0, color="grey", lw=0.8)
        ax2.scatter(C, np.log(L) - np.log(fit.predict(N, D)), s=10, color="k")
        ax2.set_xscale("log")
        ax2.set_xlabel("compute 6·N·D (FLOPs, log scale)")
        ax2.set_ylabel("log observed - log predicted")
        ax2.set_title(f"residuals (Huber loss {fit.huber_loss:.4g})")
        save_png(fig, path)
    return Path(path)


def plot_backtest(bt, path) -> Path:
    """Residual (actual vs forecast, %) against the extrapolation factor, one colour per number of
    fitted budgets, with each forecast's interval as an error bar; one panel per law form."""
    plt = _plt()
    forms = list(bt.forms)
    with figure_style():
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
                with_ci = [(r.factor, 100 * (r.ci_low - r.forecast) / r.forecast,
                            100 * (r.ci_high - r.forecast) / r.forecast) for r in rows if r.ci_low is not None]
                if with_ci:
                    cf, clo, chi = (np.array(v) for v in zip(*with_ci))
                    ax.vlines(cf, clo, chi, color=col, alpha=0.35, lw=4)
                ax.plot(f, res, "o-", color=col, ms=5, lw=1,
                        label=f"fit on lowest {k} budgets ({rows[0].fit_budgets[-1]:.2g})")
            cov = bt.coverage(form)
            ax.set_xscale("log")
            ax.set_xlabel("extrapolation factor (target budget / largest fitted budget, log scale)")
            ax.set_ylabel(f"residual, 100·(actual − forecast)/forecast  [{bt.metric}]")
            title = f"{form}: {FORMS_TEXT.get(form, form)}"
            if cov is not None:
                title += f"\n{100 * bt.confidence:g}% intervals (bars) cover {100 * cov:.0f}% of the actuals"
            ax.set_title(title)
            ax.legend(fontsize=7)
        save_png(fig, path)
    return Path(path)


FORMS_TEXT = {"asymptote": "L = E + A·C^-alpha", "power": "L = A·C^-alpha", "ceiling": "1/L = 1/H + C^alpha/A"}

__all__ = ["Mark", "STYLE", "budget_colors", "color_for", "draw_allocation", "draw_allocation_pair", "draw_isoflop",
           "draw_loss_law", "draw_residuals", "figure_style", "flag_footnote", "law_band", "metric_label",
           "plot_backtest", "plot_isoflop", "plot_loss_law", "plot_parametric", "save_png"]
