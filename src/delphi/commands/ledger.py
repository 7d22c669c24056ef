"""`delphi ledger verify|show SUITE_DIR`: the pre-registration ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ledger", help="verify or show a suite's pre-registration ledger")
    s = p.add_subparsers(dest="ledger_command", metavar="ACTION", parser_class=type(p))
    v = s.add_parser("verify", help="detect edited, removed or reordered entries (exit 1 if any)")
    v.add_argument("path", help="suite directory or ledger.jsonl")
    v.set_defaults(func=run_verify)
    sh = s.add_parser("show", help="print the entries")
    sh.add_argument("path", help="suite directory or ledger.jsonl")
    sh.set_defaults(func=run_show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _ledger(path: str):
    from delphi.errors import DelphiError
    from delphi.forecast.ledger import Ledger

    p = Path(path)
    p = p / "ledger.jsonl" if p.is_dir() else p
    if not p.exists():
        raise DelphiError(f"no ledger at {p}")
    return Ledger(p)


def run_verify(args: argparse.Namespace) -> int:
    ledger = _ledger(args.path)
    res = ledger.verify()
    if res.ok:
        print(f"ledger OK: {res.entries} entries, hash chain intact ({ledger.path})")
        return 0
    for p in res.problems:
        print(f"ledger FAILS: {p}")
    return 1


def run_show(args: argparse.Namespace) -> int:
    for e in _ledger(args.path).read():
        print(json.dumps(e, sort_keys=True))
    return 0
