"""Run tasks against a backend; write, read, tabulate and merge results.

Results are one JSON file per model and task (`<out>/<task_key>.json`):
`{"model", "task", "dataset", "kind", "num_fewshot", "n", "metrics": {...}, "groups": {...},
"data": "subset"|<dir>, "code_version"}`. `merge_into_runs_table` adds them to a runs table as
columns `<task_key>/<metric>` (e.g. `mmlu_sl_verb_5shot/choice_logprob`), keyed by run name, so
soft metrics can be fitted against compute like the loss.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from delphi.errors import DelphiError
from delphi.eval.scoring import aggregate, doc_metrics
from delphi.eval.sources import load_records
from delphi.eval.tasks import Task, parse_tasks
from delphi.files import atomic_write_text


@dataclass(frozen=True)
class TaskResult:
    model: str
    task: str  # task key, e.g. "arc_easy_0shot"
    dataset: str
    kind: str
    num_fewshot: int
    n: int
    metrics: dict[str, float]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    data: str = "subset"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def evaluate_tasks(scorer, tasks: str | list[str] | list[Task], *, data_dir: str | Path | None = None,
                   limit: int | None = None, progress: bool = True) -> list[TaskResult]:
    """Score `tasks` (names, presets, or `Task`s) with a backend from `delphi.eval.backends`."""
    if isinstance(tasks, (str,)) or (isinstance(tasks, list) and tasks and isinstance(tasks[0], str)):
        tasks = parse_tasks(tasks)  # type: ignore[arg-type]
    out = []
    for task in tasks:  # type: ignore[union-attr]
        t0 = time.perf_counter()
        docs = task.docs(load_records(task.defn.dataset, data_dir))
        if limit is not None:
            docs = docs[:limit]
        if not docs:
            raise DelphiError(f"task {task.key}: no documents to score")
        flat = [req for d in docs for req in d.requests]
        scores = scorer.loglikelihood(flat, progress=progress, description=f"{scorer.name} {task.key}")
        per_doc, i = [], 0
        for d in docs:
            per_doc.append(doc_metrics(d, scores[i:i + len(d.requests)], task.defn.kind, task.defn.greedy_acc))
            i += len(d.requests)
        metrics, groups = aggregate(docs, per_doc)
        out.append(TaskResult(model=scorer.name, task=task.key, dataset=task.defn.dataset, kind=task.defn.kind,
                              num_fewshot=task.num_fewshot, n=len(docs), metrics=metrics, groups=groups,
                              data=str(data_dir) if data_dir else "subset",
                              seconds=round(time.perf_counter() - t0, 3)))
    return out


def save_results(results: Iterable[TaskResult], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        paths.append(atomic_write_text(out_dir / f"{r.task}.json", json.dumps(r.to_dict(), indent=2, sort_keys=True)))
    return paths


def load_results(path: str | Path) -> list[TaskResult]:
    """Every result JSON under `path` (a file or a directory, searched recursively)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.json"))
    out = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DelphiError(f"cannot read eval result {f}: {e}") from None
        if isinstance(d, dict) and {"model", "task", "metrics"} <= set(d):
            out.append(TaskResult.from_dict(d))
    return out


def results_table(results: Iterable[TaskResult], metrics: tuple[str, ...] | None = None):
    """Long table: one row per (model, task) with the metric columns."""
    import pandas as pd

    rows = []
    for r in results:
        row = {"model": r.model, "task": r.task, "n": r.n}
        row.update({k: v for k, v in r.metrics.items() if not k.endswith("_stderr")
                    and (metrics is None or k in metrics)})
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(results: Iterable[TaskResult]) -> str:
    """Plain-text table for the terminal (model, task, n and the main metrics)."""
    cols = ("acc", "acc_norm", "bpb", "nll", "logprob", "choice_logprob", "choice_prob_norm")
    rows = [["model", "task", "n", *cols]]
    for r in results:
        rows.append([r.model, r.task, str(r.n)] +
                    [f"{r.metrics[c]:.4f}" if c in r.metrics else "-" for c in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def wide_results(results: Iterable[TaskResult]):
    """One row per model, columns `<task>/<metric>` (the runs-table convention)."""
    import pandas as pd

    by_model: dict[str, dict[str, float]] = {}
    for r in results:
        row = by_model.setdefault(r.model, {})
        for k, v in r.metrics.items():
            if not k.endswith("_stderr"):
                row[f"{r.task}/{k}"] = v
    return pd.DataFrame.from_dict(by_model, orient="index").rename_axis("name").reset_index()


def merge_into_runs_table(runs, results: Iterable[TaskResult] | str | Path, *, key: str = "name"):
    """Runs table (DataFrame keyed by run name) + eval results → the table with
    `<task>/<metric>` columns added (NaN for runs not evaluated). Existing columns of the same
    name are replaced by the new values where present."""
    if isinstance(results, (str, Path)):
        results = load_results(results)
    if key not in runs.columns:
        raise DelphiError(f"runs table has no {key!r} column to match eval results on")
    wide = wide_results(results)
    if wide.empty:
        return runs.copy()
    unknown = sorted(set(wide["name"]) - set(runs[key].astype(str)))
    if unknown and len(unknown) == len(wide):
        raise DelphiError(f"no eval result matches a run in the table (results for {', '.join(unknown[:5])}); "
                          f"results are keyed by model name = run name")
    wide = wide.rename(columns={"name": key})
    merged = runs.drop(columns=[c for c in wide.columns if c != key and c in runs.columns]).merge(
        wide, on=key, how="left")
    for c in wide.columns:
        if c != key and c in runs.columns:
            merged[c] = merged[c].fillna(runs.set_index(key)[c].reindex(merged[key]).to_numpy())
    return merged
