"""One run in its own process: `python -m delphi.sweep.worker RUN_DIR`.

Both executors (local and Ray) start runs through this entry point, so they produce identical
run directories. The process dies with its parent (PR_SET_PDEATHSIG), so a killed sweep never
leaves an orphan writing into a run directory that a re-run resumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m delphi.sweep.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    from delphi.config import RunSpec
    from delphi.errors import DelphiError
    from delphi.train import train_run

    try:
        spec = RunSpec.from_json((run_dir / "run.json").read_text())
        summary = train_run(spec, run_dir, progress=False, resume=True)
    except DelphiError as e:
        print(f"delphi worker: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"status": summary.get("status"), "reason": summary.get("reason")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
