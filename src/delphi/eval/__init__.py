"""Downstream evaluation: multiple choice, Winograd-style partial scoring, LAMBADA and GSM8K
reference likelihoods, scored for Delphi runs and any local Hugging Face causal LM.

    from delphi.eval import open_model, evaluate_tasks, save_results
    scorer, info = open_model("runs/d512-L8")          # a run dir (uses its hf/ export) or HF dir
    results = evaluate_tasks(scorer, "mmlu_sl_verb:5,gsm8k:5")
    save_results(results, info["results_dir"])

Importing this package does not import torch; the backends do, when a model is opened.
"""

from __future__ import annotations

import json
from pathlib import Path

from delphi.errors import DelphiError
from delphi.eval.runner import (TaskResult, evaluate_tasks, format_table, load_results, merge_into_runs_table,
                                results_table, save_results, wide_results)
from delphi.eval.scoring import HIGHER_IS_BETTER
from delphi.eval.tasks import PRESETS, TASKS, Task, parse_tasks

__all__ = ["open_model", "evaluate_tasks", "save_results", "load_results", "results_table", "format_table",
           "wide_results", "merge_into_runs_table", "TaskResult", "Task", "TASKS", "PRESETS",
           "parse_tasks", "HIGHER_IS_BETTER", "hf_backend", "model_backend"]


def hf_backend(*args, **kwargs):
    from delphi.eval.backends import hf_backend as f

    return f(*args, **kwargs)


def model_backend(*args, **kwargs):
    from delphi.eval.backends import model_backend as f

    return f(*args, **kwargs)


def open_model(path: str | Path, *, device: str | None = None, dtype: str = "auto", batch_size: int = 16,
               name: str | None = None):
    """A scorer for a Delphi run directory (its `hf/` export; named by the run) or a local HF
    model directory (named by the directory). Returns (scorer, info) where info has `name`,
    `kind` ("run" | "hf") and `results_dir` (default place for result JSON)."""
    path = Path(path)
    if not path.exists():
        raise DelphiError(f"model path {path} does not exist; give a run directory or a Hugging Face model directory")
    if (path / "hf" / "config.json").exists():
        run_name = path.name
        for meta in ("summary.json", "run.json"):
            try:
                run_name = json.loads((path / meta).read_text()).get("name") or run_name
                break
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
        name = name or run_name
        scorer = hf_backend(path / "hf", device=device, dtype=dtype, batch_size=batch_size, name=name)
        return scorer, {"name": name, "kind": "run", "results_dir": str(path / "eval")}
    if (path / "config.json").exists():
        name = name or path.name
        scorer = hf_backend(path, device=device, dtype=dtype, batch_size=batch_size, name=name)
        return scorer, {"name": name, "kind": "hf", "results_dir": str(Path("eval-results") / name)}
    if (path / "run.json").exists():
        raise DelphiError(f"run {path} has no hf/ export yet (train it to completion first)")
    raise DelphiError(f"{path} is neither a run directory (with hf/) nor a Hugging Face model directory (config.json)")
