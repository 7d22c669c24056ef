"""collect: the runs' summary.json files → one runs table (`runs.csv`), one row per run.

A row is `delphi.fit.runs_table.summary_row` of the run's summary.json and run.json; the columns
are `RUN_COLUMNS` and `SHAPE_COLUMNS` in that order, then the per-domain and merged-in columns."""

from __future__ import annotations

import json
from pathlib import Path

from delphi.files import atomic_write_text
from delphi.fit.runs_table import RUN_COLUMNS, SHAPE_COLUMNS, summary_row

BASE_COLUMNS = RUN_COLUMNS  # the name collect's callers know


def collect(runs_dir: str | Path):
    """A DataFrame of every run under `runs_dir` that has a summary (sorted by role, budget, params)."""
    import pandas as pd

    rows = []
    for path in sorted(Path(runs_dir).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a summary being written right now; the next collect sees it
        if not isinstance(summary, dict):
            continue
        try:
            run_json = json.loads((path.parent / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            run_json = None  # no run.json (a copied summary): the shape columns stay empty
        rows.append(summary_row(summary, run_json, name=path.parent.name))
    df = pd.DataFrame(rows, columns=None)
    if df.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    known = RUN_COLUMNS + SHAPE_COLUMNS
    extra = sorted(c for c in df.columns if c not in known)
    df = df[[c for c in known if c in df.columns] + extra]
    return df.sort_values(["role", "budget", "params"], kind="stable").reset_index(drop=True)


def write_table(df, path: str | Path) -> Path:
    """Write the runs table as CSV (10 significant digits), atomically."""
    return atomic_write_text(path, df.to_csv(index=False, float_format="%.10g"))
