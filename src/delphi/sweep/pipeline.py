"""`delphi run`: the whole Delphi loop for one suite.

    plan grid → train grid → collect → fit (IsoFLOP optima, allocation law, loss law)
    → forecast held-out runs → register in the ledger → train held-out → check → report

Each stage reads what the previous one wrote in the suite directory, so an interrupted suite
re-run does only the unfinished work (finished runs are skipped, interrupted ones resume from
their checkpoints, forecasts already registered for the same fit are not registered again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.forecast.ledger import Ledger, sha256_file
from delphi.sweep.executors import execute
from delphi.sweep.results import collect, write_table
from delphi.sweep.suite import SuiteSpec


@dataclass
class SuiteResult:
    suite_dir: Path
    check: dict[str, Any] | None
    report: dict[str, Path] | None


def _say(progress: bool, msg: str) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(msg)


def run_suite(suite: SuiteSpec, *, retry_failed: bool = False, progress: bool = True,
              heldout: bool = True, report: bool = True) -> SuiteResult:
    d = Path(suite.out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "suite.toml").write_text(suite.source)
    runs_dir = d / "runs"
    ex = suite.executor
    run_kw = dict(kind=ex.kind, workers=ex.workers, threads_per_worker=ex.threads_per_worker,
                  retry_failed=retry_failed, progress=progress, ray_address=ex.address,
                  cpus_per_run=ex.cpus_per_run, gpus_per_run=ex.gpus_per_run)

    # Tokenise once here, so parallel workers find the cache instead of racing to build it.
    from delphi.data import prepare_data

    _say(progress, f"[bold]suite {suite.name}[/]: preparing data ({suite.data.mixture}, {suite.data.tokenizer})")
    prepare_data(suite.data, progress=progress)

    grid = suite.grid_specs()
    _say(progress, f"[bold]grid[/]: {len(grid)} runs over budgets "
                   f"{', '.join(f'{b:.1e}' for b in suite.fit_budgets)} FLOPs")
    outcomes = execute(grid, runs_dir, label="IsoFLOP grid", **run_kw)
    bad = [o for o in outcomes if o.status not in ("completed",)]
    for o in bad:
        _say(progress, f"[yellow]excluded from the fit[/]: {o.name} ({o.status}: {o.reason})")

    table = collect(runs_dir)
    write_table(table, d / "runs.csv")
    grid_names = {s.name for s in grid}
    fit_table = table[table["name"].isin(grid_names)]
    fit_input = write_table(fit_table, d / "fit-input.csv")
    fit = fit_suite(suite, fit_input)
    (d / "fit.json").write_text(json.dumps(fit["record"], indent=2))
    _say(progress, _fit_summary(fit))

    if heldout:
        specs = register_heldout(suite, d, fit, progress)
        execute(specs, runs_dir, label="held-out", **run_kw)
        table = collect(runs_dir)
        write_table(table, d / "runs.csv")

    if suite.downstream_tasks:
        table = downstream_stage(suite, d, table, progress)

    from delphi.forecast.check import check_suite, format_check

    check = check_suite(d) if (d / "ledger.jsonl").exists() else None
    if check is not None:
        (d / "check.json").write_text(json.dumps(check, indent=2))
        _say(progress, format_check(check))
    rep = None
    if report:
        from delphi.report import build_report

        rep = build_report(d)
        _say(progress, f"report: {rep.get('html', '')}")
    return SuiteResult(d, check, rep)


def fit_suite(suite: SuiteSpec, runs_csv: Path) -> dict[str, Any]:
    """IsoFLOP optima + allocation law + loss law on the grid's runs table."""
    from delphi.fit.isoflop import fit_isoflop
    from delphi.fit.loss_law import fit_loss_law
    from delphi.fit.runs_table import load_runs_table

    table = load_runs_table(runs_csv, metric=suite.fit_metric)
    iso = fit_isoflop(table, metric=suite.fit_metric)
    optima = iso.optima()
    if len(optima["flops"]) < 3:
        raise DelphiError(f"only {len(optima['flops'])} IsoFLOP bucket(s) gave an optimum; the loss law needs 3 "
                          "(see fit.json for each bucket's reason; widen the grid or fix failed runs)")
    # The vertices' own uncertainty (each bucket's runs resampled) enters the law's interval.
    vert = iso.bootstrap_optima(suite.bootstrap, suite.fit_seed) if suite.bootstrap else None
    law = fit_loss_law(optima["flops"], optima["loss"], bootstrap=suite.bootstrap, seed=suite.fit_seed,
                       optima_resamples=vert)
    settings = {"metric": suite.fit_metric, "bootstrap": suite.bootstrap, "seed": suite.fit_seed,
                "interval": "prediction; runs resampled within buckets + parametric bootstrap of the law"}
    record = {"metric": suite.fit_metric, "isoflop": iso.to_dict(), "loss_law": law.to_dict(),
              "runs_table_sha256": sha256_file(runs_csv), "settings": settings}
    return {"iso": iso, "law": law, "record": record, "settings": settings,
            "largest_budget": max(suite.fit_budgets)}


def _fit_summary(fit: dict[str, Any]) -> str:
    law = fit["law"].to_dict()
    alloc = fit["record"]["isoflop"]["allocation"]["tokens"]
    return (f"[bold]fit[/]: L*(C) = {law['E']:.4f} + {law['A']:.4g}·C^-{law['alpha']:.4f};  "
            f"D*(C) = {alloc['A']:.4g}·C^{alloc['alpha']:.4f}")


def register_heldout(suite: SuiteSpec, d: Path, fit: dict[str, Any], progress: bool):
    """Choose, forecast and register each held-out run (idempotent for an unchanged fit)."""
    from delphi.forecast.forecast import make_forecast, register

    ledger = Ledger(d / "ledger.jsonl")
    check = ledger.verify()
    if not check.ok:
        raise DelphiError(f"{ledger.path} fails verification ({check.problems[0]}); it must not be edited")
    alloc = fit["record"]["isoflop"]["allocation"]["tokens"]
    sha = fit["record"]["runs_table_sha256"]
    existing = {e["forecast"]["run"]: e for e in ledger.read() if e.get("kind") == "forecast"}
    specs = []
    for budget in suite.heldout_budgets:
        cand = suite.recipe.heldout(budget, alloc["A"], alloc["alpha"], suite.heldout_batch_size)
        for seed in suite.seeds_for(budget):
            spec = suite.run_spec(cand, seed=seed, role="heldout", name=suite.heldout_name(cand, seed))
            prior = existing.get(spec.name)
            started = (d / "runs" / spec.name / "started.json").exists()
            if prior and (prior["runs_table_sha256"] == sha and prior["run_spec"] == spec.to_dict() or started):
                entry = prior  # already registered (or already running under an earlier forecast)
            else:
                fc = make_forecast(spec, fit["law"], metric=suite.fit_metric, largest_fit_budget=fit["largest_budget"])
                entry = register(ledger, fc, spec, runs_table_sha256=sha, fit_settings=fit["settings"],
                                 suite=suite.name)
                f = entry["forecast"]
                _say(progress, f"[bold]registered[/] {spec.name}: {f['metric']} {f['loss']:.4f} "
                               f"[{f['ci_low']:.4f}, {f['ci_high']:.4f}] at {f['flops']:.2e} FLOPs "
                               f"({f['extrapolation']:.0f}× the largest fitted budget), entry {entry['hash'][:12]}")
            specs.append(type(spec).from_dict({**entry["run_spec"],
                                               "tags": {**entry["run_spec"]["tags"], "ledger_entry": entry["hash"]}}))
    return specs


def downstream_stage(suite: SuiteSpec, d: Path, table, progress: bool):
    """Evaluate the IsoFLOP winners and held-out runs on the suite's tasks, merge the metrics
    into runs.csv, and (with a pool) forecast accuracy at the held-out compute (downstream.json,
    downstream.png). Each run's results are kept in runs/<name>/eval/, so a re-run evaluates
    only what is new."""
    from delphi.downstream import forecast_downstream
    from delphi.eval import evaluate, load_results, merge_into_runs_table, open_model, save_results

    done = table[table["status"] == "completed"]
    grid = done[done["role"] == "grid"]
    winners = grid.loc[grid.groupby("budget")["loss"].idxmin()]
    names = list(winners["name"]) + list(done[done["role"] == "heldout"]["name"])
    results = []
    for name in names:
        run_dir = d / "runs" / name
        out = run_dir / "eval"
        if not out.exists():
            _say(progress, f"[bold]eval[/] {name}: {', '.join(suite.downstream_tasks)}")
            scorer, _ = open_model(run_dir)
            save_results(evaluate(scorer, list(suite.downstream_tasks), limit=suite.downstream_limit,
                                  progress=progress), out)
        results.extend(load_results(out))
    table = merge_into_runs_table(table, results)
    write_table(table, d / "runs.csv")
    if suite.downstream_pool:
        targets = [float(x) for x in done[done["role"] == "heldout"]["flops"]] or \
                  [10 * max(suite.fit_budgets)]
        fc = forecast_downstream(table[table["role"] == "grid"], suite.downstream_pool, soft=suite.downstream_soft,
                                 target_flops=targets, floor=suite.downstream_floor, bootstrap=suite.bootstrap,
                                 seed=suite.fit_seed)
        (d / "downstream.json").write_text(json.dumps(fc.to_dict(), indent=2))
        fc.plot(d / "downstream.png")
    return table
