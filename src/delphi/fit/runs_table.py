"""Load a runs table: CSV, Parquet, JSON Lines, or a suite directory of `summary.json` files.

Every source becomes one pandas DataFrame, one row per run, with (at least) the numeric columns
the fits need — `flops`, `params`, `tokens`, and the metric (default `loss`, the macro validation
loss) — plus `budget`, `status`, `name` when present, and `source` (where the row came from, used
in error messages). Nested summaries are flattened: `eval.domains.<d>.loss` -> `loss/<d>`,
`.bpb` -> `bpb/<d>`, other `eval.*` keys -> `eval/<key>`, `epochs.<d>` -> `epochs/<d>`,
`tags.<k>` -> `tags/<k>`.

Rows whose status is not "completed" (diverged, failed, ...) are dropped; the counts per status
are in `df.attrs["excluded"]`. A needed column that is missing, a non-numeric or non-finite
value, or a non-positive size or metric raises `DelphiError` naming the row(s) and the column.

Repeated runs (the same run name twice, or the same sizes and metric value to the last digit: a
copied row) are removed, one row kept, and listed in `df.attrs["duplicates"]` (a fit records
them as the flag `duplicate_runs`); two rows of one run name that disagree are refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from delphi.errors import DelphiError

SIZE_COLUMNS = ("flops", "params", "tokens")
KEPT_STATUSES = ("completed", "")


def flatten_summary(d: dict) -> dict:
    """One run's summary.json (or any nested record) -> a flat row."""
    row: dict = {}
    for k, v in d.items():
        if k == "eval" and isinstance(v, dict):
            for ek, ev in v.items():
                if ek == "domains" and isinstance(ev, dict):
                    for dom, dv in ev.items():
                        if isinstance(dv, dict):
                            for mk in ("loss", "bpb"):
                                if mk in dv:
                                    row[f"{mk}/{dom}"] = dv[mk]
                elif not isinstance(ev, (dict, list)):
                    row[f"eval/{ek}"] = ev
        elif isinstance(v, dict):
            for sk, sv in _flat_items(v, k):
                row[sk] = sv
        elif isinstance(v, list):
            row[k] = json.dumps(v)
        else:
            row[k] = v
    return row


def _flat_items(d: dict, prefix: str):
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            yield from _flat_items(v, key)
        else:
            yield key, v


# The rest of each run's shape (from its run.json; summary.json has hidden_size and num_layers): the
# compute definitions other than total FLOPs (`delphi.fit.compute`) need vocabulary and sequence length.
SHAPE_COLUMNS = ["vocab_size", "seq_len", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                 "tie_embeddings"]


def shape_row(run_json) -> dict:
    """The SHAPE_COLUMNS of a parsed run.json ({} when it has no shape)."""
    shape = run_json.get("shape") if isinstance(run_json, dict) else None
    return {k: shape[k] for k in SHAPE_COLUMNS if k in shape} if isinstance(shape, dict) else {}


# The columns of a suite's runs table (runs.csv), in order; then SHAPE_COLUMNS, then one
# `loss/<domain>` and `bpb/<domain>` per validation domain and any columns merged in later
# (downstream metrics). docs/artefacts.md describes each.
RUN_COLUMNS = ["name", "role", "status", "reason", "budget", "flops", "params", "tokens", "hidden_size",
               "num_layers", "batch_size", "train_steps", "learning_rate", "seed", "loss", "bpb",
               "final_train_loss", "wall_time_s", "tokens_per_s"]


def summary_row(summary: dict, run_json: dict | None = None, *, name: str | None = None) -> dict:
    """One run's runs-table row: RUN_COLUMNS from its summary.json (`role` from its tags, "grid"
    when untagged; `name` when the summary has none), `loss/<d>` and `bpb/<d>` per validation
    domain, and SHAPE_COLUMNS from its run.json when given."""
    row = {k: summary.get(k) for k in RUN_COLUMNS}
    row["name"] = row["name"] or name
    tags = summary.get("tags")
    row["role"] = tags.get("role", "grid") if isinstance(tags, dict) else "grid"
    ev = summary.get("eval")
    domains = ev.get("domains") if isinstance(ev, dict) else None
    for domain, vals in (domains.items() if isinstance(domains, dict) else ()):
        if isinstance(vals, dict):
            row[f"loss/{domain}"] = vals.get("loss")
            row[f"bpb/{domain}"] = vals.get("bpb")
    if run_json is not None:
        row.update(shape_row(run_json))
    return row


def _run_shape(path: Path) -> dict:
    """`shape_row` of the run.json at `path`; {} when there is none or it is unreadable."""
    try:
        return shape_row(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _read_json_file(p: Path, what: str):
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DelphiError(f"{what}: cannot read {p}: {e}") from None
    except json.JSONDecodeError as e:
        raise DelphiError(f"{what}: {p} is not valid JSON ({e})") from None


def read_table(path) -> "pandas.DataFrame":  # noqa: F821
    """Read any supported source into a DataFrame with a `source` column (no validation)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DelphiError(f"runs table: {p} does not exist")
    if p.is_dir():
        files = sorted(p.rglob("summary.json"))
        if not files:
            raise DelphiError(f"runs table: no summary.json under {p} (is it a suite directory?)")
        rows = []
        for f in files:
            d = _read_json_file(f, "runs table")
            if not isinstance(d, dict):
                raise DelphiError(f"runs table: {f} must hold a JSON object, not {type(d).__name__}")
            row = flatten_summary(d)
            row.update({k: v for k, v in _run_shape(f.parent / "run.json").items() if k not in row})
            row["source"] = str(f.relative_to(p))
            rows.append(row)
        return pd.DataFrame(rows)
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() in (".gz", ".zst") else p.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz", ".tsv"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
            df["source"] = [f"row {i + 1} (line {i + 2})" for i in range(len(df))]
            return df
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
            df["source"] = [f"row {i + 1}" for i in range(len(df))]
            return df
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DelphiError(f"runs table: cannot read {p}: {str(e).splitlines()[0]}") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = []
        text = p.read_text()
        whole = None
        if suffix == ".json":
            try:
                whole = json.loads(text)
            except json.JSONDecodeError:
                whole = None  # maybe JSON Lines with a .json name
        if isinstance(whole, dict):
            raise DelphiError(f"runs table: {p} holds one JSON object; expected an array of runs or JSON Lines "
                              "(one run per line)")
        if isinstance(whole, list):
            numbered = [(i + 1, r, f"item {i + 1}") for i, r in enumerate(whole)]
        else:
            numbered = []
            for i, line in enumerate(text.splitlines()):
                if not line.strip():
                    continue
                try:
                    numbered.append((i + 1, json.loads(line), f"line {i + 1}"))
                except json.JSONDecodeError as e:
                    raise DelphiError(f"runs table: {p}: line {i + 1} is not valid JSON ({e})") from None
        for _, rec, src in numbered:
            if not isinstance(rec, dict):
                raise DelphiError(f"runs table: {p}: {src} must be a JSON object, not {type(rec).__name__}")
            row = flatten_summary(rec)
            row["source"] = src
            rows.append(row)
        if not rows:
            raise DelphiError(f"runs table: {p} has no rows")
        return pd.DataFrame(rows)
    raise DelphiError(f"runs table: unsupported file type {p.suffix!r} for {p}; "
                      "use .csv, .parquet, .jsonl, or a suite directory of summary.json files")


def load_runs_table(path, metric: str = "loss", require: tuple[str, ...] = SIZE_COLUMNS) -> "pandas.DataFrame":  # noqa: F821
    """Load, drop non-completed runs, and validate the columns in `require` plus `metric`.

    `flops` falls back to the declared `budget` where the measured FLOPs are absent.
    """
    df = read_table(path)
    return validate_table(df, metric=metric, require=require, where=str(path))


def validate_table(df, *, metric: str = "loss", require: tuple[str, ...] = SIZE_COLUMNS, where: str = "runs table"):
    import numpy as np
    import pandas as pd

    df = df.copy()
    if "source" not in df.columns:
        df["source"] = [f"row {i + 1}" for i in range(len(df))]
    excluded: dict[str, int] = {}
    if "status" in df.columns:
        status = df["status"].fillna("").astype(str).str.strip().str.lower()
        drop = ~status.isin(KEPT_STATUSES)
        for s, n in status[drop].value_counts().items():
            excluded[s] = int(n)
        df = df[~drop].reset_index(drop=True)
    if len(df) == 0:
        raise DelphiError(f"{where}: no completed runs" + (f" (excluded: {_fmt_excluded(excluded)})" if excluded else ""))

    if "flops" in require:
        if "flops" not in df.columns and "budget" in df.columns:
            df["flops"] = df["budget"]
        elif "flops" in df.columns and "budget" in df.columns:
            f = pd.to_numeric(df["flops"], errors="coerce")
            df["flops"] = f.where(f.notna(), df["budget"])
    needed = list(dict.fromkeys([*require, metric]))
    missing = [c for c in needed if c not in df.columns]
    if missing:
        hint = ""
        if metric in missing:
            cands = [c for c in df.columns if c in ("loss", "bpb") or c.startswith(("loss/", "bpb/", "eval/"))]
            hint = f"; metric columns present: {', '.join(cands[:12])}" if cands else ""
        raise DelphiError(f"{where}: missing column(s) {', '.join(repr(c) for c in missing)}"
                          + (" (flops may be given as 'budget')" if "flops" in missing else "") + hint)
    for col in needed:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = ~np.isfinite(num.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            v = raw.iloc[i]
            v = v.item() if hasattr(v, "item") else v
            kind = "missing" if v is None or (isinstance(v, float) and math.isnan(v)) else \
                   "not a finite number" if isinstance(v, (int, float, np.number)) else "not a number"
            raise DelphiError(f"{where}: {df['source'].iloc[i]}{_name(df, i)}: column {col!r} is {kind} ({v!r})")
        df[col] = num.astype(float)
        if col in SIZE_COLUMNS or col == "budget":
            nonpos = np.flatnonzero(df[col].to_numpy() <= 0)
            if nonpos.size:
                i = int(nonpos[0])
                raise DelphiError(f"{where}: {df['source'].iloc[i]}{_name(df, i)}: column {col!r} must be positive, "
                                  f"got {float(df[col].iloc[i])!r}")
        elif col == metric:
            nonpos = np.flatnonzero(df[col].to_numpy() <= 0)
            if nonpos.size:
                raise DelphiError(f"{where}: {_rows(df, nonpos, col)}: {col!r} must be positive (a loss is > 0); "
                                  "correct those rows or drop them (for a metric that can be 0 or negative, fit "
                                  "a positive transform of it)")
    if "budget" in df.columns:
        df["budget"] = pd.to_numeric(df["budget"], errors="coerce")
    prior = list(df.attrs.get("duplicates") or [])  # removed by an earlier validation of this table
    df, duplicates = _drop_duplicates(df, metric, where)
    df.attrs["duplicates"] = prior + duplicates
    df.attrs["excluded"] = excluded
    df.attrs["metric"] = metric
    df.attrs["source"] = where
    return df


def _rows(df, idx, col: str, limit: int = 4) -> str:
    """'row 3 (line 4) (run a) = -1.0, row 7 (line 8) = 0.0 and 2 more' for the rows `idx`."""
    parts = [f"{df['source'].iloc[int(i)]}{_name(df, int(i))} = {float(df[col].iloc[int(i)])!r}" for i in idx[:limit]]
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(parts) + more


def _plain(v):
    """A numpy scalar as the Python value (so messages read 3.1, not np.float64(3.1))."""
    return v.item() if hasattr(v, "item") else v


def _dup_key(df, i: int, cols: list[str]) -> tuple:
    out = []
    for c in cols:
        v = df[c].iloc[i]
        try:
            v = float(v)
        except (TypeError, ValueError):
            pass
        out.append(None if isinstance(v, float) and math.isnan(v) else v)
    return tuple(out)


def _drop_duplicates(df, metric: str, where: str):
    """Remove repeated runs; -> (table, [{"kept", "dropped": [...], "name"}]).

    A run is repeated when two rows carry the same run name, or the same compute, size, tokens
    and metric value to the last digit (a copied row: two trainings never agree to 16 digits).
    Rows of one name that disagree in any of those values are refused: which one is the run is
    not for the fit to guess.
    """
    cols = [c for c in ("budget", "flops", "params", "tokens") if c in df.columns] + [metric]
    names = df["name"] if "name" in df.columns else None
    groups: dict[tuple, list[int]] = {}
    for i in range(len(df)):
        n = names.iloc[i] if names is not None else None
        n = n.strip() if isinstance(n, str) else ""
        if n:
            groups.setdefault(("name", n), []).append(i)
    for (_, n), idx in groups.items():
        keys = [_dup_key(df, i, cols) for i in idx]
        if len(set(keys)) > 1:
            a, b = idx[0], next(i for i, k in zip(idx, keys) if k != keys[0])
            diff = [c for c, x, y in zip(cols, keys[0], _dup_key(df, b, cols)) if x != y]
            vals = "; ".join(f"{c} {_plain(df[c].iloc[a])!r} vs {_plain(df[c].iloc[b])!r}" for c in diff[:3])
            raise DelphiError(f"{where}: run {n!r} appears in {df['source'].iloc[a]} and {df['source'].iloc[b]} "
                              f"with different values ({vals}); keep one row per run (remove the stale or "
                              "mixed-in copy)")
    drop: dict[int, int] = {}  # dropped row -> the row kept in its place
    for idx in groups.values():
        for i in idx[1:]:
            drop[i] = idx[0]
    seen: dict[tuple, int] = {}
    for i in range(len(df)):
        if i in drop:
            continue
        k = _dup_key(df, i, cols)
        if k in seen:
            drop[i] = seen[k]
        else:
            seen[k] = i
    if not drop:
        return df, []
    kept: dict[int, list[int]] = {}
    for i, j in sorted(drop.items()):
        kept.setdefault(j, []).append(i)
    dups = [{"kept": str(df["source"].iloc[j]), "dropped": [str(df["source"].iloc[i]) for i in idx],
             **({"name": str(names.iloc[j])} if names is not None and isinstance(names.iloc[j], str) else {})}
            for j, idx in sorted(kept.items())]
    attrs = dict(df.attrs)
    out = df.drop(index=df.index[sorted(drop)]).reset_index(drop=True)
    out.attrs.update(attrs)
    return out, dups


def duplicates_note(df) -> str:
    """'removed 3 repeated rows (row 36 repeats row 1, ...)' or '' (the note a fit records)."""
    dups = (getattr(df, "attrs", None) or {}).get("duplicates") or []
    n = sum(len(d["dropped"]) for d in dups)
    if not n:
        return ""
    pairs = [f"{s} repeats {d['kept']}" for d in dups for s in d["dropped"]]
    more = f", and {len(pairs) - 3} more" if len(pairs) > 3 else ""
    return (f"removed {n} repeated row{'s' if n != 1 else ''} (same run name, or the same sizes and "
            f"{df.attrs.get('metric', 'loss')} to the last digit): " + ", ".join(pairs[:3]) + more)


def duplicates_flag(df):
    """The `duplicate_runs` Flag (`delphi.fit.flags`) of a validated table, or None."""
    from delphi.fit.flags import DUPLICATE_RUNS, Flag

    note = duplicates_note(df)
    return Flag(DUPLICATE_RUNS, note, {"duplicates": list(df.attrs.get("duplicates") or [])}) if note else None


def _name(df, i: int) -> str:
    if "name" in df.columns and isinstance(df["name"].iloc[i], str) and df["name"].iloc[i]:
        return f" (run {df['name'].iloc[i]})"
    return ""


def _fmt_excluded(excluded: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(excluded.items()))


def excluded_note(df) -> str:
    """'excluded 2 runs: 1 diverged, 1 failed' or '' (for the CLI)."""
    ex = df.attrs.get("excluded") or {}
    total = sum(ex.values())
    return f"excluded {total} run{'s' if total != 1 else ''}: {_fmt_excluded(ex)}" if total else ""
