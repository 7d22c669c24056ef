"""Backtest: would the loss law fitted on the smallest budgets have forecast the larger ones?

For k = min_budgets … n−1 (n usable IsoFLOP buckets, in order of compute), the IsoFLOP optima of
the lowest k budgets are fitted with the loss law (each form asked for), and the optimum loss of
every higher budget is forecast and compared with that budget's own fitted IsoFLOP optimum (the
"actual"). One row per window, form and target:

    factor       = target budget / largest fitted budget
    residual_pct = 100·(actual − forecast)/forecast       (the sign convention of `delphi check`)
    inside       = ci_low <= actual <= ci_high            (the law's prediction interval)

Where the held-out run would land (the allocation part): a held-out run is not trained at the
target's optimum but at the tokens the allocation law D*(C) = A·C^alpha, fitted on the same
window, gives for it. Each row also carries

    tokens_forecast      = D*(target) from the window's allocation law
    tokens_ratio         = tokens_forecast / the target's own fitted D*
    placed_loss          = the target's IsoFLOP parabola at tokens_forecast
    placed_residual_pct  = 100·(placed_loss − forecast)/forecast   (what `delphi check` would report)
    placed_in_range      = tokens_forecast lies within the target's runs (the parabola interpolates)

so a law whose L* lands while its allocation drifts shows up before a held-out run is spent.

The intervals are the loss law's: each bucket's runs resampled and its parabola refitted (drawn
once per bucket, so every window sees the same vertex resamples) plus the law's parametric
bootstrap (`loss_law.fit_loss_law`). Coverage is the fraction of rows whose actual lies inside.

Why min_budgets defaults to 4: the law E + A·C^−α has 3 parameters, so 3 optima fit it exactly,
leave no residual to estimate the scatter from and give no interval; 4 is the first window that
can both forecast and say how sure it is.

Input adapters (`adapt_table`): `chinchilla` reads the runs Epoch AI reconstructed from the
Chinchilla paper's Figure 4 (columns `Model Size`, `Training FLOP`, `loss`; compute and size from
the points' positions, loss from their colour). Their compute scatters around the nine IsoFLOP budgets
the paper trained (6e18 … 3e21, Hoffmann et al. 2022, Fig. 3), so each run is snapped to the
nearest of those budgets (in log compute) and its tokens are D = budget/(6N); runs more than 0.1
decades from every budget (the fixed-size runs of the paper's Approach 1, in the same figure)
are dropped. `snap_budgets` does the same for any table and any list of budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from delphi.errors import DelphiError

FORMS = {"asymptote": "E + A*C^-alpha", "power": "A*C^-alpha", "ceiling": "1/(1/H + C^alpha/A)"}
DEFAULT_MIN_BUDGETS = 4
# The nine IsoFLOP budgets of Hoffmann et al. 2022 (Chinchilla), Figure 3/4.
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)
CHINCHILLA_COLUMNS = {"Model Size": "params", "Training FLOP": "flops", "loss": "loss"}
# Runs farther than this from every budget are not IsoFLOP runs: just under half the closest
# pair of budgets (6e18 and 1e19 are 0.22 decades apart). The IsoFLOP runs read off the figure sit
# within ±0.07 decades of their budget; the fixed-size runs of the paper's Approach 1 (same plot)
# lie up to 0.6 decades away and would otherwise join a bucket at the wrong compute.
CHINCHILLA_TOLERANCE = 0.1
# Factor bins of the summary: extrapolation of ~2x, ~5x, ~10x, ... past the largest fitted budget.
FACTOR_EDGES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0, math.inf)


@dataclass(frozen=True)
class BacktestRow:
    form: str  # "asymptote" or "power"
    fit_budgets: tuple[float, ...]
    target_budget: float
    factor: float
    forecast: float
    ci_low: float | None
    ci_high: float | None
    actual: float
    residual_pct: float
    inside: bool | None  # None when the law has no interval
    # Where a run placed by the window's allocation law would land (module docstring).
    tokens_forecast: float = math.nan
    tokens_ratio: float = math.nan
    placed_loss: float = math.nan
    placed_residual_pct: float = math.nan
    placed_in_range: bool | None = None

    def to_dict(self) -> dict:
        nan = math.isnan
        return {"form": self.form, "fit_budgets": list(self.fit_budgets), "n_fit": len(self.fit_budgets),
                "target_budget": self.target_budget, "factor": self.factor, "forecast": self.forecast,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "actual": self.actual,
                "residual_pct": self.residual_pct, "inside": self.inside,
                "tokens_forecast": None if nan(self.tokens_forecast) else self.tokens_forecast,
                "tokens_ratio": None if nan(self.tokens_ratio) else self.tokens_ratio,
                "placed_loss": None if nan(self.placed_loss) else self.placed_loss,
                "placed_residual_pct": None if nan(self.placed_residual_pct) else self.placed_residual_pct,
                "placed_in_range": self.placed_in_range}


@dataclass(frozen=True)
class FactorSummary:
    form: str
    factor_low: float  # the bin [factor_low, factor_high)
    factor_high: float
    n: int
    mean_residual_pct: float
    mean_abs_residual_pct: float
    max_abs_residual_pct: float
    coverage: float | None  # fraction inside, over the rows with an interval
    mean_placed_residual_pct: float | None = None  # over the rows with a placed run (module docstring)

    def to_dict(self) -> dict:
        return {"form": self.form, "factor_low": self.factor_low, "factor_high": self.factor_high, "n": self.n,
                "mean_residual_pct": self.mean_residual_pct, "mean_abs_residual_pct": self.mean_abs_residual_pct,
                "max_abs_residual_pct": self.max_abs_residual_pct, "coverage": self.coverage,
                "mean_placed_residual_pct": self.mean_placed_residual_pct}


@dataclass(frozen=True)
class Backtest:
    metric: str
    rows: tuple[BacktestRow, ...]
    budgets: tuple[float, ...]  # usable buckets, in order
    optima: tuple[float, ...]  # their fitted optimum values
    skipped: tuple[dict, ...]  # buckets without an optimum, with the reason
    forms: tuple[str, ...]
    min_budgets: int
    confidence: float
    bootstrap: int
    seed: int
    notes: tuple[str, ...] = field(default=())
    compute: str = "total"  # the compute definition the law was fitted against
    compute_values: tuple[float, ...] = field(default=())  # each budget's optimum compute in it

    def coverage(self, form: str | None = None) -> float | None:
        """Fraction of rows (of one form, or all) whose actual lies inside its interval."""
        ins = [r.inside for r in self.rows if r.inside is not None and (form is None or r.form == form)]
        return float(np.mean(ins)) if ins else None

    def by_factor(self) -> list[FactorSummary]:
        out = []
        for form in self.forms:
            rows = [r for r in self.rows if r.form == form]
            for lo, hi in zip(FACTOR_EDGES[:-1], FACTOR_EDGES[1:]):
                sel = [r for r in rows if lo <= r.factor * (1 + 1e-9) < hi]
                if not sel:
                    continue
                res = np.array([r.residual_pct for r in sel])
                ins = [r.inside for r in sel if r.inside is not None]
                placed = [r.placed_residual_pct for r in sel if not math.isnan(r.placed_residual_pct)]
                out.append(FactorSummary(form, lo, hi, len(sel), float(res.mean()), float(np.abs(res).mean()),
                                         float(np.abs(res).max()), float(np.mean(ins)) if ins else None,
                                         float(np.mean(placed)) if placed else None))
        return out

    def to_dict(self) -> dict:
        return {"metric": self.metric, "rows": [r.to_dict() for r in self.rows],
                "coverage": {f: self.coverage(f) for f in self.forms},
                "by_factor": [s.to_dict() for s in self.by_factor()],
                "budgets": [{"flops": c, "optimal_loss": v, "optimal_compute": x}
                            for c, v, x in zip(self.budgets, self.optima, self.compute_values or self.budgets)],
                "compute": self.compute,
                "skipped": list(self.skipped), "forms": {f: FORMS[f] for f in self.forms},
                "min_budgets": self.min_budgets, "confidence": self.confidence, "bootstrap": self.bootstrap,
                "seed": self.seed, "residual": "100*(actual-forecast)/forecast", "notes": list(self.notes)}


def snap_budgets(table, budgets, *, tolerance: float | None = None, recompute_tokens: bool = False):
    """Assign each run the nearest of `budgets` (in log compute) as its `budget` and `flops`.

    tolerance: drop runs farther than this many decades from every budget (they were trained at
    another compute, e.g. Chinchilla's fixed-size runs of Approach 1; counted in
    `attrs["excluded"]["off-budget"]`). recompute_tokens: tokens = budget/(6·params), for sources
    whose tokens would otherwise come from the imprecise compute.
    """
    b = np.sort(np.asarray(budgets, dtype=float))
    if b.size == 0 or not np.all(np.isfinite(b) & (b > 0)):
        raise DelphiError("backtest: budgets must be positive numbers")
    if tolerance is not None and not tolerance > 0:
        raise DelphiError(f"backtest: the snap tolerance must be positive (decades), got {tolerance}")
    t = table.copy()
    lc = np.log10(t["flops"].to_numpy(dtype=float))
    dist = np.abs(lc[:, None] - np.log10(b)[None, :])
    j = dist.argmin(axis=1)
    keep = np.ones(len(t), dtype=bool) if tolerance is None else dist[np.arange(len(t)), j] <= tolerance
    t["budget"] = b[j]
    t["flops"] = b[j]
    if recompute_tokens:
        t["tokens"] = b[j] / (6.0 * t["params"].to_numpy(dtype=float))
    t = t[keep].reset_index(drop=True)
    t.attrs.update(table.attrs)
    if (~keep).any():
        t.attrs["excluded"] = {**table.attrs.get("excluded", {}), "off-budget": int((~keep).sum())}
    if len(t) == 0:
        raise DelphiError(f"backtest: no run lies within {tolerance} decades of the budgets")
    return t


def adapt_table(raw, fmt: str, *, budgets=None, where: str = "runs table"):
    """A raw DataFrame in a known external format -> the columns the fits read (flops, params,
    tokens, the metric). fmt "delphi" leaves it as it is (`budgets` still snaps)."""
    if fmt == "delphi":
        return raw
    if fmt == "chinchilla":
        missing = [c for c in CHINCHILLA_COLUMNS if c not in raw.columns]
        if missing:
            raise DelphiError(f"{where}: --format chinchilla needs the columns "
                              f"{', '.join(repr(c) for c in CHINCHILLA_COLUMNS)}; missing {', '.join(map(repr, missing))}")
        t = raw.rename(columns=CHINCHILLA_COLUMNS)
        return t
    raise DelphiError(f"backtest: unknown format {fmt!r}; use delphi or chinchilla")


def _valid_forms(forms) -> tuple[str, ...]:
    forms = tuple(dict.fromkeys(forms))
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise DelphiError(f"backtest: unknown law form {bad[0] if bad else '(none)'!r}; use {' or '.join(FORMS)}")
    return forms


def _placed_runs(used, X, D, k: int) -> list[tuple[float, float, float, bool]]:
    """For each bucket above the lowest k: (tokens the allocation law fitted on the lowest k gives
    it, that over its own D*, its parabola's loss there, whether its runs bracket those tokens)."""
    from delphi.fit.isoflop import fit_power_law

    law = fit_power_law(X[:k], D[:k])
    out = []
    for b, x in zip(used[k:], X[k:]):
        d_hat = float(law.predict(x))
        # Python bool, not numpy's: the row goes into fit.json, which is written as strict JSON.
        in_range = bool(min(b.tokens) <= d_hat <= max(b.tokens))
        out.append((d_hat, d_hat / b.optimal_tokens, float(b.predict(d_hat)), in_range))
    return out


def backtest(table, metric: str = "loss", *, min_budgets: int = DEFAULT_MIN_BUDGETS, forms=("asymptote",),
             bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95, exclude_flagged: bool = False,
             huber_delta: float | None = None, compute: str = "total", ceiling: float | None = None) -> Backtest:
    """Backtest the loss law on a runs table (see the module docstring). compute: the definition
    of C the law is fitted against (`delphi.fit.compute`); windows and factors stay in the
    planned budgets. ceiling: H of the "ceiling" form (needed when that form is asked for)."""
    from delphi.fit.isoflop import fit_isoflop
    from delphi.fit.loss_law import fit_loss_law

    forms = _valid_forms(forms)
    if "ceiling" in forms and ceiling is None:
        raise DelphiError("backtest: the ceiling form needs its H (--ceiling, e.g. the unigram loss of the metric)")
    if min_budgets < 2:
        raise DelphiError(f"backtest: --min-budgets must be at least 2, got {min_budgets}")
    if bootstrap < 0:
        raise DelphiError(f"backtest: bootstrap must be >= 0, got {bootstrap}")
    if not 0 < confidence < 1:
        raise DelphiError(f"backtest: confidence must be in (0, 1), got {confidence}")
    iso = fit_isoflop(table, metric, huber_delta=huber_delta, exclude_flagged=exclude_flagged, compute=compute)
    used = iso.used
    skipped = tuple({"flops": b.flops, "n_runs": b.n_runs,
                     "reason": b.skipped or "flagged: " + ", ".join(b.flags)} for b in iso.buckets if b not in used)
    n = len(used)
    need = min_budgets + 1
    if n < need:
        why = "; ".join(f"{s['flops']:.3g}: {s['reason']}" for s in skipped[:4])
        raise DelphiError(f"backtest: {n} budget(s) gave an IsoFLOP optimum; a backtest with --min-budgets "
                          f"{min_budgets} needs at least {need} (fit on {min_budgets}, forecast the rest)"
                          + (f" (skipped: {why})" if why else ""))
    C = np.array([b.flops for b in used])
    X = np.array([b.optimal_compute for b in used])  # the law's x: the optima's compute (definition `compute`)
    L = np.array([b.optimal_loss for b in used])
    D = np.array([b.optimal_tokens for b in used])
    vert = iso.bootstrap_optima(bootstrap, seed) if bootstrap else None
    rows, notes = [], []
    placed = {k: _placed_runs(used, X, D, k) for k in range(min_budgets, n)}  # every window a form fits (k >= min_budgets)
    for form in forms:
        n_params = 3 if form == "asymptote" else 2
        for k in range(max(min_budgets, n_params), n):
            try:
                law = fit_loss_law(X[:k], L[:k], bootstrap=bootstrap, seed=seed, confidence=confidence,
                                   asymptote=form == "asymptote", ceiling=ceiling if form == "ceiling" else None,
                                   optima_resamples=None if vert is None else vert[:, :k])
            except DelphiError as e:
                why = iso.explain_off_centre()
                notes.append(f"{form}, lowest {k} budgets: not fitted ({e})" + (f"; {why}" if why else ""))
                continue
            if law.note:
                notes.append(f"{form}, lowest {k} budgets: {law.note}")
            targets = C[k:]
            pred = law.predict(X[k:])
            lo, hi = law.interval(X[k:])
            for j, (c, p, a, b, act) in enumerate(zip(targets, pred, lo, hi, L[k:])):
                has = bool(np.isfinite(a) and np.isfinite(b))
                d_hat, ratio, loss_at, in_range = placed[k][j]
                rows.append(BacktestRow(form=form, fit_budgets=tuple(map(float, C[:k])), target_budget=float(c),
                                        factor=float(c / C[k - 1]), forecast=float(p),
                                        ci_low=float(a) if has else None, ci_high=float(b) if has else None,
                                        actual=float(act), residual_pct=float(100.0 * (act - p) / p),
                                        inside=bool(a <= act <= b) if has else None,
                                        tokens_forecast=d_hat, tokens_ratio=ratio, placed_loss=loss_at,
                                        placed_residual_pct=float(100.0 * (loss_at - p) / p), placed_in_range=in_range))
    if not rows:
        raise DelphiError("backtest: no window could be fitted (" + "; ".join(notes[:3]) + ")")
    return Backtest(metric=metric, rows=tuple(rows), budgets=tuple(map(float, C)), optima=tuple(map(float, L)),
                    skipped=skipped, forms=forms, min_budgets=min_budgets, confidence=confidence,
                    bootstrap=bootstrap, seed=seed, notes=tuple(notes), compute=compute,
                    compute_values=tuple(map(float, X)))
