"""`delphi downstream`: two-step forecast of a task's accuracy at a target compute."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "downstream", help="forecast task accuracy: soft metric vs compute, then a sigmoid fitted on a model pool",
        description="Step 1 fits the soft metric of the suite's optima as a power law in compute; step 2 fits "
                    "accuracy = a/(1+exp(-k(x-x0)))+b on a pool of external models; the forecast composes both.")
    p.add_argument("runs", help="runs table (CSV/Parquet/JSONL) or suite directory (summary.json files; eval "
                                "results found under it are merged)")
    p.add_argument("--soft", required=True,
                   help="soft-metric column, e.g. mmlu_sl_verb_5shot/choice_logprob or gsm8k_5shot/bpb")
    p.add_argument("--pool", required=True,
                   help="pool CSV with columns model, soft, hard, or a directory of `delphi eval` results of the "
                        "pool models")
    p.add_argument("--hard", default=None,
                   help="with a results-directory pool: the accuracy column (default: <task>/acc of --soft)")
    p.add_argument("--target-flops", required=True, help="comma-separated target compute(s), e.g. 1e21,1e22")
    p.add_argument("--eval", dest="eval_dir", default=None, help="directory of `delphi eval` results to merge")
    p.add_argument("--floor", type=float, default=None, help="chance accuracy: lower bound of the sigmoid (b)")
    p.add_argument("--fix-floor", action="store_true", help="pin b to --floor instead of bounding it")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="downstream", help="output directory for downstream.json and downstream.png")
    p.set_defaults(func=run)


def _load_runs(path):
    from pathlib import Path

    from delphi.errors import DelphiError
    from delphi.fit.runs_table import load_runs_table

    p = Path(path)
    if not p.exists():
        raise DelphiError(f"runs table {p} not found")
    return load_runs_table(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from delphi.downstream import forecast_downstream
    from delphi.errors import DelphiError
    from delphi.eval import load_results, merge_into_runs_table

    try:
        targets = [float(x) for x in args.target_flops.split(",") if x.strip()]
    except ValueError:
        raise DelphiError(f"--target-flops: expected numbers like 1e21,1e22, got {args.target_flops!r}") from None
    if args.bootstrap < 10:
        raise DelphiError("--bootstrap must be at least 10 for an interval")
    runs = _load_runs(args.runs)
    eval_dir = args.eval_dir or (args.runs if Path(args.runs).is_dir() else None)
    if eval_dir is not None:
        results = load_results(eval_dir)
        if results:
            runs = merge_into_runs_table(runs, results)
    fc = forecast_downstream(runs, args.pool, soft=args.soft, target_flops=targets, floor=args.floor,
                             fix_floor=args.fix_floor, hard=args.hard, bootstrap=args.bootstrap, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fc.save(out / "downstream.json")
    fc.plot(out / "downstream.png", title=args.soft)
    pct = int(100 * fc.confidence)
    for c, s, (slo, shi), a, (alo, ahi) in zip(fc.target_flops, fc.soft_pred, fc.soft_interval, fc.acc_pred,
                                               fc.acc_interval):
        print(f"C={c:.3g}: {args.soft} = {s:.4f} [{slo:.4f}, {shi:.4f}]  →  accuracy {100 * a:.1f}% "
              f"[{100 * alo:.1f}, {100 * ahi:.1f}] ({pct}% interval)")
    print(f"wrote {out / 'downstream.json'} and {out / 'downstream.png'}")
    return 0
