"""Training one run: `train_run(spec, out_dir)` turns a RunSpec into a run directory.

Run directory: run.json, metrics.jsonl, checkpoints/, hf/, summary.json (see docs/train.md).
"""

from __future__ import annotations

__all__ = ["train_run"]


def train_run(spec, out_dir, *, progress: bool = True, resume: bool = True) -> dict:
    """Train `spec` into `out_dir` (resuming from its newest valid checkpoint); return the summary."""
    from delphi.train.trainer import train_run as _train_run

    return _train_run(spec, out_dir, progress=progress, resume=resume)
