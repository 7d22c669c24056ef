"""`delphi check SUITE_DIR [--json]`: held-out runs against their registered forecasts."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="score held-out runs against their pre-registered forecasts")
    p.add_argument("suite_dir", help="the suite directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from delphi.forecast.check import check_suite, format_check

    result = check_suite(args.suite_dir)
    print(json.dumps(result, indent=2) if args.json else format_check(result))
    return 0 if result["ledger_ok"] else 1
