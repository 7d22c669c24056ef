"""Step-2 validation on the OLMo model ladder (Bhagia et al. 2024): fit the bpb → accuracy
sigmoid on the 190M–1.3B ladder checkpoints, predict the 13B-5T target's final accuracy from
its bpb, and compare the error per task with the paper's own step-2 numbers.

    python benchmarks/downstream_olmo.py [--data DIR_OR_CSV] [--append benchmarks/RESULTS.md]

Default data: tests/data/eval/olmo_ladder.csv.gz (the committed extract of the ladder's runs); `--data`
takes a directory of allenai/OLMo-ladder run CSVs.
The 7B-4T target's checkpoints (peteish7) are not in our data, so only 13B is validated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from delphi.downstream.olmo_ladder import validate_step2, load_ladder  # noqa: E402


def table(df, title: str) -> str:
    lines = [f"**{title}**", "",
             "| task | 13B bpb | actual acc | predicted | 95% interval | error (pts) | paper predicted | paper error (pts) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.task} | {r.bpb:.4f} | {100 * r.actual:.2f} | {100 * r.predicted:.2f} | "
                     f"[{100 * r.lo:.2f}, {100 * r.hi:.2f}] | {r.error_pts:+.2f} | {100 * r.paper_predicted:.2f} | "
                     f"{r.paper_error_pts:+.2f} |")
    mae = df.error_pts.abs().mean()
    lines += ["", f"mean |error| {mae:.2f} points (paper: {df.paper_error_pts.abs().mean():.2f})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "tests/data/eval/olmo_ladder.csv.gz"),
                    help="the ladder: a directory of allenai/OLMo-ladder run CSVs or the committed extract (default)")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--append", default=None, help="append the tables to this markdown file")
    args = ap.parse_args()
    df = load_ladder(args.data)
    t0 = time.perf_counter()
    paper = validate_step2(df, bootstrap=args.bootstrap, anchor=True)
    floor = validate_step2(df, bootstrap=args.bootstrap, anchor=True, use_floor=True)
    free = validate_step2(df, bootstrap=args.bootstrap, anchor=False)
    secs = time.perf_counter() - t0
    text = "\n".join([
        table(paper, "Paper protocol (ideal point (0, 1) added, b ≥ 0)"),
        table(floor, "Same, with b bounded below by the task's chance accuracy"),
        table(free, "Without the ideal point"),
        f"(3 × 8 fits with {args.bootstrap} model-bootstrap refits each: {secs:.1f} s)",
    ])
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n## Downstream step 2 on the OLMo ladder\n\n"
                    f"Command: `python benchmarks/downstream_olmo.py --data {args.data} --bootstrap {args.bootstrap}`\n\n"
                    "Fit: bpb → length-normalised accuracy sigmoid on 190M–1.3B × {1,2,5,10}×C ladder checkpoints "
                    "(first 10% of each run skipped, 5-checkpoint moving average), bootstrap over the 16 ladder runs; "
                    "target: OLMo-2 13B-5T, mean of its last 5 checkpoints. Paper numbers: allenai/OLMo-ladder @ "
                    "4d993445 `src/scripts/paper/figures/step2_main.csv`. The 7B-4T target is not in our data.\n\n"
                    + text + "\n")


if __name__ == "__main__":
    main()
