"""collect: the runs' summary.json files → one runs table (`runs.csv`), one row per run."""

from __future__ import annotations

import json
from pathlib import Path

from delphi.fit.runs_table import SHAPE_COLUMNS, shape_row

BASE_COLUMNS = ["name", "role", "status", "reason", "budget", "flops", "params", "tokens", "hidden_size",
                "num_layers", "batch_size", "train_steps", "learning_rate", "seed", "loss", "bpb",
                "final_train_loss", "wall_time_s", "tokens_per_s"]


def summary_row(summary: dict) -> dict:
    row = {k: summary.get(k) for k in BASE_COLUMNS}
    row["role"] = (summary.get("tags") or {}).get("role", "grid")
    for domain, vals in ((summary.get("eval") or {}).get("domains") or {}).items():
        row[f"loss/{domain}"] = vals.get("loss")
        row[f"bpb/{domain}"] = vals.get("bpb")
    return row


def collect(runs_dir: str | Path):
    """A DataFrame of every run under `runs_dir` that has a summary (sorted by role, budget, params)."""
    import pandas as pd

    rows = []
    for path in sorted(Path(runs_dir).glob("*/summary.json")):
        try:
            row = summary_row(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a summary being written right now; the next collect sees it
        try:
            row.update(shape_row(json.loads((path.parent / "run.json").read_text())))
        except (OSError, json.JSONDecodeError):
            pass  # no run.json (a copied summary): the shape columns stay empty
        rows.append(row)
    df = pd.DataFrame(rows, columns=None)
    if df.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    known = BASE_COLUMNS + SHAPE_COLUMNS
    extra = sorted(c for c in df.columns if c not in known)
    df = df[[c for c in known if c in df.columns] + extra]
    return df.sort_values(["role", "budget", "params"], kind="stable").reset_index(drop=True)


def write_table(df, path: str | Path) -> Path:
    import os

    path = Path(path)
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False, float_format="%.10g")
    os.replace(tmp, path)
    return path
