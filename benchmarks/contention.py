"""A 2-thread training step sharing the CPU with another process: how much slower, by OpenMP setting.

    python benchmarks/contention.py [--shapes g64 g112] [--precision bf16] [--steps 30] [--repeats 3]

Each case is a fresh process (OpenMP reads its settings once, at start-up) that times the
trainer's eager step (`train_throughput.ours`: fused loss + AdamH) on one grid shape with 2
threads: alone, and while a competing process keeps one of the two cores busy (a pure-Python
loop, as another user's job would). OpenMP wait policies: the default (threads spin at a
barrier before sleeping), `OMP_WAIT_POLICY=PASSIVE` (they sleep at once) and shorter spins
(`GOMP_SPINCOUNT`, libgomp's; the default spins 300,000 times). With one core of two
taken, a run that only lost its share of the CPU would be at most 2× slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
from train_throughput import shape_of, batches, ours, time_interleaved
torch.set_num_threads(2)
shape, B = shape_of({shape!r})
amp = torch.bfloat16 if {precision!r} == "bf16" else None
step = ours(shape, amp, compile=False)
t = time_interleaved({{"step": step}}, batches(shape, B, {n}), warmup=3)["step"]
print(f"MEDIAN {{t:.6f}}")
"""
POLICIES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin 1e4": {"GOMP_SPINCOUNT": "10000"}, "spin 1e5": {"GOMP_SPINCOUNT": "100000"}}
COMPETITOR = "import time\nt = time.time()\nwhile time.time() - t < 3600: pass\n"


def step_time(shape: str, precision: str, steps: int, env_extra: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra, OMP_NUM_THREADS="2")
    code = CHILD.format(here=str(HERE), shape=shape, precision=precision, n=steps + 3)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split("MEDIAN")[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["g64", "g112"])
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the policies, interleaved; medians reported")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    args = ap.parse_args()
    # Rounds interleave the policies (default, passive, default, passive, ...) so that a slow
    # spell of the machine falls on every policy alike; each cell is the median over rounds.
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for r in range(args.repeats):
        for shape in args.shapes:
            for policy in args.policies:
                extra = POLICIES[policy]
                alone = step_time(shape, args.precision, args.steps, extra)
                busy = subprocess.Popen([sys.executable, "-c", COMPETITOR])
                try:
                    time.sleep(0.5)
                    shared = step_time(shape, args.precision, args.steps, extra)
                finally:
                    busy.kill()
                    busy.wait()
                a, b = times.setdefault((shape, policy), ([], []))
                a.append(alone)
                b.append(shared)
                print(f"round {r + 1}: {shape} {policy}: alone {1e3 * alone:.1f} ms, sharing {1e3 * shared:.1f} ms "
                      f"({shared / alone:.2f}x)", flush=True)
    print(f"\n| shape | OpenMP wait policy | step alone | step sharing one core | slowdown | alone vs default |"
          f"\n|---|---|---:|---:|---:|---:|")
    for (shape, policy), (alone, shared) in times.items():
        a, b = statistics.median(alone), statistics.median(shared)
        base = statistics.median(times[(shape, args.policies[0])][0])
        print(f"| {shape} | {policy} | {1e3 * a:.1f} ms | {1e3 * b:.1f} ms | {b / a:.2f}x | {a / base:.2f}x |")


if __name__ == "__main__":
    main()
