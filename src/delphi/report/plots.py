"""The report's figures (matplotlib, Agg). Each function returns a Figure, or None with nothing to draw.

The IsoFLOP, allocation and loss-law figures are drawn by `delphi.fit.plots` (the same code as
`delphi fit ... --plot`, with its conventions); this module gives them what only a suite has: the
runs table's grid runs, the registered forecasts and the held-out runs' actuals. The training
curves are the report's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delphi import fmt
from delphi.fit.plots import (Mark, budget_colors, color_for, draw_allocation_pair, draw_isoflop, draw_loss_law,
                              figure_style, flag_footnote, save_png)
from delphi.report.fitview import Bucket, FitView
from delphi.report.suite import Suite, ok_mask


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


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
    """Loss vs tokens per budget with the fitted parabolas (in log10 tokens) and their vertices;
    before any fit, the grid runs per budget."""
    grid = _grid_rows(suite)
    metric = view.metric
    if grid is None or grid.empty or metric not in grid or "tokens" not in grid:
        return None
    key = "budget" if "budget" in grid and grid["budget"].notna().all() else "flops"
    buckets = view.buckets or [Bucket(flops=c) for c in sorted(set(grid[key].astype(float)))]
    # The runs of each bucket as the runs table has them now (the nearest budget's).
    idx = _assign(grid[key].to_numpy(float), [b.flops for b in buckets])
    runs = [(grid["tokens"][idx == i].to_numpy(float), grid[metric][idx == i].to_numpy(float))
            for i in range(len(buckets))]
    plt = _plt()
    with figure_style():
        fig, ax = plt.subplots(figsize=(9.0, 4.8))
        flagged = draw_isoflop(ax, buckets, colors, metric=metric, runs=runs)
        footnote = flag_footnote(fig, flagged)
        fig.tight_layout(rect=(0, 0.04 if footnote else 0, 1, 1))
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
    """Compute-optimal N*(C) and D*(C) with their power laws, log–log, and the held-out runs."""
    opt = view.fitted
    if not opt:
        return None
    held = _heldout_points(suite)
    c_all = [b.flops for b in opt] + [p.get("flops", p.get("budget")) for p in held]
    plt = _plt()
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
        draw_allocation_pair(axes, opt, view.params_law, view.tokens_law, colors,
                             c_range=(min(c_all) / 1.6, max(c_all) * 1.6), heldout=held)
        fig.tight_layout()
    return fig


def _marks(held: list[dict]) -> list[Mark]:
    """The held-out runs as the loss-law figure marks them: the registered forecast with its
    interval, the actual loss, and the residual (with the seed when a budget has several runs)."""
    marks = []
    for p in held:
        note = None
        if p.get("actual") is not None and p.get("residual_pct") is not None:
            seed = f" (seed {int(p['seed'])})" if p.get("seed") is not None and len(held) > 1 else ""
            note = f"{p['residual_pct']:+.2f}%{seed}"
        f = p.get("forecast")
        marks.append(Mark(flops=p.get("flops", p.get("budget")), forecast=f,
                          low=p.get("ci_low", f) if f is not None else None,
                          high=p.get("ci_high", f) if f is not None else None, actual=p.get("actual"), note=note))
    return marks


def loss_law_figure(suite: Suite, view: FitView, colors: dict) -> Any:
    """L*(C) through the optima, the bootstrap band, held-out forecasts and actuals, all grid runs."""
    opt = view.fitted
    held = _heldout_points(suite)
    if not opt and not held:
        return None
    grid = _grid_rows(suite)
    has_grid = grid is not None and not grid.empty and view.metric in grid and "flops" in grid
    ll = view.loss_law
    plt = _plt()
    with figure_style():
        fig, ax = plt.subplots(figsize=(7.6, 4.8))
        draw_loss_law(ax, ll.law if ll is not None else None, [(b.flops, b.optimal_loss) for b in opt], colors,
                      band=ll.band if ll is not None else None,
                      band_label=f"bootstrap {ll.band_level} band" if ll is not None else "",
                      law_label=ll.text(digits=3) if ll is not None else None, marks=_marks(held),
                      forecast_label="registered forecast and its 95% interval",
                      grid=(grid["flops"], grid[view.metric]) if has_grid else None, metric=view.metric)
        if held:
            ax.set_title("Loss law through the compute-optimal points, extrapolated to the held-out budget")
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
    with figure_style():
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


__all__ = ["allocation_figure", "budget_colors", "isoflop_figure", "loss_law_figure", "save_png",
           "suite_colors", "training_curves_figure"]
