"""Forecasts: choose a held-out configuration with the allocation law, predict its loss with the
loss law (bootstrap interval, leave-one-bucket-out spread), and register it in the ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from delphi.config import RunSpec
from delphi.forecast.ledger import Ledger

# A forecast ledger entry's `schema_version` (docs/artefacts.md): 2 is written now; an entry
# without the field is version 1 (the same fields; `health` and `compute_definition` may be absent).
ENTRY_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Forecast:
    run: str  # the held-out run's name
    seed: int
    budget: float
    flops: float  # 3·fpt·tokens of the chosen configuration
    extrapolation: float  # flops / largest fitted budget
    metric: str
    loss: float
    ci_low: float
    ci_high: float
    loo_min: float
    loo_max: float
    compute_definition: str = "total"  # what the loss law's C is (`delphi.fit.compute`)
    compute: float | None = None  # the run's C in that definition (= flops for "total")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_forecast(spec: RunSpec, loss_law, *, metric: str, largest_fit_budget: float,
                  compute: str = "total") -> Forecast:
    """The law is evaluated at the run's compute in the definition it was fitted with; the
    extrapolation factor stays in planned (total) FLOPs, like the budgets."""
    from delphi.fit.compute import shape_compute

    C = spec.flops
    X = shape_compute(spec.shape, spec.tokens, compute)
    lo, hi = loss_law.interval(X)
    loo_lo, loo_hi = loss_law.loo(X)
    return Forecast(run=spec.name, seed=spec.seed, budget=float(spec.budget or C), flops=C,
                    extrapolation=C / largest_fit_budget, metric=metric, loss=float(loss_law.predict(X)),
                    ci_low=float(lo), ci_high=float(hi), loo_min=float(loo_lo), loo_max=float(loo_hi),
                    compute_definition=compute, compute=X)


def register(ledger: Ledger, forecast: Forecast, spec: RunSpec, *, runs_table_sha256: str,
             fit_settings: dict[str, Any], suite: str, health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append the forecast with the exact RunSpec it predicts; returns the ledger entry.

    health: the fit-health verdict (`delphi.fit.health`: status, warnings, advice, and the fit's
    flag codes), registered with the forecast so a warning cannot be dropped after the result is known."""
    from delphi.version import code_version

    extra = {} if health is None else {"health": {k: health[k] for k in ("status", "warnings", "advice", "flags")
                                                  if k in health}}
    return ledger.append({**extra,
        "schema_version": ENTRY_SCHEMA_VERSION,
        "kind": "forecast",
        "suite": suite,
        "forecast": forecast.to_dict(),
        "run_spec": spec.to_dict(),
        "runs_table_sha256": runs_table_sha256,
        "fit_settings": fit_settings,
        "code_version": code_version(),
    })
