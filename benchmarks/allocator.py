"""The trainer's step with glibc's default allocator vs with freed memory kept
(`delphi.train.hardware.keep_freed_memory`, which every trainer process calls).

Each (shape, allocator) measurement is a fresh process (the allocator setting is per process and
the heap remembers), the two allocators alternate, `--repeats` rounds; the table gives the median
step time, the minor page faults per step (the mechanism) and the ratio.

    python benchmarks/allocator.py
    python benchmarks/allocator.py --shapes g16 h96 --threads 1 2 --repeats 3

Shapes are `train_throughput.py`'s (`g16`: the `cpu` recipe's width-16 grid shape, ...);
`--batch NAME=B` overrides a shape's batch (the grid's width-16 runs use 5–51 sequences).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {here!r})
from train_throughput import SHAPES, batches, ours, shape_of
import delphi
from delphi.train.hardware import keep_freed_memory
torch.set_num_threads({threads})
allocator = keep_freed_memory()
SHAPES[{name!r}] = SHAPES[{name!r}][:5] + ({batch},)
shape, B = shape_of({name!r})
amp = torch.bfloat16 if {precision!r} == "bf16" else None
step = ours(shape, amp, False)
data = batches(shape, B, {warmup} + {steps})
for t in data[:{warmup}]:
    step(t)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for t in data[{warmup}:]:
    t0 = time.perf_counter()
    step(t)
    times.append(time.perf_counter() - t0)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / {steps}
median = sorted(times)[len(times) // 2]
print(json.dumps({{"ms": 1e3 * median, "faults": faults, "allocator": allocator, "package": delphi.__file__}}))
"""


def measure(name: str, batch: int, threads: int, precision: str, kept: bool, steps: int, warmup: int,
            pythonpath: str | None = None) -> dict:
    """Time the trainer's step in a fresh process: median ms, minor faults a step, the allocator
    setting and the `delphi` package imported (`pythonpath` first on the path: another checkout)."""
    env = dict(os.environ)
    env.pop("DELPHI_MALLOC", None)
    if not kept:
        env["DELPHI_MALLOC"] = "default"
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
    from train_throughput import SHAPES, add_step_options, step_batches

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_options(ap, steps=30)
    args = ap.parse_args(argv)
    batch = step_batches(args)
    rows = []
    for name in args.shapes:
        B = batch.get(name, SHAPES[name][5])
        for threads in args.threads:
            res = {False: [], True: []}
            for _ in range(args.repeats):
                for kept in (False, True):
                    res[kept].append(measure(name, B, threads, args.precision, kept, args.steps, args.warmup))
            med = {k: statistics.median(r["ms"] for r in v) for k, v in res.items()}
            flt = {k: statistics.median(r["faults"] for r in v) for k, v in res.items()}
            H, L = SHAPES[name][0], SHAPES[name][1]
            label = f"{name} (H{H}/L{L}, B{B}), {threads} thread{'s' if threads > 1 else ''}, {args.precision}"
            rows.append((label, med[False], med[True], flt[False], flt[True], med[False] / med[True],
                         [round(r["ms"], 1) for r in res[False]], [round(r["ms"], 1) for r in res[True]]))
            print(f"{label}: default {med[False]:.2f} ms ({flt[False]:.0f} faults/step), kept "
                  f"{med[True]:.2f} ms ({flt[True]:.0f} faults/step): {med[False] / med[True]:.2f}x "
                  f"[{res[True][0]['allocator']}]", flush=True)
    print()
    print("| shape | glibc default | freed memory kept | speed-up | faults/step (default → kept) | all timings (ms) |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} ms | {r[2]:.2f} ms | **{r[5]:.2f}x** | {r[3]:,.0f} → {r[4]:,.0f} | "
              f"{r[6]} vs {r[7]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
