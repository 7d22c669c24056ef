"""Scaling-law fits (numpy/scipy only; see docs/fit.md).

- `runs_table.load_runs_table(path, metric="loss")`: CSV / Parquet / JSON Lines / suite directory.
- `isoflop.fit_isoflop(table, metric)`: Approach 2 — per-budget Huber parabolas, optima,
  allocation laws, off-optimal penalty.
- `loss_law.fit_loss_law(flops, values, bootstrap=2000, seed=0)`: L*(C) = E + A·C^-alpha with
  bootstrap and leave-one-out spreads (any positive metric that decreases with compute).
- `backtest.backtest(table, metric)`: fit the law on the lowest budgets, forecast the higher ones,
  residuals against extrapolation factor and interval coverage.
- `parametric.fit_parametric(params, tokens, loss)`: Approach 3 — Epoch AI's L(N, D) fit.
- `record.FitRecord`: fit.json, the fit as the later stages read it (`to_dict`/`from_dict`).
- `bootstrap`: resampling helpers shared with downstream fits; `lbfgs`: batched L-BFGS.

Names are importable from here too; modules load on first use so `import delphi.fit` is cheap.
"""

from importlib import import_module

_EXPORTS = {
    "load_runs_table": "runs_table", "fit_isoflop": "isoflop", "IsoFlopFit": "isoflop", "BucketFit": "isoflop",
    "PowerLaw": "isoflop", "OffOptimalPenalty": "isoflop", "fit_loss_law": "loss_law", "LossLaw": "loss_law",
    "fit_parametric": "parametric", "ParametricFit": "parametric", "backtest": "backtest", "Backtest": "backtest",
    "FitRecord": "record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"delphi.fit.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'delphi.fit' has no attribute {name!r}")
