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
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, sys, time
import torch
sys.path.insert(0, {here!r})
from train_throughput import SHAPES, batches, ours, shape_of
import delphi
from delphi.train.hardware import keep_freed_memory
torch.set_num_threads({threads})
keep_freed_memory()
SHAPES[{name!r}] = SHAPES[{name!r}][:5] + ({batch},)
shape, B = shape_of({name!r})
amp = torch.bfloat16 if {precision!r} == "bf16" else None
step = ours(shape, amp, False)
data = batches(shape, B, {warmup} + {steps})
for t in data[:{warmup}]:
    step(t)
times = []
for t in data[{warmup}:]:
    t0 = time.perf_counter()
    step(t)
    times.append(time.perf_counter() - t0)
print(json.dumps({{"ms": 1e3 * sorted(times)[len(times) // 2], "package": delphi.__file__}}))
"""


def measure(name: str, batch: int, threads: int, precision: str, pythonpath: str | None, steps: int,
            warmup: int) -> dict:
    env = dict(os.environ)
    env.pop("DELPHI_MALLOC", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = CHILD.format(here=str(HERE), threads=threads, name=name, batch=batch, precision=precision,
                        warmup=warmup, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name}: the step failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    from train_throughput import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="git commit (or ref) of the baseline code")
    ap.add_argument("--shapes", nargs="+", default=["g16", "g64", "g112", "h96"], choices=sorted(SHAPES))
    ap.add_argument("--batch", nargs="*", default=["g16=26", "g64=9", "g112=4"],
                    help="NAME=B batch overrides (defaults: batches of the tiny grid's 5e11-1e12 runs)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    batch = {k: int(v) for k, v in (b.split("=") for b in args.batch)}

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
                            res[label].append(measure(name, B, threads, args.precision, path, args.steps,
                                                      args.warmup))
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
