"""`delphi check SUITE_DIR [--json] [--recompute] [--expect-head DIGEST] [--allowed-signers FILE]`:
held-out runs against their registered forecasts. Exit 1 when the ledger fails verification or
any run is refused."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="score held-out runs against their pre-registered forecasts",
                       description="Score each held-out run against the forecast registered for it. A run is "
                                   "refused (exit 1) when the ledger fails verification, its entry is missing, its "
                                   "spec differs from the registered one, it started before the registration, or "
                                   "its summary disagrees with its logged (or, with --recompute, re-evaluated) loss.")
    p.add_argument("suite_dir", help="the suite directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--recompute", action="store_true",
                   help="re-evaluate each held-out run's saved weights on its validation windows and refuse a "
                        "summary.json that disagrees")
    p.add_argument("--tolerance", type=float, default=None, metavar="REL",
                   help="relative difference --recompute allows (default 1e-4; loosen it when re-evaluating on "
                        "other hardware than the run trained on)")
    p.add_argument("--expect-head", metavar="DIGEST",
                   help="a head published earlier (`delphi ledger head`): the ledger must still extend it")
    p.add_argument("--allowed-signers", metavar="FILE",
                   help="ssh-keygen allowed-signers file the ledger's signatures must verify against")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from delphi.errors import DelphiError
    from delphi.forecast.check import check_suite, format_check

    if args.tolerance is not None and not (args.tolerance >= 0):
        raise DelphiError(f"--tolerance must be a non-negative relative difference, e.g. 1e-3; got {args.tolerance}")
    result = check_suite(args.suite_dir, expect_head=args.expect_head, allowed_signers=args.allowed_signers,
                         recompute=args.recompute, tolerance=args.tolerance)
    print(json.dumps(result, indent=2) if args.json else format_check(result))
    return 0 if result["ok"] else 1
