"""The run's metrics logger: every row goes to `metrics.jsonl` (always) and to the trackers the
RunSpec names (`delphi.train.tracking`: TensorBoard, W&B). Rank 0 writes; other ranks log nothing.

Rows: `{"kind": "train", step, lr, lr_factor, loss, grad_norm {group: norm}, tokens, tokens_per_s,
elapsed_s, flops}` and `{"kind": "eval", step, macro_loss, macro_bpb, micro_loss, micro_bpb,
domains {name: {loss, bpb, tokens, bytes}}}`. On resume the rows logged after the checkpoint are
dropped first (they are logged again), so the file ends as an uninterrupted run's would.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

from delphi.files import atomic_write_text
from delphi.train import tracking
from delphi.train.rundir import METRICS
from delphi.train.state import rng_state, set_rng_state


class MetricsLogger:
    def __init__(self, out: Path, spec, *, enabled: bool):
        self.path = Path(out) / METRICS
        self.out, self.spec, self.enabled = Path(out), spec, enabled
        self.trackers: list = []

    def start(self, step: int, run_id: str) -> None:
        """Training starts (`step` 0) or resumes after `step`: drop later rows, open the trackers."""
        if not self.enabled:
            return
        self._truncate(step)
        saved = rng_state()  # opening a tracker must leave the run's random streams as they were
        try:
            self.trackers = tracking.open_trackers(self.spec, self.out, step, run_id)
        finally:
            set_rng_state(saved)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if self.trackers:
            values = tracking.scalars(row)
            for t in self.trackers:
                t.log(row["step"], values)

    def rows(self) -> list[dict]:
        """Every readable row of metrics.jsonl (a line cut by a kill is skipped)."""
        out = []
        with contextlib.suppress(OSError):
            for line in self.path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict):
                        out.append(row)
        return out

    def last_train_loss(self) -> float | None:
        train = [r for r in self.rows() if r.get("kind") == "train"]
        return train[-1]["loss"] if train else None

    def close(self, summary: dict | None = None) -> None:
        """Hand the summary to the trackers and close them (once; errors in one do not stop the rest)."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            try:
                t.close(summary)
            except Exception as e:  # noqa: BLE001 — the run's own files are written; say what was lost
                warnings.warn(f"run {self.spec.name}: closing {type(t).__name__} failed ({type(e).__name__}: {e})",
                              RuntimeWarning, stacklevel=2)

    def _truncate(self, last_step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(row, dict) and isinstance(row.get("step", 0), int) and row.get("step", 0) <= last_step:
                keep.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))
