"""The report's figures (matplotlib, Agg). Each function returns a Figure, or None with nothing to draw.

Conventions, so a reader can move between figures without re-learning them: one colour per
compute budget everywhere (viridis, small budgets dark), grid runs as dots, compute-optimal points
as white-edged diamonds, held-out runs as stars, forecasts as open squares with their interval,
extrapolated law segments dashed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from delphi.report import fmt
from delphi.report.fitview import FitView
from delphi.report.suite import Suite, ok_mask

_STYLE = {
    "figure.dpi": 110, "savefig.dpi": 130, "font.size": 9.5, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 8.5, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
}
METRIC_LABELS = {"loss": "validation loss (nats/token, macro over domains)",
                 "bpb": "validation bits per byte (macro over domains)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def metric_label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith(("loss/", "bpb/")):
        kind, dom = metric.split("/", 1)
        return f"{dom} validation {'loss (nats/token)' if kind == 'loss' else 'bits per byte'}"
    return metric


def budget_colors(budgets) -> dict[float, Any]:
    """One colour per budget, ordered by size (log scale), stable for every figure of a report."""
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    bs = sorted({float(b) for b in budgets if fmt.num(b) is not None and b > 0})
    if not bs:
        return {}
    if len(bs) == 1:
        return {bs[0]: cmap(0.35)}
    lo, hi = math.log(bs[0]), math.log(bs[-1])
    return {b: cmap(0.05 + 0.8 * (math.log(b) - lo) / (hi - lo)) for b in bs}


def color_for(colors: dict[float, Any], budget: Any) -> Any:
    v = fmt.num(budget)
    if v is None or not colors:
        return "0.4"
    key = min(colors, key=lambda b: abs(math.log(b / v)) if v > 0 else math.inf)
    return colors[key]


def suite_colors(suite: Suite, view: FitView | None) -> dict[float, Any]:
    budgets = [b.flops for b in view.buckets] if view else []
    t = suite.table
    if t is not None and not t.empty:
        for col in ("budget", "flops"):
            if col in t:
                budgets += [float(x) for x in t[col] if fmt.num(x) is not None and x > 0]
                break
    for r in suite.check_results:
        c = fmt.num(r.budget) or fmt.num(r.flops)
        if c:
            budgets.append(c)
    # Group near-identical values (measured FLOPs vs declared budget) so colours stay distinct.
    uniq: list[float] = []
    for b in sorted(budgets):
        if not uniq or b / uniq[-1] > 1.05:
            uniq.append(b)
    return budget_colors(uniq)


def _assign(values: np.ndarray, centres: list[float]) -> np.ndarray:
    """Index of the nearest centre (in log space) for each value; -1 when none."""
    if not centres:
        return np.full(len(values), -1)
    c = np.log(np.asarray(centres, dtype=float))
    v = np.log(np.clip(np.asarray(values, dtype=float), 1e-300, None))
    return np.abs(v[:, None] - c[None, :]).argmin(axis=1)


def _grid_rows(suite: Suite):
    t = suite.table
    if t is None or t.empty:
        return t
    return t[(t["role"] != "heldout").to_numpy() & ok_mask(t)]


def isoflop_figure(suite: Suite, view: FitView, colors: dict) -> Any:
    """Loss vs tokens per budget with the fitted parabolas (in log10 tokens) and their vertices."""
    grid = _grid_rows(suite)
    metric = view.metric
    if grid is None or grid.empty or metric not in grid or "tokens" not in grid:
        return None
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.0, 4.8))
        key = "budget" if "budget" in grid and grid["budget"].notna().all() else "flops"
        centres = [b.flops for b in view.buckets] or sorted(set(grid[key].astype(float)))
        idx = _assign(grid[key].to_numpy(float), centres)
        flagged = []
        for i, c in enumerate(centres):
            rows = grid[idx == i]
            bucket = view.buckets[i] if view.buckets else None
            col = color_for(colors, c)
            label = f"{fmt.pretty_flops(c)} FLOPs ({len(rows)} runs)"
            if bucket is not None and bucket.flags:
                label += " ⚑"
                flagged.append((c, bucket.flags))
            if bucket is not None and bucket.skipped and bucket.optimal_loss is None:
                label += " – no optimum"
            ax.scatter(rows["tokens"], rows[metric], color=col, s=26, zorder=3, label=label,
                       edgecolor="white", linewidth=0.5)
            if bucket is not None and bucket.coeffs is not None and len(rows):
                a, b, cc = bucket.coeffs
                x = np.log10(rows["tokens"].to_numpy(float))
                lo, hi = x.min(), x.max()
                if bucket.optimal_tokens:
                    lo, hi = min(lo, math.log10(bucket.optimal_tokens)), max(hi, math.log10(bucket.optimal_tokens))
                pad = 0.12 * max(hi - lo, 0.2)
                xs = np.linspace(lo - pad, hi + pad, 200)
                ax.plot(10**xs, a * xs**2 + b * xs + cc, color=col, lw=1.4, alpha=0.9, zorder=2)
            if bucket is not None and bucket.optimal_tokens and bucket.optimal_loss is not None:
                # Hollow when flagged: the vertex is extrapolated beyond the grid's token range.
                ax.scatter([bucket.optimal_tokens], [bucket.optimal_loss], marker="D", s=46,
                           color="white" if bucket.flags else col, edgecolor="black", linewidth=0.9, zorder=4)
        opt = [b for b in view.fitted]
        if len(opt) >= 2:
            o = sorted(opt, key=lambda b: b.flops)
            ax.plot([b.optimal_tokens for b in o], [b.optimal_loss for b in o], color="0.3", lw=0.8, ls=":",
                    zorder=1, label="optima across budgets")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens D (log scale)")
        ax.set_ylabel(metric_label(metric))
        ax.set_title("IsoFLOP curves: loss vs tokens at fixed compute")
        # Outside the axes: IsoFLOP curves fill the whole frame, any inside corner hides points.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="budget (◆ = optimum)", borderaxespad=0)
        if flagged:
            txt = "⚑ " + "; ".join(f"{fmt.pretty_flops(c)}: {', '.join(f)}" for c, f in flagged)
            fig.text(0.01, 0.005, txt, fontsize=7.5, color="#a33", ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.04 if flagged else 0, 1, 1))
    return fig


def _heldout_points(suite: Suite) -> list[dict]:
    """Held-out runs with what is known: flops, params, tokens, actual, forecast and interval."""
    pts: dict[str, dict] = {}
    t = suite.table
    if t is not None and not t.empty:
        for _, r in t[t["role"] == "heldout"].iterrows():
            d = pts.setdefault(str(r["name"]), {"run": str(r["name"])})
            for k in ("flops", "params", "tokens", "budget", "seed"):
                if k in r and fmt.num(r[k]) is not None:
                    d[k] = float(r[k])
            if ok_mask(t.loc[[r.name]])[0]:
                d["actual"] = float(r["loss"])
            d["status"] = str(r.get("status", ""))
    for e in suite.ledger:
        f = e.get("forecast") or {}
        name = str(f.get("run") or (e.get("run_spec") or {}).get("name") or "")
        if not name:
            continue
        d = pts.setdefault(name, {"run": name})
        for k in ("forecast", "ci_low", "ci_high", "loo_min", "loo_max"):
            src = "loss" if k == "forecast" else k
            if fmt.num(f.get(src)) is not None:
                d.setdefault(k, float(f[src]))
        for k in ("flops", "budget"):
            if fmt.num(f.get(k)) is not None:
                d.setdefault(k, float(f[k]))
    for r in suite.check_results:
        d = pts.setdefault(r.run, {"run": r.run})
        for k in ("flops", "budget", "seed", "forecast", "ci_low", "ci_high", "loo_min", "loo_max", "actual",
                  "residual_pct"):
            if fmt.num(getattr(r, k)) is not None:
                d[k] = float(getattr(r, k))
        if r.inside is not None:
            d["inside"] = r.inside
    return [p for p in pts.values() if fmt.num(p.get("flops", p.get("budget"))) is not None]


def allocation_figure(suite: Suite, view: FitView, colors: dict) -> Any:
    """Compute-optimal N*(C) and D*(C) with their power laws, log–log."""
    opt = view.fitted
    if not opt:
        return None
    plt = _plt()
    held = _heldout_points(suite)
    c_all = [b.flops for b in opt] + [p.get("flops", p.get("budget")) for p in held]
    c_lo, c_hi = min(c_all) / 1.6, max(c_all) * 1.6
    c_fit_hi = max(b.flops for b in opt)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
        panels = ((axes[0], "optimal_params", view.params_law, "params", "N*", "compute-optimal parameters N* (log)"),
                  (axes[1], "optimal_tokens", view.tokens_law, "tokens", "D*", "compute-optimal tokens D* (log)"))
        for ax, attr, law, hkey, sym, ylabel in panels:
            pts = [(b.flops, getattr(b, attr)) for b in opt if getattr(b, attr)]
            for c, y in pts:
                ax.scatter([c], [y], marker="D", s=42, color=color_for(colors, c), edgecolor="black",
                           linewidth=0.8, zorder=3)
            if pts:
                ax.scatter([], [], marker="D", s=42, color="0.6", edgecolor="black", linewidth=0.8,
                           label="IsoFLOP optima (fit points)")
            if law is not None:
                cs = np.geomspace(c_lo, c_fit_hi, 100)
                ax.plot(cs, law(cs), color="black", lw=1.3, label=f"{sym}(C) = {fmt.sci(law.A)}·C^{law.alpha:.3f}")
                cx = np.geomspace(c_fit_hi, c_hi, 100)
                if c_hi > c_fit_hi * 1.01:
                    ax.plot(cx, law(cx), color="black", lw=1.3, ls="--", label="extrapolation")
            hp = [(p.get("flops", p.get("budget")), p.get(hkey)) for p in held if p.get(hkey)]
            if hp:
                ax.scatter([c for c, _ in hp], [y for _, y in hp], marker="*", s=160, color="#d62728",
                           edgecolor="black", linewidth=0.6, zorder=5, label="held-out run (chosen by the law)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training compute C (FLOPs, log)")
            ax.set_ylabel(ylabel)
            ax.legend(loc="best")
        axes[0].set_title("Parameters N*(C)")
        axes[1].set_title("Tokens D*(C)")
        fig.tight_layout()
    return fig


def loss_law_figure(suite: Suite, view: FitView, colors: dict) -> Any:
    """L*(C) = E + A·C^−α through the optima, the bootstrap band, held-out forecasts and actuals."""
    opt = view.fitted
    held = _heldout_points(suite)
    if not opt and not held:
        return None
    plt = _plt()
    grid = _grid_rows(suite)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.6, 4.8))
        if grid is not None and not grid.empty and view.metric in grid and "flops" in grid:
            ax.scatter(grid["flops"], grid[view.metric], s=10, color="0.75", zorder=1, label="IsoFLOP grid runs")
        for b in opt:
            ax.scatter([b.flops], [b.optimal_loss], marker="D", s=46, color=color_for(colors, b.flops),
                       edgecolor="black", linewidth=0.8, zorder=4)
        if opt:
            ax.scatter([], [], marker="D", s=46, color="0.6", edgecolor="black", linewidth=0.8,
                       label="IsoFLOP optima (fit points)")
        c_all = [b.flops for b in opt] + [p.get("flops", p.get("budget")) for p in held]
        c_lo, c_hi = min(c_all) / 1.5, max(c_all) * 1.6
        law = view.loss_law
        c_fit_hi = max((b.flops for b in opt), default=c_lo)
        if law is not None:
            cs = np.geomspace(c_lo, c_hi, 240)
            if law.band is not None:
                try:
                    lo, hi = law.band(cs)
                    ax.fill_between(cs, lo, hi, color="#1f77b4", alpha=0.22, lw=0, zorder=0,
                                    label=f"bootstrap {law.band_level} band")
                except Exception:  # noqa: BLE001 — a band that fails to evaluate is left out, not fatal
                    pass
            inside = cs <= c_fit_hi * 1.0001
            ax.plot(cs[inside], law(cs[inside]), color="#1f77b4", lw=1.6,
                    label=law.text(digits=3))
            if (~inside).any():
                ax.plot(cs[~inside], law(cs[~inside]), color="#1f77b4", lw=1.6, ls="--", label="extrapolation")
        shown_f = shown_a = False
        labelled: dict[float, int] = {}  # seeds of one budget share an x: stack their residual labels
        for p in held:
            c = p.get("flops", p.get("budget"))
            if p.get("forecast") is not None:
                f = p["forecast"]
                lo_, hi_ = p.get("ci_low", f), p.get("ci_high", f)
                # A wide horizontal tick, so the actual's star on top of it leaves both visible.
                ax.errorbar([c], [f], yerr=[[max(f - lo_, 0)], [max(hi_ - f, 0)]], fmt="_", ms=22, mew=2.2,
                            color="#d62728", ecolor="#d62728", elinewidth=1.4, capsize=5, zorder=5,
                            label=None if shown_f else "registered forecast and its 95% interval")
                shown_f = True
            if p.get("actual") is not None:
                ax.scatter([c], [p["actual"]], marker="*", s=190, color="#d62728", edgecolor="black",
                           linewidth=0.6, zorder=6, label=None if shown_a else "held-out run (actual)")
                shown_a = True
                if p.get("residual_pct") is not None:
                    k = labelled.get(round(math.log10(c), 2), 0)
                    labelled[round(math.log10(c), 2)] = k + 1
                    seed = f" (seed {int(p['seed'])})" if p.get("seed") is not None and k + len(held) > 1 else ""
                    ax.annotate(f"{p['residual_pct']:+.2f}%{seed}", (c, p["actual"]), xytext=(16, -3 - 11 * k),
                                textcoords="offset points", fontsize=8.5, color="#d62728")
        # Frame the law, the optima and the held-out points; the grid's worst runs (often far above
        # the optima at small budgets) are allowed to fall off the top.
        focus = [b.optimal_loss for b in opt]
        for p in held:
            focus += [p[k] for k in ("forecast", "ci_low", "ci_high", "actual") if p.get(k) is not None]
        if law is not None:
            focus += list(law(np.array([c_lo, c_hi])))
        if focus:
            lo_y, hi_y = min(focus), max(focus)
            span = max(hi_y - lo_y, 0.02 * abs(hi_y) + 1e-6)
            ax.set_ylim(lo_y - 0.12 * span, hi_y + 0.35 * span)
        ax.set_xscale("log")
        ax.set_xlabel("training compute C (FLOPs, log)")
        ax.set_ylabel(metric_label(view.metric))
        ax.set_title("Loss law through the compute-optimal points"
                     + (", extrapolated to the held-out budget" if held else ""))
        ax.legend(loc="upper right")
        fig.tight_layout()
    return fig


def _ema(y: np.ndarray, span: int) -> np.ndarray:
    if span <= 1 or len(y) < 3:
        return y
    a = 2.0 / (span + 1)
    out = np.empty_like(y)
    acc = y[0]
    for i, v in enumerate(y):
        acc = a * v + (1 - a) * acc
        out[i] = acc
    return out


def training_curves_figure(suite: Suite, colors: dict) -> Any:
    """Train loss vs tokens per run (left) and validation macro loss at each evaluation (right)."""
    runs = [r for r in suite.runs.values() if r.metrics]
    if not runs:
        return None
    plt = _plt()
    roles = {}
    t = suite.table
    if t is not None and not t.empty:
        roles = dict(zip(t["name"].astype(str), t["role"].astype(str)))
    with plt.rc_context(_STYLE):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.0, 4.2), sharey=False)
        seen_budgets: set = set()
        any_eval = False
        unbudgeted: list = []  # runs outside any IsoFLOP budget get their own colour and legend entry
        for r in sorted(runs, key=lambda r: (r.spec.budget if r.spec and r.spec.budget else 0, r.name)):
            budget = r.spec.budget if r.spec is not None else (r.summary or {}).get("budget")
            if fmt.num(budget):
                col = color_for(colors, budget)
            else:
                col = plt.get_cmap("tab10")(len(unbudgeted) % 10)
                unbudgeted.append((r.name, col))
            held = roles.get(r.name) == "heldout" or (r.spec is not None and (r.spec.tags or {}).get("role") == "heldout")
            per_step = r.spec.batch_size * r.spec.shape.seq_len if r.spec is not None else None
            train = [m for m in r.metrics if m.get("kind", "train") == "train" and fmt.num(m.get("loss")) is not None
                     and "eval/macro_loss" not in m]
            xs = []
            for m in train:
                tok = fmt.num(m.get("tokens"))
                if tok is None and per_step and fmt.num(m.get("step")) is not None:
                    tok = float(m["step"]) * per_step
                xs.append(tok)
            pts = [(x, float(m["loss"])) for x, m in zip(xs, train) if x]
            if pts:
                x, y = np.array(pts).T
                ax1.plot(x, _ema(y, max(1, len(y) // 40)), color=col, lw=2.0 if held else 0.9,
                         ls="--" if held else "-", alpha=0.95 if held else 0.7)
            ev = []
            for m in r.metrics:
                val = m.get("eval/macro_loss", m.get("macro_loss") if m.get("kind") == "eval" else None)
                if fmt.num(val) is None:
                    continue
                tok = fmt.num(m.get("tokens"))
                if tok is None and per_step and fmt.num(m.get("step")) is not None:
                    tok = float(m["step"]) * per_step
                if tok:
                    ev.append((tok, float(val)))
            if ev:
                any_eval = True
                x, y = np.array(sorted(ev)).T
                ax2.plot(x, y, color=col, lw=1.6 if held else 0.8, ls="--" if held else "-", alpha=0.8,
                         marker="*" if held else "o", ms=9 if held else 3.5)
            if fmt.num(budget):
                seen_budgets.add((float(budget), held))
        from matplotlib.lines import Line2D

        handles = []
        for b in sorted({b for b, h in seen_budgets if not h}):
            handles.append(Line2D([], [], color=color_for(colors, b), lw=1.4, label=f"{fmt.pretty_flops(b)} FLOPs"))
        for b in sorted({b for b, h in seen_budgets if h}):
            handles.append(Line2D([], [], color=color_for(colors, b), lw=2.0, ls="--",
                                  label=f"{fmt.pretty_flops(b)} FLOPs, held-out"))
        ax1.set_xscale("log")
        ax1.set_xlabel("tokens seen (log)")
        ax1.set_ylabel("train loss (nats/token, smoothed)")
        ax1.set_title("Training loss per run")
        for name, col in unbudgeted[:12]:
            handles.append(Line2D([], [], color=col, lw=1.4, label=name))
        if handles:
            ax1.legend(handles=handles, loc="lower left", title="budget" if not unbudgeted else "run / budget")
        ax2.set_xscale("log")
        ax2.set_xlabel("tokens seen (log)")
        ax2.set_ylabel("validation loss (nats/token, macro)")
        ax2.set_title("Validation loss at each evaluation")
        if not any_eval:
            ax2.text(0.5, 0.5, "no evaluation lines in metrics.jsonl", transform=ax2.transAxes, ha="center",
                     color="0.4")
        _clip_ylim(ax1)
        fig.tight_layout()
    return fig


def _clip_ylim(ax) -> None:
    """Early-training losses (≈ ln V) dwarf the interesting part; show from the minimum to a bit
    above the median of the curves' last halves."""
    ys = []
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        if len(y):
            ys.append(y)
    if not ys:
        return
    allv = np.concatenate(ys)
    tails = np.concatenate([y[len(y) // 4:] for y in ys])
    lo, hi = np.nanmin(allv), np.nanpercentile(tails, 99)
    top = min(np.nanmax(allv), hi + 0.6 * (hi - lo) + 0.05)
    if np.isfinite(lo) and np.isfinite(top) and top > lo:
        ax.set_ylim(lo - 0.03 * (top - lo), top)


def save_png(fig, path) -> bytes:
    """Write the figure to `path` as PNG and return the bytes (for embedding)."""
    import io

    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")  # layout already done by tight_layout
    plt.close(fig)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


__all__ = ["allocation_figure", "budget_colors", "isoflop_figure", "loss_law_figure", "metric_label", "save_png",
           "suite_colors", "training_curves_figure"]
