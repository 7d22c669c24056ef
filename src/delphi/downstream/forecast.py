"""Two-step downstream forecast (delphi-notes §7.2, §7.5).

Step 1: the soft metric of the suite's compute-optimal runs as a power law in compute, fitted by
the loss-law machinery (`delphi.fit.loss_law.fit_loss_law`: y = E + A·C^−α with a bootstrap
interval). Metrics where larger is better (`choice_logprob`, `logprob`) are fitted as their
negation, a decreasing quantity with an asymptote (`−choice_logprob` → its irreducible part).
Step 2: accuracy from the soft metric by the bounded sigmoid of `delphi.downstream.sigmoid`,
fitted on a pool of external models (CSV: model, soft, hard).
Composition: accuracy at a target compute = sigmoid(step-1 prediction). Its interval carries
both steps' uncertainty by Monte Carlo: step 1's bootstrap predictions at the target (the
law's `bootstrap_params`; a split normal matching its interval if a law lacks them) are paired
at random with the sigmoid's bootstrap draws over pool models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from delphi.downstream.sigmoid import SigmoidFit, fit_sigmoid
from delphi.errors import DelphiError
from delphi.eval.scoring import HIGHER_IS_BETTER

Z95 = 1.959963984540054


def metric_of(column: str) -> str:
    """'mmlu_sl_verb_5shot/choice_logprob' → 'choice_logprob'."""
    return column.rsplit("/", 1)[-1]


def higher_is_better(column: str) -> bool:
    m = metric_of(column)
    if m not in HIGHER_IS_BETTER:
        raise DelphiError(f"soft metric {column!r}: unknown direction; name a column ending in one of "
                          f"{', '.join(sorted(HIGHER_IS_BETTER))} or pass higher_is_better")
    return HIGHER_IS_BETTER[m]


# ---- step 1 -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftLaw:
    """Soft metric vs compute. `law` is fitted to `sign · soft` (sign −1 for higher-is-better)."""

    column: str
    sign: float
    law: Any  # delphi.fit.loss_law.LossLaw
    flops: tuple[float, ...]
    values: tuple[float, ...]
    names: tuple[str, ...]

    def predict(self, C):
        y = self.sign * np.asarray(self.law.predict(C), dtype=float)
        return float(y) if np.ndim(y) == 0 else y

    def interval(self, C) -> tuple[float, float]:
        lo, hi = self.law.interval(C)
        a, b = self.sign * float(lo), self.sign * float(hi)
        return (min(a, b), max(a, b))

    def sample_predictions(self, C: float) -> np.ndarray | None:
        """Soft-metric predictions at C of every step-1 bootstrap resample (None if unavailable)."""
        p = getattr(self.law, "bootstrap_params", None)
        if p is None or len(p) == 0:
            return None
        p = np.asarray(p, dtype=float)
        return self.sign * (p[:, 0] + p[:, 1] * float(C) ** (-p[:, 2]))

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "fitted_as": "-soft" if self.sign < 0 else "soft",
                "law": self.law.to_dict(),
                "points": [{"name": n, "flops": c, "soft": v} for n, c, v in zip(self.names, self.flops, self.values)]}


def fit_soft_law(flops: Sequence[float], values: Sequence[float], *, column: str = "soft",
                 names: Sequence[str] | None = None, higher: bool | None = None, bootstrap: int = 2000,
                 seed: int = 0) -> SoftLaw:
    """Step 1: `delphi.fit.loss_law.fit_loss_law` on the soft metric (the same law and bootstrap as the loss)."""
    from delphi.fit.loss_law import fit_loss_law

    flops = np.asarray(flops, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(flops) & np.isfinite(values) & (flops > 0)
    if ok.sum() < 3:
        raise DelphiError(f"step 1 ({column}): need at least 3 runs with compute and a finite soft metric, "
                          f"got {int(ok.sum())}; run `delphi eval` on the suite's runs first")
    higher = higher_is_better(column) if higher is None else higher
    sign = -1.0 if higher else 1.0
    names = list(names) if names is not None else [f"run{i}" for i in range(len(flops))]
    law = fit_loss_law(flops[ok], sign * values[ok], bootstrap=bootstrap, seed=seed)
    return SoftLaw(column=column, sign=sign, law=law, flops=tuple(flops[ok].tolist()),
                   values=tuple(values[ok].tolist()), names=tuple(np.asarray(names, dtype=object)[ok].tolist()))


def select_optima(runs, soft: str, *, flops_col: str = "flops", budget_col: str = "budget", loss_col: str = "loss",
                  name_col: str = "name"):
    """The suite's optima: per IsoFLOP budget the completed run with the lowest loss (bucket
    winner), at C = its budget; a table without budgets uses every run at its own FLOPs."""
    if soft not in runs.columns:
        evals = sorted(c for c in runs.columns if "/" in c and not c.startswith(("loss/", "bpb/")))
        raise DelphiError(f"runs table has no soft-metric column {soft!r}; available: {', '.join(evals[:12]) or 'none'} "
                          f"(merge eval results with delphi.eval.merge_into_runs_table)")
    t = runs
    if "status" in t.columns:
        t = t[t["status"].fillna("completed") == "completed"]
    t = t[np.isfinite(t[soft].astype(float))]
    if budget_col in t.columns and t[budget_col].notna().any() and loss_col in t.columns:
        t = t[t[budget_col].notna()]
        t = t.loc[t.groupby(budget_col)[loss_col].idxmin()].copy()
        t["_C"] = t[budget_col].astype(float)
    else:
        if flops_col not in t.columns:
            raise DelphiError(f"runs table needs a {flops_col!r} (or {budget_col!r} + {loss_col!r}) column")
        t = t.copy()
        t["_C"] = t[flops_col].astype(float)
    names = t[name_col].astype(str).tolist() if name_col in t.columns else [str(i) for i in t.index]
    return t["_C"].to_numpy(), t[soft].astype(float).to_numpy(), names


# ---- pool --------------------------------------------------------------------------------------------
def load_pool(path_or_frame, soft: str | None = None, hard: str | None = None):
    """Pool table with columns model, soft, hard: a CSV path, a DataFrame, or a directory of
    `delphi eval` results of the pool models (then `soft`, and optionally `hard`, name columns)."""
    import pandas as pd

    if isinstance(path_or_frame, (str, Path)) and Path(path_or_frame).is_dir():
        if soft is None:
            raise DelphiError("a pool given as a directory of eval results needs the soft-metric column name")
        path_or_frame = pool_from_results(path_or_frame, soft, hard)
    if isinstance(path_or_frame, (str, Path)):
        p = Path(path_or_frame)
        if not p.exists():
            raise DelphiError(f"pool table {p} not found (CSV with columns model, soft, hard)")
        try:
            df = pd.read_csv(p)
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DelphiError(f"pool table {p}: not a readable CSV ({first}); expected columns model, soft, "
                              "hard") from None
    else:
        df = path_or_frame
    missing = {"model", "soft", "hard"} - set(df.columns)
    if missing:
        raise DelphiError(f"pool table needs columns model, soft, hard; missing {', '.join(sorted(missing))}")
    df = df[["model", "soft", "hard"]].dropna().reset_index(drop=True)
    for col in ("soft", "hard"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.astype(float))
        if bad.any():
            i = bad.to_numpy().nonzero()[0][0]
            raise DelphiError(f"pool table: column {col!r} must hold finite numbers; complete row {i + 1} "
                              f"(model {str(df['model'].iloc[i])!r}) has {str(df[col].iloc[i])!r}")
        df[col] = values.astype(float)
    if len(df) < 4:
        raise DelphiError(f"pool table has {len(df)} complete rows; the sigmoid needs at least 4")
    return df.reset_index(drop=True)


def pool_from_results(results, soft: str, hard: str | None = None):
    """Pool table (model, soft, hard) from `delphi eval` results of external models (a list of
    TaskResult or a directory of result JSON). `soft`/`hard` are `<task>/<metric>` columns; the
    hard metric defaults to the soft metric's task `acc`."""
    from delphi.eval import load_results, wide_results

    if isinstance(results, (str, Path)):
        results = load_results(results)
    hard = hard or soft.rsplit("/", 1)[0] + "/acc"
    wide = wide_results(results)
    for col in (soft, hard):
        if col not in wide.columns:
            raise DelphiError(f"pool results have no {col!r}; evaluate the pool models on that task first")
    return wide.rename(columns={"name": "model", soft: "soft", hard: "hard"})[["model", "soft", "hard"]].dropna()


# ---- composition -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownstreamForecast:
    soft: str
    target_flops: tuple[float, ...]
    soft_pred: tuple[float, ...]
    soft_interval: tuple[tuple[float, float], ...]
    acc_pred: tuple[float, ...]
    acc_interval: tuple[tuple[float, float], ...]
    confidence: float
    step1: SoftLaw
    step2: SigmoidFit
    pool: Any = field(repr=False)  # DataFrame model, soft, hard
    draws: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "soft": self.soft, "confidence": self.confidence, "monte_carlo_draws": self.draws,
            "forecasts": [{"flops": c, "soft": s, "soft_interval": list(si), "acc": a, "acc_interval": list(ai)}
                          for c, s, si, a, ai in zip(self.target_flops, self.soft_pred, self.soft_interval,
                                                     self.acc_pred, self.acc_interval)],
            "step1": self.step1.to_dict(), "step2": self.step2.to_dict(),
            "pool": self.pool.to_dict(orient="records"),
        }

    def save(self, path: str | Path) -> Path:
        """`downstream.json`: `to_dict()` as JSON, written atomically (numpy scalars as floats)."""
        import json

        from delphi.files import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=float))

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        from delphi.downstream.plot import plot_forecast

        return plot_forecast(self, path, title=title)


def _split_normal(rng, center: float, lo: float, hi: float, n: int, confidence: float) -> np.ndarray:
    z = _z(confidence)
    s_lo, s_hi = max(center - lo, 0.0) / z, max(hi - center, 0.0) / z
    e = rng.standard_normal(n)
    return center + np.where(e < 0, e * s_lo, e * s_hi)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def compose(step1: SoftLaw, step2: SigmoidFit, target_flops: Sequence[float], *, pool=None,
            confidence: float = 0.95, draws: int = 20000, seed: int = 0) -> DownstreamForecast:
    if len(step2.samples) == 0:
        raise DelphiError("compose: the sigmoid fit needs bootstrap draws for the interval (bootstrap > 0)")
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - confidence) / 2
    soft_pred, soft_int, acc_pred, acc_int = [], [], [], []
    for C in target_flops:
        s = step1.predict(float(C))
        lo, hi = step1.interval(float(C))
        boot = step1.sample_predictions(float(C))
        if boot is not None:
            soft_draws = boot[rng.integers(0, len(boot), size=draws)]
        else:
            soft_draws = _split_normal(rng, s, lo, hi, draws, confidence)
        params = step2.samples[rng.integers(0, len(step2.samples), size=draws)]
        z = np.clip(-params[:, 2] * (soft_draws - params[:, 3]), -500, 500)
        acc = params[:, 0] / (1 + np.exp(z)) + params[:, 1]
        a_lo, a_hi = np.percentile(acc, [tail, 100 - tail])
        soft_pred.append(float(s))
        soft_int.append((float(lo), float(hi)))
        acc_pred.append(float(step2.predict(s)))
        acc_int.append((float(a_lo), float(a_hi)))
    return DownstreamForecast(soft=step1.column, target_flops=tuple(float(c) for c in target_flops),
                              soft_pred=tuple(soft_pred), soft_interval=tuple(soft_int), acc_pred=tuple(acc_pred),
                              acc_interval=tuple(acc_int), confidence=confidence, step1=step1, step2=step2,
                              pool=pool, draws=draws)


def forecast_downstream(runs, pool, *, soft: str, target_flops: float | Sequence[float], floor: float | None = None,
                        fix_floor: bool = False, hard: str | None = None, bootstrap: int = 2000, seed: int = 0,
                        confidence: float = 0.95, higher: bool | None = None, flops_col: str = "flops", budget_col: str = "budget",
                        loss_col: str = "loss") -> DownstreamForecast:
    """Runs table with a soft-metric column + pool table → the two-step forecast.

    `soft`: the runs-table column (e.g. "mmlu_sl_verb_5shot/choice_logprob"); the pool's `soft`
    column must hold the same metric for the external models; `pool` may also be a directory of
    `delphi eval` results for the pool models (`hard`: their accuracy column, default
    `<task>/acc`). `floor`: chance accuracy as the sigmoid's lower bound (pinned with `fix_floor`)."""
    if isinstance(target_flops, (int, float)):
        target_flops = [float(target_flops)]
    if not target_flops or any(not (c > 0 and math.isfinite(c)) for c in target_flops):
        raise DelphiError("target compute must be positive FLOPs, e.g. 1e21")
    pool_df = load_pool(pool, soft=soft, hard=hard)  # a bad pool fails before any fitting
    C, y, names = select_optima(runs, soft, flops_col=flops_col, budget_col=budget_col, loss_col=loss_col)
    step1 = fit_soft_law(C, y, column=soft, names=names, higher=higher, bootstrap=bootstrap, seed=seed)
    step2 = fit_sigmoid(pool_df["soft"], pool_df["hard"], groups=pool_df["model"], floor=floor, fix_floor=fix_floor,
                        bootstrap=min(bootstrap, 1000), seed=seed)
    return compose(step1, step2, target_flops, pool=pool_df, confidence=confidence, seed=seed)
