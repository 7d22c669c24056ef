"""`delphi run`: the whole Delphi loop for one suite.

    plan grid → train grid → collect → fit (IsoFLOP optima, allocation law, loss law)
    → forecast held-out runs → register in the ledger → train held-out → check → report

Each stage reads what the previous one wrote in the suite directory, so an interrupted suite
re-run does only the unfinished work (finished runs are skipped, interrupted ones resume from
their checkpoints, forecasts already registered for the same fit are not registered again).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, sha256_file
from delphi.forecast.ledger import Ledger
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
    run_kw = dict(retry_failed=retry_failed, progress=progress)

    # Tokenise once here, so parallel workers find the cache instead of racing to build it.
    from delphi.data import prepare_data

    _say(progress, f"[bold]suite {suite.name}[/]: preparing data ({suite.data.mixture}, {suite.data.tokenizer})")
    prepared = prepare_data(suite.data, progress=progress)

    grid = suite.grid_specs()
    _say(progress, f"[bold]grid[/]: {len(grid)} runs over budgets "
                   f"{', '.join(f'{b:.1e}' for b in suite.grid.budgets)} FLOPs")
    # Each budget's vertex is checked as soon as its runs finish, so an off-centre grid shows
    # while the rest of it trains rather than after it.
    with BudgetWatch(grid, runs_dir, suite.fit.metric, progress):
        outcomes = execute(grid, runs_dir, suite.executor, label="IsoFLOP grid", **run_kw)
    bad = [o for o in outcomes if o.status not in ("completed",)]
    for o in bad:
        _say(progress, f"[yellow]excluded from the fit[/]: {o.name} ({o.status}: {o.reason})")

    table = collect(runs_dir)
    write_table(table, d / "runs.csv")
    grid_names = {s.name for s in grid}
    fit_table = table[table["name"].isin(grid_names)]
    fit_input = write_table(fit_table, d / "fit-input.csv")
    fit = fit_suite(suite, fit_input)
    atomic_write_json(d / "fit.json", fit["record"])
    _say(progress, _fit_summary(fit))

    if heldout:
        specs = register_heldout(suite, d, fit, progress)
        from rich.markup import escape

        for line in data_repeat_notes(specs, prepared):
            _say(progress, f"[yellow]data[/]: {escape(line)}")  # the line names "[data] mixture"
        execute(specs, runs_dir, suite.executor, label="held-out", **run_kw)
        table = collect(runs_dir)
        write_table(table, d / "runs.csv")

    if suite.eval.downstream:
        table = downstream_stage(suite, d, table, progress)

    from delphi.forecast.check import check_suite, format_check

    check = check_suite(d) if (d / "ledger.jsonl").exists() else None
    if check is not None:
        atomic_write_json(d / "check.json", check)
        _say(progress, format_check(check))
    rep = None
    if report:
        from delphi.report import build_report

        rep = build_report(d)
        _say(progress, f"report: {rep.get('html', '')}")
    return SuiteResult(d, check, rep)


FINISHED = ("completed", "diverged", "failed")


def budget_lines(groups: dict[float, list], runs_dir: Path, metric: str, reported: set[float]) -> list[str]:
    """One line (`delphi.fit.health.bucket_line`) for each budget of `groups` ({budget: its
    RunSpecs}) not yet in `reported` whose runs have all finished; adds those budgets to it."""
    import math

    from delphi.fit.health import bucket_line
    from delphi.fit.isoflop import fit_bucket
    from delphi.fit.runs_table import flatten_summary

    lines = []
    for budget, specs in groups.items():
        if budget in reported:
            continue
        rows = []
        for spec in specs:
            try:
                summary = json.loads((runs_dir / spec.name / "summary.json").read_text())
            except (OSError, json.JSONDecodeError):
                break  # not finished (or being written): look again later
            if summary.get("status") not in FINISHED:
                break
            rows.append(flatten_summary(summary))
        else:
            reported.add(budget)
            ok = [r for r in rows if r.get("status") == "completed"
                  and all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) and r[k] > 0
                          for k in ("tokens", "params", metric))]
            widths = [r.get("hidden_size") for r in ok]
            b = fit_bucket(budget, [r["tokens"] for r in ok], [r["params"] for r in ok], [r[metric] for r in ok],
                           widths=widths if all(isinstance(w, (int, float)) for w in widths) else None)
            line = bucket_line(b, narrowest_width=min(spec.shape.head_dim for spec in specs))
            if len(ok) < len(rows):
                line += f" ({len(rows) - len(ok)} of {len(rows)} runs did not complete)"
            lines.append(line)
    return lines


class BudgetWatch:
    """While the grid trains, report each budget's vertex once all its runs have finished
    (a thread polling the run directories; the executor itself is unchanged)."""

    def __init__(self, grid, runs_dir: Path, metric: str, progress: bool, interval_s: float = 2.0):
        self.groups: dict[float, list] = {}
        for spec in grid:
            self.groups.setdefault(float(spec.budget or spec.flops), []).append(spec)
        self.runs_dir, self.metric, self.progress, self.interval_s = runs_dir, metric, progress, interval_s
        self.reported: set[float] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="budget-watch", daemon=True)

    def poll(self) -> None:
        from rich.markup import escape

        try:
            lines = budget_lines(self.groups, self.runs_dir, self.metric, self.reported)
        except Exception as e:  # noqa: BLE001 - a report must never stop the sweep
            lines = [f"budget check skipped: {e}"]
        for line in lines:
            ok = "optimum bracketed" in line
            _say(self.progress, f"[{'green' if ok else 'yellow'}]grid[/]: {escape(line)}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __enter__(self):
        if self.progress:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            if exc[0] is None:
                self.poll()  # budgets that finished since the last look
        return False


def fit_suite(suite: SuiteSpec, runs_csv: Path) -> dict[str, Any]:
    """IsoFLOP optima + allocation law + loss law on the grid's runs table, and the fit's health
    (`delphi.fit.health`), in the suite's compute definition. `record` is what fit.json holds
    (`delphi.fit.record.FitRecord.to_dict()`)."""
    from delphi.fit.health import fit_health
    from delphi.fit.isoflop import fit_isoflop, fit_law_on_optima
    from delphi.fit.record import FitRecord
    from delphi.fit.runs_table import load_runs_table

    table = load_runs_table(runs_csv, metric=suite.fit.metric)
    iso = fit_isoflop(table, metric=suite.fit.metric, compute=suite.fit.compute)
    optima = iso.optima()
    if len(optima["flops"]) < 3:
        from delphi.fit.isoflop import explain_unused

        why = iso.explain_off_centre()
        raise DelphiError(f"only {len(optima['flops'])} IsoFLOP bucket(s) gave an optimum; the loss law needs 3 "
                          + (f"({why}; re-centre the widths there)" if why else
                             f"({explain_unused(iso.buckets) or 'widen the grid or fix failed runs'})"))
    ceiling = fit_ceiling(suite)
    # The vertices' own uncertainty (each bucket's runs resampled) enters the law's interval.
    law = fit_law_on_optima(iso, bootstrap=suite.fit.bootstrap, seed=suite.fit.seed, ceiling=ceiling)
    settings = {"metric": suite.fit.metric, "bootstrap": suite.fit.bootstrap, "seed": suite.fit.seed,
                "compute": suite.fit.compute, "form": law.form,
                "interval": "prediction; runs resampled within buckets + parametric bootstrap of the law"}
    if ceiling is not None:
        settings["ceiling"] = {"H": ceiling, "source": "unigram loss of the validation windows"
                               if suite.fit.ceiling == "unigram" else "suite file"}
    target, factor = heldout_target(suite, iso)
    health = fit_health(iso, law, table=table, metric=suite.fit.metric, target_compute=target, factor=factor,
                        bootstrap=suite.fit.bootstrap, seed=suite.fit.seed, ceiling=ceiling,
                        narrowest_width=suite.recipe.head_dim)
    record = FitRecord(metric=suite.fit.metric, compute=suite.fit.compute, isoflop=iso, loss_law=law,
                       runs_table_sha256=sha256_file(runs_csv), settings=settings, health=health).to_dict()
    return {"iso": iso, "law": law, "record": record, "settings": settings,
            "largest_budget": max(suite.grid.budgets), "health": health}


def fit_ceiling(suite: SuiteSpec) -> float | None:
    """The loss law's ceiling H for the suite's metric: the unigram baseline of its validation
    windows (`delphi.data.loader.unigram_baseline`) for `ceiling = "unigram"`, the suite's number,
    or None (the law E + A·C^-alpha)."""
    if suite.fit.ceiling is None:
        return None
    if suite.fit.ceiling != "unigram":
        return float(suite.fit.ceiling)
    from delphi.data.loader import unigram_baseline
    from delphi.data.shards import prepare_data

    prepared = prepare_data(suite.data, progress=False)
    return unigram_baseline(prepared, suite.recipe.seq_len, suite.eval.windows_per_domain)[suite.fit.metric]


def heldout_target(suite: SuiteSpec, iso) -> tuple[float | None, float | None]:
    """(compute in the fit's definition, factor past the largest fitted budget) of the largest
    held-out run the allocation law chooses; (None, None) without an allocation law."""
    from delphi.fit.compute import shape_compute

    if iso.tokens_law is None or not suite.heldout.budgets:
        return None, None
    try:
        cand = suite.recipe.heldout(max(suite.heldout.budgets), iso.tokens_law.A, iso.tokens_law.alpha,
                                    suite.heldout.batch_size)
    except DelphiError:
        return None, None
    return shape_compute(cand.shape, cand.tokens, suite.fit.compute), cand.flops / max(suite.grid.budgets)


def _fit_summary(fit: dict[str, Any]) -> str:
    from rich.markup import escape

    from delphi.fit.health import health_lines

    alloc = fit["record"]["isoflop"]["allocation"]["tokens"]
    compute = fit["record"].get("compute", "total")
    head = (f"[bold]fit[/]: {escape(fit['law'].equation())}"
            + (f" (C: {compute} compute)" if compute != "total" else "")
            + f";  D*(C) = {alloc['A']:.4g}·C^{alloc['alpha']:.4f}")
    health = fit["record"].get("health") or {}
    colour = "yellow" if health.get("status") == "warn" else "green"
    return "\n".join([head] + [f"[{colour}]{escape(x)}[/]" for x in health_lines(health)])


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
    for budget in suite.heldout.budgets:
        cand = suite.recipe.heldout(budget, alloc["A"], alloc["alpha"], suite.heldout.batch_size)
        for seed in suite.seeds_for(budget):
            spec = suite.run_spec(cand, seed=seed, role="heldout", name=suite.heldout_name(cand, seed))
            prior = existing.get(spec.name)
            started = (d / "runs" / spec.name / "started.json").exists()
            same_compute = (prior or {}).get("fit_settings", {}).get("compute", "total") == suite.fit.compute
            # RunSpec equality leaves out tracking (where metrics are also sent): not what is predicted.
            same_spec = prior is not None and type(spec).from_dict(prior["run_spec"]) == spec
            if prior and (prior["runs_table_sha256"] == sha and same_spec and same_compute or started):
                entry = prior  # already registered (or already running under an earlier forecast)
            else:
                fc = make_forecast(spec, fit["law"], metric=suite.fit.metric, largest_fit_budget=fit["largest_budget"],
                                   compute=suite.fit.compute)
                entry = register(ledger, fc, spec, runs_table_sha256=sha, fit_settings=fit["settings"],
                                 suite=suite.name, health=fit["record"].get("health"))
                f = entry["forecast"]
                _say(progress, f"[bold]registered[/] {spec.name}: {f['metric']} {f['loss']:.4f} "
                               f"[{f['ci_low']:.4f}, {f['ci_high']:.4f}] at {f['flops']:.2e} FLOPs "
                               f"({f['extrapolation']:.0f}× the largest fitted budget), entry {entry['hash'][:12]}")
            specs.append(type(spec).from_dict({**entry["run_spec"],
                                               "tags": {**entry["run_spec"]["tags"], "ledger_entry": entry["hash"]}}))
    return specs


def data_repeat_notes(specs, prepared) -> list[str]:
    """One line per run that will read more tokens than the mixture yields before a domain
    repeats (its loss then includes a second epoch over part of the data, which a law fitted on
    single-epoch runs does not model), naming the domain that runs out first."""
    limit, first = prepared.tokens_before_repeat(), prepared.first_to_repeat()
    out = []
    for spec in specs:
        if spec.tokens > limit:
            out.append(f"{spec.name} reads {spec.tokens / 1e6:.1f}M tokens, more than the {limit / 1e6:.1f}M "
                       f"the mixture yields before domain {first!r} repeats: part of it trains on repeated data "
                       f"(a larger corpus in [data] mixture avoids it)")
    return out


def downstream_stage(suite: SuiteSpec, d: Path, table, progress: bool):
    """Evaluate the IsoFLOP winners and held-out runs on the suite's tasks, merge the metrics
    into runs.csv, and (with a pool) forecast accuracy at the held-out compute (downstream.json,
    downstream.png). Each run's results are kept in runs/<name>/eval/, so a re-run evaluates
    only what is new."""
    from delphi.downstream import forecast_downstream
    from delphi.eval import evaluate_tasks, load_results, merge_into_runs_table, open_model, save_results

    done = table[table["status"] == "completed"]
    grid = done[done["role"] == "grid"]
    winners = grid.loc[grid.groupby("budget")["loss"].idxmin()]
    names = list(winners["name"]) + list(done[done["role"] == "heldout"]["name"])
    results = []
    for name in names:
        run_dir = d / "runs" / name
        out = run_dir / "eval"
        if not out.exists():
            _say(progress, f"[bold]eval[/] {name}: {', '.join(suite.eval.downstream)}")
            scorer, _ = open_model(run_dir)
            save_results(evaluate_tasks(scorer, list(suite.eval.downstream), limit=suite.eval.limit,
                                        progress=progress), out)
        results.extend(load_results(out))
    table = merge_into_runs_table(table, results)
    write_table(table, d / "runs.csv")
    if suite.eval.pool:
        targets = [float(x) for x in done[done["role"] == "heldout"]["flops"]] or \
                  [10 * max(suite.grid.budgets)]
        fc = forecast_downstream(table[table["role"] == "grid"], suite.eval.pool, soft=suite.eval.soft,
                                 target_flops=targets, floor=suite.eval.floor, bootstrap=suite.fit.bootstrap,
                                 seed=suite.fit.seed)
        fc.save(d / "downstream.json")
        fc.plot(d / "downstream.png")
    return table
