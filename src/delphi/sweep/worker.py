"""Runs in their own process: `python -m delphi.sweep.worker RUN_DIR` trains one run;
`python -m delphi.sweep.worker --serve` trains the run directories it reads from stdin, one per
line, one after another, and answers each with a JSON line on stdout.

Both executors start runs through this entry point, so they produce identical run directories.
The local executor keeps `--serve` workers alive across a sweep: a grid of small models spends
more time importing torch, transformers and the compiler stack (~3–6 s per process on 2 cores)
and converting the tokenizer for the HF export than training, and a long-lived worker pays that
once. A run's result does not depend on which process trained it: the trainer seeds every random
stream from the RunSpec (tested: local `--serve` and per-run Ray processes write identical runs).

The process dies with its parent (PR_SET_PDEATHSIG, set by the executor), so a killed sweep never
leaves an orphan writing into a run directory that a re-run resumes.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def train_one(run_dir: Path) -> tuple[int, dict]:
    """(exit code, {"status", "reason"}): 0 when the trainer wrote a summary (completed, diverged or
    failed), 2 for a user error (bad spec) with the message as the reason."""
    from delphi.config import RunSpec
    from delphi.errors import DelphiError
    from delphi.train import train_run

    try:
        spec = RunSpec.from_json((run_dir / "run.json").read_text())
        summary = train_run(spec, run_dir, progress=False, resume=True)
    except DelphiError as e:
        print(f"delphi worker: error: {e}", file=sys.stderr)
        return 2, {"status": "failed", "reason": str(e)}
    return 0, {"status": summary.get("status"), "reason": summary.get("reason")}


def serve(stdin=None) -> int:
    """Train each run directory named on stdin. Each run's output (warnings, errors) goes to its
    own `worker.log`, as with one process per run; stdout carries only the JSON answers. An
    unexpected error fails that run (the trainer has recorded it) and the worker goes on."""
    stdin = stdin or sys.stdin
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    for line in stdin:
        if not line.strip():
            continue
        run_dir = Path(line.strip())
        sys.stdout.flush()
        sys.stderr.flush()
        with open(run_dir / "worker.log", "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        try:
            rc, result = train_one(run_dir)
        except Exception as e:  # noqa: BLE001 — one broken run must not end the sweep
            traceback.print_exc()
            rc, result = 1, {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps({"run_dir": str(run_dir), "rc": rc, **result}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        return serve()
    if len(argv) != 1:
        print("usage: python -m delphi.sweep.worker RUN_DIR | --serve", file=sys.stderr)
        return 2
    rc, result = train_one(Path(argv[0]))
    if rc == 0:
        print(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
