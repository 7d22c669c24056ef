"""Wall time of `delphi report` on a finished suite: a baseline commit against the working tree.

    python benchmarks/report_speed.py SUITE_DIR [--baseline 1899d06] [--repeats 3]

SUITE_DIR is a finished suite directory (e.g. `delphi-out/tiny` after `delphi run`). It is
copied once per code version (the report writes into the suite directory), the baseline is
checked out into a temporary git worktree and imported from there (PYTHONPATH), and the two
versions are run alternately, `--repeats` times each, as fresh processes: what a user waits for,
imports included. Prints each time, the medians and their ratio. One job at a time on an idle
machine: the figures are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_report(src: Path, suite_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "delphi.cli", "report", str(suite_dir)], env=env,
                          capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"report failed with {src}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suite_dir", type=Path)
    ap.add_argument("--baseline", default="1899d06", help="the last commit whose report re-ran the fits")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not (args.suite_dir / "runs.csv").is_file():
        sys.exit(f"{args.suite_dir} is not a finished suite directory (no runs.csv); run `delphi run` first")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_tree = tmp / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base_tree), args.baseline],
                       check=True)
        try:
            versions = {f"baseline {args.baseline}": base_tree / "src", "working tree": REPO / "src"}
            dirs = {}
            for i, name in enumerate(versions):
                dirs[name] = tmp / f"suite{i}"
                shutil.copytree(args.suite_dir, dirs[name])
            times: dict[str, list[float]] = {name: [] for name in versions}
            for r in range(args.repeats):
                for name, src in versions.items():
                    times[name].append(run_report(src, dirs[name]))
                    print(f"repeat {r + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=False)
    med = {name: statistics.median(t) for name, t in times.items()}
    base, new = med.values()
    print(f"\nmedian of {args.repeats}: " + ", ".join(f"{n} {m:.2f} s" for n, m in med.items())
          + f"; speed-up {base / new:.2f}x")


if __name__ == "__main__":
    main()
