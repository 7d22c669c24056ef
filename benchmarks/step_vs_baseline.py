"""The trainer's step (model forward/backward with the fused loss, AdamH update) as a baseline
commit of this repository runs it and as the working tree runs it, shape by shape.

Each (shape, code) measurement is a fresh process that imports the package from the baseline's
`git worktree` (through PYTHONPATH) or from the working tree; the two codes alternate, `--repeats`
rounds, and the table gives the median step time of each and the ratio. Both processes keep freed
memory (`keep_freed_memory`), as every trainer does, so only the code differs.

    python benchmarks/step_vs_baseline.py --baseline a69e3c8
    python benchmarks/step_vs_baseline.py --baseline a69e3c8 --shapes g16 g64 h96 --threads 1 2 --repeats 3

Shapes are `train_throughput.py`'s; `--batch NAME=B` overrides a shape's batch. Name the CPU
(`lscpu`) with any figure you quote.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    from allocator import measure
    from train_throughput import SHAPES, add_step_options, step_batches

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="git commit (or ref) of the baseline code")
    add_step_options(ap, steps=20)
    args = ap.parse_args(argv)
    batch = step_batches(args)

    with tempfile.TemporaryDirectory(prefix="delphi-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
                       check=True)
        try:
            rows = []
            for name in args.shapes:
                B = batch.get(name, SHAPES[name][5])
                for threads in args.threads:
                    res = {"baseline": [], "new": []}
                    for _ in range(args.repeats):
                        for label, path in (("baseline", str(tree / "src")), ("new", str(ROOT / "src"))):
                            res[label].append(measure(name, B, threads, args.precision, kept=True, steps=args.steps,
                                                      warmup=args.warmup, pythonpath=path))
                    assert res["baseline"][0]["package"].startswith(str(tree)), res["baseline"][0]
                    med = {k: statistics.median(r["ms"] for r in v) for k, v in res.items()}
                    H, L = SHAPES[name][0], SHAPES[name][1]
                    label = f"{name} (H{H}/L{L}, B{B}), {threads} thread{'s' if threads > 1 else ''}, {args.precision}"
                    rows.append((label, med["baseline"], med["new"], [round(r["ms"], 1) for r in res["baseline"]],
                                 [round(r["ms"], 1) for r in res["new"]]))
                    print(f"{label}: baseline {med['baseline']:.2f} ms, new {med['new']:.2f} ms: "
                          f"{med['baseline'] / med['new']:.2f}x", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print()
    print(f"| shape | baseline ({args.baseline}) | working tree | speed-up | all timings (ms) |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} ms | {r[2]:.2f} ms | **{r[1] / r[2]:.2f}x** | {r[3]} vs {r[4]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
