"""Read everything a report needs from a suite directory, tolerating what is not there yet.

The report reads only files (never re-runs anything), so it can be rebuilt at any point of a
suite's life: before the fit, before the held-out run, after a run failed. Every missing or
unreadable piece becomes a `notes` line that the report shows, instead of an exception.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError


@dataclass
class RunData:
    """One run directory: its spec (run.json), summary and metrics lines, each possibly absent."""

    name: str
    path: Path
    spec: Any = None  # delphi.config.RunSpec | None
    spec_dict: dict | None = None
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)


@dataclass
class Suite:
    path: Path
    name: str
    spec: dict | None  # parsed suite.toml
    spec_text: str | None
    table: Any  # pandas.DataFrame (possibly empty)
    fit: dict | None
    ledger: list[dict]
    check: Any  # delphi.forecast.check.CheckResult | None
    downstream: dict | None
    runs: dict[str, RunData]
    notes: list[str] = field(default_factory=list)

    # ---- convenient views --------------------------------------------------------------------
    def rows(self, role: str | None = None, ok_only: bool = False) -> Any:
        t = self.table
        if t is None or t.empty:
            return t
        if role is not None and "role" in t:
            t = t[t["role"] == role]
        if ok_only:
            t = t[ok_mask(t)]
        return t

    @property
    def check_results(self) -> list:  # list[delphi.forecast.check.CheckRow]
        return [] if self.check is None else list(self.check.results)


def ok_mask(table) -> Any:
    """Rows that count: status completed (or no status column) and a finite loss."""
    import numpy as np

    ok = np.ones(len(table), dtype=bool)
    if "status" in table:
        status = table["status"].fillna("completed").astype(str).str.lower()
        ok &= (status == "completed").to_numpy()
    if "loss" in table:
        loss = np.asarray(table["loss"], dtype=float)
        ok &= np.isfinite(loss)
    return ok


def _read_json(path: Path, what: str, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        notes.append(f"{what} ({path.name}) could not be read: {e}")
    except json.JSONDecodeError as e:
        notes.append(f"{what} ({path.name}) is not valid JSON ({e}); it was ignored")
    return None


def _read_jsonl(path: Path, what: str, notes: list[str]) -> list[dict]:
    out, bad = [], 0
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        notes.append(f"{what} ({path}) could not be read: {e}")
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write leaves a torn last line; the rest is still good.
            bad += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
    if bad:
        notes.append(f"{what} ({path.parent.name}/{path.name}): {bad} unreadable line(s) skipped")
    return out


def _table_from_summaries(runs: dict[str, RunData]):
    """The runs table rebuilt from summary.json files (`summary_row`, as `collect` builds
    runs.csv) when runs.csv is missing."""
    import pandas as pd

    from delphi.fit.runs_table import summary_row

    rows = [summary_row(r.summary, r.spec_dict if isinstance(r.spec_dict, dict) else None, name=r.name)
            for r in runs.values() if r.summary]
    return pd.DataFrame(rows)


def read_suite_dir(suite_dir: str | Path) -> Suite:
    """Load a suite directory. Raises DelphiError only when it is not a suite directory at all:
    a missing or unreadable part is left out with a note, and the report shows what exists."""
    path = Path(suite_dir)
    if not path.is_dir():
        raise DelphiError(f"suite directory {str(path)!r} does not exist (give the directory `delphi run` wrote)")
    markers = ("suite.toml", "runs.csv", "runs", "fit.json", "ledger.jsonl")
    if not any((path / m).exists() for m in markers):
        raise DelphiError(f"{str(path)!r} is not a suite directory: it has none of {', '.join(markers)}")
    notes: list[str] = []
    spec, spec_text, name = _read_spec(path, notes)
    runs = _read_runs(path / "runs", notes)
    table = _read_table(path / "runs.csv", runs, notes)

    fit = None
    if (path / "fit.json").is_file():
        fit = _read_json(path / "fit.json", "fit", notes)
        if fit is not None and not isinstance(fit, dict):
            notes.append("fit.json is not a JSON object; it was ignored")
            fit = None
    else:
        notes.append("fit.json is missing: the IsoFLOP fit has not run yet; fit curves are computed from runs.csv "
                     "where possible")

    ledger = _read_jsonl(path / "ledger.jsonl", "ledger", notes) if (path / "ledger.jsonl").is_file() else []
    if not ledger:
        notes.append("no ledger entries: no forecast has been registered yet")
    check = _read_check(path / "check.json", notes)
    downstream = None
    if (path / "downstream.json").is_file():
        downstream = _read_json(path / "downstream.json", "downstream forecast", notes)

    return Suite(path=path, name=name, spec=spec, spec_text=spec_text, table=table, fit=fit, ledger=ledger,
                 check=check, downstream=downstream, runs=runs, notes=notes)


def _read_spec(path: Path, notes: list[str]) -> tuple[dict | None, str | None, str]:
    """suite.toml parsed and as text, and the suite's name (its [suite] name, else the directory's)."""
    spec, spec_text = None, None
    if (path / "suite.toml").is_file():
        spec_text = (path / "suite.toml").read_text(errors="replace")
        try:
            spec = tomllib.loads(spec_text)
        except Exception as e:  # noqa: BLE001 — a malformed spec must not stop the report
            notes.append(f"suite.toml could not be parsed ({e}); shown as text only")
    else:
        notes.append("suite.toml is missing: the suite's settings are not shown")
    name = path.resolve().name
    section = spec.get("suite") if isinstance(spec, dict) else None
    if isinstance(section, dict) and section.get("name"):
        name = str(section["name"])
    return spec, spec_text, name


def _read_runs(runs_dir: Path, notes: list[str]) -> dict[str, RunData]:
    """Every directory under runs/ (finished or not) with what it holds."""
    runs: dict[str, RunData] = {}
    if not runs_dir.is_dir():
        return runs
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        r = RunData(name=d.name, path=d)
        if (d / "run.json").is_file():
            r.spec_dict = _read_json(d / "run.json", f"run {d.name}: run.json", notes)
            if isinstance(r.spec_dict, dict):
                from delphi.config import RunSpec

                try:
                    r.spec = RunSpec.from_dict(r.spec_dict)
                except DelphiError as e:
                    notes.append(f"run {d.name}: run.json does not describe a RunSpec ({e})")
        if (d / "summary.json").is_file():
            s = _read_json(d / "summary.json", f"run {d.name}: summary.json", notes)
            r.summary = s if isinstance(s, dict) else None
        if (d / "metrics.jsonl").is_file():
            r.metrics = _read_jsonl(d / "metrics.jsonl", f"run {d.name}: metrics", notes)
        runs[d.name] = r
    return runs


def _read_table(csv: Path, runs: dict[str, RunData], notes: list[str]):
    """runs.csv (rebuilt from the runs' summaries when it is missing), with a name and a role for
    every row and numeric columns as numbers."""
    import pandas as pd

    table = None
    if csv.is_file():
        try:
            table = pd.read_csv(csv)
        except Exception as e:  # noqa: BLE001 — pandas raises many types for a bad CSV
            notes.append(f"runs.csv could not be read ({e})")
    if table is None:
        table = _table_from_summaries(runs)
        if not table.empty:
            notes.append("runs.csv is missing: the runs table was rebuilt from the runs' summary.json files")
        else:
            notes.append("no runs table yet (runs.csv missing and no run has a summary.json): nothing has finished")
    if not table.empty:
        if "name" not in table:
            notes.append("runs.csv has no `name` column; run names are shown as row numbers")
            table["name"] = [f"row{i}" for i in range(len(table))]
        if "role" not in table:
            table["role"] = "grid"
        table["role"] = table["role"].fillna("grid").astype(str)
        for col in ("budget", "flops", "params", "tokens", "loss"):
            if col in table:
                table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def _read_check(path: Path, notes: list[str]):
    """check.json as a CheckResult, or None (with a note) when it is missing or not one."""
    check = None
    if path.is_file():
        raw = _read_json(path, "check", notes)
        if raw is not None:
            from delphi.forecast.check import CheckResult

            try:
                check = CheckResult.from_dict(raw)
            except DelphiError as e:
                notes.append(f"{e}; it was ignored")
    if check is None:
        notes.append("check.json is missing: no held-out run has been scored against its forecast yet "
                     "(run `delphi check SUITE_DIR`)")
    return check


__all__ = ["RunData", "Suite", "read_suite_dir", "ok_mask"]
