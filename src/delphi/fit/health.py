"""Fit health: is the fit a forecast is about to be registered from fit to extrapolate?

Six checks, each "pass" or "warn" (a check that cannot be computed warns with the reason).
A warning never stops pre-registration: it is recorded with the forecast (fit.json, the ledger
entry) and shown by `delphi run`, `delphi check` and the report, with what to change.

1. bracketing — every IsoFLOP vertex has >= 2 runs on each side (more and fewer tokens than
   D*). With one run on a side the vertex rests on that run and the other side's curvature; on
   the `micro` benchmark such a vertex sat 2.2% below every run. An optimum outside the runs'
   token range is an extrapolation: the grid needs narrower (optimum beyond the largest token
   count) or wider (below the smallest) widths at that budget. A bucket without a minimum warns too.
2. range — the fitted budgets span >= max(1, log10 F) decades, F the largest held-out
   extrapolation factor: a law is not tested further out than the range it was fitted on.
   Published forecasts that landed fitted 2–3.5 decades; one decade is the floor.
3. slope — the local slope s = d log L*/d log C, least squares on each window of 3 consecutive
   optima. E + A·C^−α can only flatten with compute (|s| falls), so a curve still steepening
   (|s| of the last window > 1.25× the first) is forecast too high; and windows disagreeing by
   more than 2× (max |s| / min |s|) mean the form is not identified by these points. 25% and 2×
   sit above the slope noise of 3 optima over half a decade with ~0.3% vertex noise (~15%).
4. leave-one-out — the largest move of the forecast at the farthest target when one budget is
   dropped, <= 1% of the forecast. The forecast target is ±1–2% (the project's targets: 2% at 10×,
   1% at 30×): a forecast that one budget moves by more than that is not determined by the grid.
5. backtest — the law fitted on the lowest budgets (`delphi.fit.backtest`, at least 4) forecasts
   the grid's own largest budget: |residual| <= 1% at the largest factor available, and the actual
   inside its interval. A law that misses a budget 2–3× past its data by more than 1% will not
   land within 1–2% at 10–30×; an actual outside the interval means the interval is too narrow.
   The same window's allocation law places a run at that budget (`placed_residual_pct`: the
   target's parabola at the law's tokens, against the forecast); beyond 1% the held-out runs it
   sizes will miss even where the law of the optima lands.
6. data — the fits raised no flag of their own (`delphi.fit.flags`): no repeated runs removed
   from the table, an allocation law whose optima grow with compute, optima that fall from each
   budget to the next, a loss law whose E and alpha the data determine. (A bucket without an
   optimum, flat curves included, is the bracketing check's.)

`FitHealth.to_dict()["flags"]` lists every flag code of the fit and its buckets: what tools read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from delphi.errors import DelphiError

MIN_SIDE_RUNS = 2
MIN_DECADES = 1.0
SLOPE_WINDOW = 3
SLOPE_STEEPENING = 1.25  # |s_last| / |s_first| above this: still steepening
SLOPE_SPREAD = 2.0  # max |s| / min |s| above this: unstable
LOO_MAX_PCT = 1.0
BACKTEST_MAX_PCT = 1.0
BACKTEST_MIN_BUDGETS = 4
RANGE_TOLERANCE_DECADES = 0.01
THRESHOLDS = {"min_side_runs": MIN_SIDE_RUNS, "min_decades": MIN_DECADES, "slope_window": SLOPE_WINDOW,
              "slope_steepening_ratio": SLOPE_STEEPENING, "slope_spread_ratio": SLOPE_SPREAD,
              "loo_max_pct": LOO_MAX_PCT, "backtest_max_abs_residual_pct": BACKTEST_MAX_PCT}


@dataclass(frozen=True)
class Check:
    name: str  # bracketing | range | slope | leave-one-out | backtest | data
    status: str  # pass | warn
    summary: str  # one line: what was measured
    advice: str | None = None  # what to change, when it warns
    kind: str = "budgets"  # what the advice changes: "data", "widths" or "budgets"
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "summary": self.summary, "advice": self.advice,
                "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict) -> "Check":
        return cls(name=str(d["name"]), status=str(d["status"]), summary=str(d.get("summary") or ""),
                   advice=d.get("advice"), kind=str(d.get("kind") or "budgets"), detail=dict(d.get("detail") or {}))


@dataclass(frozen=True)
class FitHealth:
    checks: tuple[Check, ...]
    flags: tuple[str, ...] = ()  # every flag code of the fit and its buckets (`delphi.fit.flags`)

    @property
    def status(self) -> str:
        return "warn" if any(c.status == "warn" for c in self.checks) else "pass"

    @property
    def warnings(self) -> list[str]:
        return [f"{c.name}: {c.summary}" for c in self.checks if c.status == "warn"]

    def advice(self, max_lines: int = 2) -> list[str]:
        """What to change, at most `max_lines` plain lines: the data first (repeated or rising
        runs), then the grid's widths (a vertex off its runs makes every other check meaningless),
        then its budgets."""
        lines = []
        for kind in ("data", "widths", "budgets"):
            a = next((c.advice for c in self.checks if c.status == "warn" and c.kind == kind and c.advice), None)
            if a:
                lines.append(a)
        return lines[:max_lines]

    def to_dict(self) -> dict:
        return {"status": self.status, "warnings": self.warnings, "advice": self.advice(), "flags": list(self.flags),
                "checks": [c.to_dict() for c in self.checks], "thresholds": dict(THRESHOLDS)}

    @classmethod
    def from_dict(cls, d: dict) -> "FitHealth":
        """The checks and flags of `to_dict` (status, warnings and advice follow from them)."""
        return cls(checks=tuple(Check.from_dict(c) for c in d.get("checks") or ()),
                   flags=tuple(map(str, d.get("flags") or ())))


def _fmt_budgets(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def _width(v: float) -> str:
    return f"{v:g}"


def bucket_problem(b) -> tuple[str, str] | None:
    """(what is wrong, which way the widths must move: "narrower" | "wider" | "") for one
    bucket (`isoflop.BucketFit`), or None when its vertex is bracketed by >= 2 runs a side."""
    from delphi.fit.isoflop import FLAG_ABOVE, FLAG_BELOW

    if not b.usable:
        return f"no optimum ({b.skipped})", ""
    narrow = f" {_width(min(b.widths))}" if b.widths else ""
    wide = f" {_width(max(b.widths))}" if b.widths else ""
    if FLAG_ABOVE in b.flags:
        return f"the optimum lies beyond the narrowest width{narrow}, outside the runs", "narrower"
    if FLAG_BELOW in b.flags:
        return f"the optimum lies beyond the widest width{wide}, outside the runs", "wider"
    # More tokens than D* = smaller models: the runs above the optimum are the narrower ones.
    if b.n_above < MIN_SIDE_RUNS:
        return f"only {b.n_above} run narrower than the optimum (narrowest width{narrow})", "narrower"
    if b.n_below < MIN_SIDE_RUNS:
        return f"only {b.n_below} run wider than the optimum (widest width{wide})", "wider"
    return None


def _at_narrowest(b, narrowest_width: int | None) -> bool:
    """Whether `b`'s narrowest run already has the narrowest width a model can have."""
    return bool(narrowest_width and b.widths and min(b.widths) <= narrowest_width)


def _no_narrower(narrowest_width: int) -> str:
    return (f"no narrower width exists (widths are multiples of the head dim, {narrowest_width}): make the "
            "narrowest models smaller (a smaller head dim, fewer layers) or move the budgets up")


def bucket_line(b, narrowest_width: int | None = None) -> str:
    """One line on a bucket as soon as its runs have finished (printed by `delphi run`).
    `narrowest_width`: the narrowest width the recipe can make (its head dim), so that the advice
    never asks for a width that cannot exist."""
    p = bucket_problem(b)
    if p is None:
        return (f"budget {b.flops:.3g}: optimum bracketed ({b.n_below} wider and {b.n_above} narrower runs), "
                f"L* {b.optimal_loss:.4f}")
    what, way = p
    if way == "narrower" and _at_narrowest(b, narrowest_width):
        fix = f"; {_no_narrower(narrowest_width)}"
    else:
        fix = f"; add {way} widths at this budget" if way else "; check its runs or widen its widths"
    return f"budget {b.flops:.3g}: {what}{fix}"


def _bracketing(iso, narrowest_width: int | None = None) -> Check:
    problems = [(b, bucket_problem(b)) for b in iso.buckets]
    bad = [(b, p) for b, p in problems if p is not None]
    counts = [{"flops": b.flops, "runs_below_optimum": b.n_below, "runs_above_optimum": b.n_above,
               "flags": list(b.flags), "skipped": b.skipped} for b in iso.buckets]
    if not bad:
        return Check("bracketing", "pass", f"every vertex has >= {MIN_SIDE_RUNS} runs on each side "
                     f"({len(iso.buckets)} budgets)", kind="widths", detail={"buckets": counts})
    groups: dict[str, list[float]] = {}
    for b, p in bad:  # one clause per distinct problem, naming its budgets
        groups.setdefault(p[0], []).append(b.flops)
    summary = (f"{len(bad)} of {len(iso.buckets)} vertices not bracketed by {MIN_SIDE_RUNS} runs a side: "
               + "; ".join(f"{what} at {_fmt_budgets(fl)}" for what, fl in groups.items()))
    parts = []
    for way in ("narrower", "wider"):
        bs = [b for b, p in bad if p[1] == way]
        if bs:
            edge = "narrowest" if way == "narrower" else "widest"
            ws = [min(b.widths) if way == "narrower" else max(b.widths) for b in bs if b.widths]
            at = f", {_width(ws[0])}" if ws and len(set(ws)) == 1 else ""
            where = f"budget{'s' if len(bs) > 1 else ''} {_fmt_budgets(b.flops for b in bs)}"
            if way == "narrower" and all(_at_narrowest(b, narrowest_width) for b in bs):
                parts.append(f"at {where} the optimum is at or beyond the narrowest width{at}, and "
                             f"{_no_narrower(narrowest_width)}")
            else:
                parts.append(f"add {way} widths at {where}: the optimum is at or beyond the {edge} width{at}")
    nomin = [b for b, p in bad if not p[1]]
    if nomin:
        parts.append(f"budget{'s' if len(nomin) > 1 else ''} {_fmt_budgets(b.flops for b in nomin)} gave no optimum: "
                     "check their runs or widen their widths")
    return Check("bracketing", "warn", summary, advice="; ".join(parts), kind="widths", detail={"buckets": counts})


def _range(budgets: np.ndarray, factor: float | None) -> Check:
    if len(budgets) < 2:
        return Check("range", "warn", f"{len(budgets)} budget(s) with an optimum: no range to fit",
                     advice="add budgets: the loss law needs at least 4 optima with a minimum")
    decades = float(np.log10(budgets.max() / budgets.min()))
    need = max(MIN_DECADES, math.log10(factor)) if factor and factor > 1 else MIN_DECADES
    detail = {"decades": decades, "needed": need, "largest_factor": factor}
    # Optima sit at their runs' actual compute, within ~1% of the planned budgets, so a grid
    # planned to span exactly `need` decades may measure 0.995 of it: that counts as spanning it.
    if decades + RANGE_TOLERANCE_DECADES >= need:
        return Check("range", "pass", f"the fit spans {decades:.2f} decades (>= {need:.2f})", detail=detail)
    lo = budgets.min() / 10 ** (need - decades)
    return Check("range", "warn", f"the fit spans {decades:.2f} decades of compute, less than the "
                 f"{need:.2f} the forecast extrapolates", detail=detail,
                 advice=f"add budgets below {budgets.min():.3g} (down to {lo:.1g}) so the fit spans {need:.1f} decades")


def local_slopes(C, L, window: int = SLOPE_WINDOW) -> list[dict]:
    """d log L / d log C by least squares on each run of `window` consecutive points (sorted by C)."""
    order = np.argsort(C)
    lc, ll = np.log(np.asarray(C, dtype=float)[order]), np.log(np.asarray(L, dtype=float)[order])
    out = []
    for i in range(len(lc) - window + 1):
        x, y = lc[i:i + window], ll[i:i + window]
        out.append({"flops_low": float(np.exp(x[0])), "flops_high": float(np.exp(x[-1])),
                    "slope": float(np.polyfit(x, y, 1)[0])})
    return out


def _slope(budgets: np.ndarray, C: np.ndarray, L: np.ndarray, ceiling: float | None = None) -> Check:
    """Local exponents of the optima; with the ceiling form, of its power-law part 1/(1/L − 1/H),
    which that form expects to be straight (the optima themselves steepen as they leave H)."""
    if ceiling is not None and np.all(L < ceiling):
        L = 1.0 / (1.0 / L - 1.0 / ceiling)
    if len(C) < SLOPE_WINDOW + 1:
        return Check("slope", "warn", f"{len(C)} optima: too few for two windows of {SLOPE_WINDOW} budgets, so the "
                     "curvature of the law is not checked", advice=f"add budgets (at least {SLOPE_WINDOW + 1})")
    w = local_slopes(C, L)
    s = np.array([abs(r["slope"]) for r in w])
    detail = {"windows": w}
    if not np.all(s > 0) or any(r["slope"] >= 0 for r in w):
        up = [r for r in w if r["slope"] >= 0]
        where = _fmt_budgets([up[0]["flops_low"], up[0]["flops_high"]]) if up else ""
        return Check("slope", "warn", f"the optima do not fall with compute between {where}", detail=detail,
                     advice="re-check those budgets' vertices or add budgets between them")
    ratio_end, spread = float(s[-1] / s[0]), float(s.max() / s.min())
    detail.update(steepening_ratio=ratio_end, spread_ratio=spread)
    text = ", ".join(f"{-r['slope']:.3f}" for r in w)  # as exponents: L ∝ C^-slope
    if ratio_end > SLOPE_STEEPENING:
        what = "the power-law part 1/(1/L − 1/H) still steepens" if ceiling is not None else "the loss curve still steepens"
        return Check("slope", "warn", f"{what} (local exponents {text} from the lowest to the "
                     f"highest budgets)" + ("" if ceiling is not None else
                                              "; the law can only flatten, so the forecast is likely too high"),
                     detail=detail,
                     advice=f"add budgets above {budgets.max():.3g}: the curve has not reached the law's regime")
    if spread > SLOPE_SPREAD:
        return Check("slope", "warn", f"local exponents disagree by {spread:.1f}x across windows ({text})", detail=detail,
                     advice="add budgets between the fitted ones (or runs per budget): the slope is not stable")
    return Check("slope", "pass", f"local exponents {text} (steepening ratio {ratio_end:.2f}, spread {spread:.2f}x)",
                 detail=detail)


def _loo(law, budgets: np.ndarray, target_compute: float | None) -> Check:
    if target_compute is None:
        return Check("leave-one-out", "pass", "no forecast target", detail={})
    if law.loo_params is None:
        return Check("leave-one-out", "warn", f"{law.n_points} optima: too few to leave one out",
                     advice="add budgets: leaving one out needs more optima than the law has parameters")
    pred = float(law.predict(target_compute))
    rows = law._predict_rows(law.loo_params, target_compute)
    dev = 100.0 * (rows - pred) / pred
    i = int(np.nanargmax(np.abs(dev)))
    worst = float(dev[i])
    detail = {"target_compute": target_compute, "forecast": pred, "max_move_pct": abs(worst),
              "loo_forecasts": [float(x) for x in rows], "budget_dropped": float(budgets[i])}
    where = "above" if budgets[i] == budgets.max() else "below" if budgets[i] == budgets.min() else "around"
    if abs(worst) <= LOO_MAX_PCT:
        return Check("leave-one-out", "pass", f"dropping any one budget moves the forecast by at most "
                     f"{abs(worst):.2f}%", detail=detail)
    return Check("leave-one-out", "warn", f"dropping budget {budgets[i]:.3g} moves the forecast by {worst:+.2f}% "
                 f"(> {LOO_MAX_PCT:g}%)", detail=detail,
                 advice=f"add budgets {where} {budgets[i]:.3g}: the forecast rests on that one budget")


def _backtest(table, metric: str, n_used: int, bootstrap: int, seed: int, compute: str,
              ceiling: float | None = None) -> Check:
    from delphi.fit.backtest import backtest

    need = BACKTEST_MIN_BUDGETS + 1
    if table is None or n_used < need:
        return Check("backtest", "warn", f"{n_used} optima: a backtest needs {need} (fit on {BACKTEST_MIN_BUDGETS}, "
                     "forecast the rest), so the law is untested on this grid",
                     advice=f"add budgets (at least {need} with an optimum)")
    try:
        bt = backtest(table, metric, min_budgets=BACKTEST_MIN_BUDGETS, bootstrap=bootstrap, seed=seed, compute=compute,
                      forms=("ceiling",) if ceiling is not None else ("asymptote",), ceiling=ceiling)
    except DelphiError as e:
        return Check("backtest", "warn", f"not computed ({e})", advice="add budgets")
    r = max(bt.rows, key=lambda r: (r.factor, -len(r.fit_budgets)))
    placed = r.placed_residual_pct
    detail = {"rows": [x.to_dict() for x in bt.rows], "largest_factor": r.factor, "residual_pct": r.residual_pct,
              "inside": r.inside, "tokens_ratio": r.tokens_ratio, "placed_residual_pct": placed}
    what = (f"fitted up to {r.fit_budgets[-1]:.3g}, forecast {r.target_budget:.3g} ({r.factor:.1f}x): "
            f"residual {r.residual_pct:+.2f}%" + ("" if r.inside is None else ", inside its interval" if r.inside
                                                 else ", OUTSIDE its interval")
            + ("" if math.isnan(placed) else f"; a run placed by the allocation law ({r.tokens_ratio:.2f}x the "
               f"optimum's tokens) {placed:+.2f}%"))
    law_ok = abs(r.residual_pct) <= BACKTEST_MAX_PCT and r.inside is not False
    if law_ok and not abs(placed) > BACKTEST_MAX_PCT:
        return Check("backtest", "pass", what, detail=detail)
    if law_ok:  # the optimum lands but the allocation law does not find it
        return Check("backtest", "warn", what, detail=detail,
                     advice=f"add budgets above {bt.budgets[-1]:.3g}: the allocation law drifts off the optimum "
                            "within the grid, so a held-out run it sizes will sit above the forecast")
    return Check("backtest", "warn", what, detail=detail,
                 advice=f"add budgets above {bt.budgets[-1]:.3g} and below {bt.budgets[0]:.3g}: the law misses the "
                        "grid's own largest budget")


# What to change for each fit-level flag (`delphi.fit.flags`), in the data check's advice.
_FLAG_ADVICE = {
    "duplicate_runs": "remove the repeated rows from the runs table",
    "allocation_implausible": "check each budget's curve (`delphi fit isoflop`): flat or off-centre curves give "
                              "optima that do not follow a law",
    "loss_rises": "re-check the budgets where the optimum rises (their curves and runs) before trusting the law",
    "asymptote_at_data": "add budgets above the largest: the optima do not yet show where the loss levels off",
    "alpha_at_bound": "check the optima against the law (`delphi fit loss-law --plot`): they do not follow "
                      "E + A·C^-alpha",
}


def _data(iso, law) -> Check:
    flags = [*iso.flags, *(law.flags if law is not None else ())]
    detail = {"flags": [f.to_dict() for f in flags]}
    if not flags:
        return Check("data", "pass", "no repeated runs, the optima fall with compute and determine the law",
                     kind="data", detail=detail)
    advice = "; ".join(dict.fromkeys(_FLAG_ADVICE[f.code] for f in flags if f.code in _FLAG_ADVICE))
    return Check("data", "warn", "; ".join(f.text for f in flags), advice=advice or None, kind="data", detail=detail)


def fit_health(iso, law, *, table=None, metric: str = "loss", target_compute: float | None = None,
               factor: float | None = None, bootstrap: int = 1000, seed: int = 0,
               ceiling: float | None = None, narrowest_width: int | None = None) -> FitHealth:
    """The six checks (module docstring) of an IsoFLOP fit `iso` and the loss law `law` fitted
    through its optima, for a forecast at `target_compute` (in `iso.compute`) that is `factor`
    times the largest fitted budget. `table`: the runs, for the backtest. `narrowest_width`: the
    narrowest width the recipe can make (its head dim), so the advice never asks for less."""
    used = iso.used
    budgets = np.array([b.flops for b in used])
    C = np.array([b.optimal_compute for b in used])
    L = np.array([b.optimal_loss for b in used])
    checks = [_bracketing(iso, narrowest_width), _range(budgets, factor), _slope(budgets, C, L, ceiling),
              _loo(law, budgets, target_compute) if law is not None else
              Check("leave-one-out", "warn", "no loss law was fitted", advice="add budgets"),
              _backtest(table, metric, len(used), bootstrap, seed, iso.compute, ceiling), _data(iso, law)]
    from delphi.fit.flags import codes

    return FitHealth(tuple(checks), tuple(codes([*iso.flag_codes(), *(law.flags if law is not None else ())])))


def health_lines(health: dict, *, advice: bool = True) -> list[str]:
    """Plain lines for a terminal from `FitHealth.to_dict()` (or the part of it a ledger entry
    keeps): the verdict, each warning, and what to change."""
    if not health:
        return []
    warns = health.get("warnings") or []
    if health.get("status") != "warn" or not warns:
        return ["fit health: pass (vertices bracketed, range, slope, leave-one-out, backtest, data)"]
    lines = [f"fit health: WARN ({len(warns)} check{'s' if len(warns) > 1 else ''}); the forecast is registered "
             "regardless"] + [f"  - {w}" for w in warns]
    if advice:
        lines += [f"  to change: {a}" for a in health.get("advice") or []]
    if health.get("flags"):
        lines.append(f"  flags: {', '.join(str(f) for f in health['flags'])}")
    return lines
