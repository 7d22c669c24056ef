"""Suite throughput: wall time of the pinned `tiny` IsoFLOP grid trained by a baseline commit of
this repository and by the working tree, on the same machine in one invocation.

    python benchmarks/suite_throughput.py --baseline 1ebc1ac
    python benchmarks/suite_throughput.py --baseline 1ebc1ac --workers 1 2 --suite benchmarks/suites/tiny-grid.toml
    python benchmarks/suite_throughput.py --baseline 652a865 --baseline-workers 2 --workers 2 --repeats 2

The suite (`benchmarks/suites/tiny-grid.toml`) pins every recipe constant, so the runs planned are
the same for both codes. The baseline is checked out with `git worktree` into a temporary folder
and imported through PYTHONPATH (same venv, same dependencies). Each variant trains the grid from
an empty suite directory with `delphi run SUITE --no-heldout --no-report --quiet`, one variant at a
time (never two on the cores at once), and the variants' final losses are compared run by run: a
faster trainer must train the same models. Prints a Markdown table: wall time, grid FLOPs per
second, speed-up against the baseline, and the largest loss difference. With `--repeats N` the
variants are timed in turn N times (baseline, new, baseline, new, ...) and the (lower) median wall
time of each is reported, so that a drift in the machine's speed hits both alike. `--baseline-workers`
gives the baseline the same executor as the new code when both support it, so the ratio measures
the code alone. Name the CPU (`lscpu`) with any figure you quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def suite_with_workers(suite: Path, workers: int, folder: Path) -> Path:
    """A copy of the suite TOML with `[executor] workers` set (the only executor key it changes)."""
    text = suite.read_text()
    head, sep, tail = text.partition("[executor]")
    if not sep:
        raise SystemExit(f"{suite}: needs an [executor] table")
    kept = [ln for ln in tail.splitlines() if ln.strip() and not ln.strip().startswith("workers")]
    out = folder / f"{suite.stem}-w{workers}.toml"
    out.write_text(head + "[executor]\n" + f"workers = {workers}\n" + "\n".join(kept) + "\n")
    return out


def run_variant(label: str, suite: Path, out: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "delphi.cli", "run", str(suite), "--out", str(out), "--no-heldout", "--no-report",
           "--quiet"]
    print(f"[{label}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"[{label}] failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    runs = {}
    for summary in sorted((out / "runs").glob("*/summary.json")):
        s = json.loads(summary.read_text())
        runs[s["name"]] = s
    flops = sum(s["flops"] for s in runs.values())
    train = sum(s.get("train_time_s") or 0 for s in runs.values())
    print(f"[{label}] {len(runs)} runs, {wall:.1f} s wall, {flops / wall / 1e9:.1f} GFLOP/s over the grid "
          f"(training steps alone: {train:.1f} s)", flush=True)
    return {"label": label, "wall_s": wall, "flops": flops, "train_s": train, "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="git commit (or ref) of the baseline code")
    ap.add_argument("--suite", default=str(ROOT / "benchmarks" / "suites" / "tiny-grid.toml"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="worker counts to time the working tree with (the baseline uses the suite's)")
    ap.add_argument("--baseline-workers", type=int,
                    help="worker count for the baseline (default: the suite's own)")
    ap.add_argument("--repeats", type=int, default=1, help="time every variant this many times, in turn")
    ap.add_argument("--keep", help="keep the suite directories under this folder")
    args = ap.parse_args(argv)
    suite = Path(args.suite).resolve()
    print(f"cpu: {cpu_name()}, {os.cpu_count()} cores; suite {suite.name}")
    tmp = Path(tempfile.mkdtemp(prefix="suite-throughput-"))
    keep = Path(args.keep) if args.keep else tmp
    worktree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                   check=True, capture_output=True)
    base_suite, base_label = suite, f"baseline {args.baseline}"
    if args.baseline_workers:
        (tmp / "baseline-suite").mkdir()
        base_suite = suite_with_workers(suite, args.baseline_workers, tmp / "baseline-suite")
        base_label += f", {args.baseline_workers} worker(s)"
    variants = [(base_label, base_suite, "baseline", str(worktree / "src"))]
    variants += [(f"working tree, {w} worker(s)", suite_with_workers(suite, w, tmp), f"new-w{w}", None)
                 for w in args.workers]
    try:
        timings: dict[str, list[dict]] = {label: [] for label, *_ in variants}
        for rep in range(args.repeats):
            for label, suite_file, folder, pythonpath in variants:
                out = keep / (folder if args.repeats == 1 else f"{folder}-r{rep}")
                timings[label].append(run_variant(label, suite_file, out, pythonpath))
        # The median run by wall time stands for each variant (its losses and step times with it).
        results = [sorted(ts, key=lambda r: r["wall_s"])[(len(ts) - 1) // 2] for ts in timings.values()]
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    base = results[0]
    print()
    print(f"CPU: {cpu_name()}; suite `{Path(args.suite).name}` ({len(base['runs'])} runs, {base['flops']:.3g} FLOPs)"
          + (f"; per variant the lower median of {args.repeats} timings" if args.repeats > 1 else ""))
    print()
    print("| code | wall time | grid FLOP/s | speed-up | training steps alone | max \\|Δ loss\\| vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        common = set(r["runs"]) & set(base["runs"])
        diffs = [abs(r["runs"][n]["loss"] - base["runs"][n]["loss"]) for n in common
                 if r["runs"][n].get("loss") is not None and base["runs"][n].get("loss") is not None]
        dmax = max(diffs) if diffs else float("nan")
        print(f"| {r['label']} | {r['wall_s']:.0f} s | {r['flops'] / r['wall_s'] / 1e9:.1f} GFLOP/s | "
              f"{base['wall_s'] / r['wall_s']:.2f}x | {r['train_s']:.0f} s | {dmax:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
