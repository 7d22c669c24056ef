"""`delphi report SUITE_DIR [--out DIR]`: report.html + report.md (+ figures, model cards)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a suite's report (report.html, report.md, figures, model cards)",
        description="Build the report of a suite directory written by `delphi run`: IsoFLOP curves, compute-optimal "
                    "allocation, the loss law with the held-out forecast, residuals, training curves, the recipe "
                    "table and a model card per trained model (also written as runs/<name>/hf/README.md). "
                    "Works on partial suites and notes what is missing.",
    )
    p.add_argument("suite_dir", metavar="SUITE_DIR", help="the suite directory (holds suite.toml, runs/, runs.csv)")
    p.add_argument("--out", metavar="DIR", help="write report.html, report.md and figures/ here (default: SUITE_DIR)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when nothing the report is built from changed since it was last written")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from delphi.report.report import build_report, current_report

    if not args.force and (paths := current_report(args.suite_dir, args.out)) is not None:
        print(f"{paths['html']} is up to date: nothing it is built from changed since it was written "
              "(--force rebuilds it)")
        return 0
    paths = build_report(args.suite_dir, args.out, force=True)
    cards = sum(1 for k in paths if k.startswith("card:"))
    figures = sum(1 for k in paths if k.startswith("figure:"))
    print(f"wrote {paths['html']}")
    print(f"wrote {paths['markdown']} ({figures} figures, {cards} model cards)")
    return 0
