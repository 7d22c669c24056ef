"""`delphi ledger verify|show|head|sign PATH`: the pre-registration ledger.

    delphi ledger head DIR                                  the digest to publish (COUNT:HASH)
    delphi ledger verify DIR [--expect-head DIGEST] [--allowed-signers FILE]
    delphi ledger sign DIR --key ~/.ssh/id_ed25519 [--identity NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ledger", help="verify, show, anchor or sign a suite's pre-registration ledger")
    s = p.add_subparsers(dest="ledger_command", metavar="ACTION", parser_class=type(p))
    v = s.add_parser("verify", help="detect edited, removed or reordered entries (exit 1 if any)",
                     description="Check the hash chain and the .head sidecar, that every held-out run's entry is in "
                                 "the ledger, and (optionally) that the ledger still extends a published head and "
                                 "that its entries carry valid signatures.")
    v.add_argument("path", help="suite directory or ledger.jsonl")
    v.add_argument("--expect-head", metavar="DIGEST",
                   help="a head printed by `delphi ledger head` earlier: the ledger must still extend it")
    v.add_argument("--allowed-signers", metavar="FILE",
                   help="ssh-keygen allowed-signers file: every signature must verify and the last entry be signed")
    v.set_defaults(func=run_verify)
    sh = s.add_parser("show", help="print the entries")
    sh.add_argument("path", help="suite directory or ledger.jsonl")
    sh.set_defaults(func=run_show)
    hd = s.add_parser("head", help="print the digest (COUNT:HASH) to publish where others can see it",
                      description="Print COUNT:HASH of the last entry. Its hash commits to every entry before it: "
                                  "once published, `delphi ledger verify --expect-head COUNT:HASH` proves the ledger "
                                  "still extends it, even if someone rewrote the whole chain.")
    hd.add_argument("path", help="suite directory or ledger.jsonl")
    hd.set_defaults(func=run_head)
    sg = s.add_parser("sign", help="sign the unsigned entries with your SSH key (ssh-keygen -Y sign)",
                      description="Append an ssh-keygen signature of each unsigned entry to <ledger>.sig. Verifiers "
                                  "list your public key in an allowed-signers file (printed here) and run "
                                  "`delphi ledger verify DIR --allowed-signers FILE`.")
    sg.add_argument("path", help="suite directory or ledger.jsonl")
    sg.add_argument("--key", required=True, help="your SSH private key, e.g. ~/.ssh/id_ed25519")
    sg.add_argument("--identity", help="the principal the signatures name (default: the key's comment)")
    sg.set_defaults(func=run_sign)
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
    runs = ledger.path.parent / "runs"
    res = ledger.verify(expect_head=args.expect_head, allowed_signers=args.allowed_signers,
                        runs_dir=runs if runs.is_dir() else None)
    if res.ok:
        extra = ""
        if args.expect_head:
            extra += f", extends the published head {args.expect_head.strip()[:24]}…"
        if args.allowed_signers:
            extra += f", signatures verified against {Path(args.allowed_signers).name}"
        print(f"ledger OK: {res.entries} entries, hash chain intact{extra} ({ledger.path})")
        return 0
    for p in res.problems:
        print(f"ledger FAILS ({ledger.path.name}): {p}")
    return 1


def run_show(args: argparse.Namespace) -> int:
    for e in _ledger(args.path).read():
        print(json.dumps(e, sort_keys=True))
    return 0


def run_head(args: argparse.Namespace) -> int:
    import sys

    ledger = _ledger(args.path)
    head = ledger.head()
    print(head)
    print(f"publish this digest where others can see it; `delphi ledger verify {args.path} --expect-head {head}` "
          "then proves the ledger still extends it", file=sys.stderr)
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from delphi.forecast.ledger import allowed_signers_line

    ledger = _ledger(args.path)
    line = allowed_signers_line(args.key, args.identity)
    signed = ledger.sign(args.key, principal=args.identity)
    if signed:
        span = f"entry {signed[0]}" if len(signed) == 1 else f"entries {signed[0]}–{signed[-1]}"
        print(f"signed {span} ({ledger.sig_path})")
    else:
        print(f"every entry is already signed ({ledger.sig_path})")
    print(f"allowed-signers line for verifiers: {line}")
    return 0
