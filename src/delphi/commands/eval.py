"""`delphi eval`: score runs or Hugging Face models on downstream tasks."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score runs / Hugging Face models on MMLU, GSM8K, ARC, HellaSwag, …",
        description="Score each MODEL (a run directory with hf/, or a local Hugging Face causal-LM "
                    "directory) on the tasks; write one JSON per model and task and print a table.")
    p.add_argument("models", nargs="*", metavar="MODEL", help="run directory or Hugging Face model directory")
    p.add_argument("--tasks", default="core",
                   help="comma-separated task[:shots] names or presets (core, delphi, all); default: core")
    p.add_argument("--out", default=None,
                   help="results directory (default: <run>/eval for runs, eval-results/<name> for HF models; "
                        "with several models: <out>/<name>)")
    p.add_argument("--data-dir", default=None,
                   help="directory with the full eval sets (layout of ../shared/data/eval) instead of the "
                        "committed subsets")
    p.add_argument("--limit", type=int, default=None, help="score only the first N documents of each task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list tasks and presets, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from delphi.errors import DelphiError
    from delphi.eval import PRESETS, TASKS, evaluate_tasks, format_table, open_model, parse_tasks, save_results

    if args.list:
        for name, t in sorted(TASKS.items()):
            print(f"{name:16s} {t.kind:8s} default {t.default_fewshot}-shot, chance {t.chance:.3f}")
        for name, items in PRESETS.items():
            print(f"preset {name}: {', '.join(items)}")
        return 0
    if not args.models:
        raise DelphiError("give at least one MODEL (a run directory or a Hugging Face model directory)")
    if args.limit is not None and args.limit <= 0:
        raise DelphiError("--limit must be a positive number of documents")
    if args.batch_size <= 0:
        raise DelphiError("--batch-size must be positive")
    tasks = parse_tasks(args.tasks)
    from delphi.eval.backends import pick_device

    pick_device(args.device)  # an unavailable device fails here, before any model is loaded
    everything = []
    for model in args.models:
        scorer, info = open_model(model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
        results = evaluate_tasks(scorer, tasks, data_dir=args.data_dir, limit=args.limit, progress=not args.no_progress)
        if args.out is None:
            out = Path(info["results_dir"])
        else:
            out = Path(args.out) / info["name"] if len(args.models) > 1 else Path(args.out)
        save_results(results, out)
        print(f"{info['name']}: {len(results)} task result(s) written to {out}")
        everything += results
    print(format_table(everything))
    return 0
