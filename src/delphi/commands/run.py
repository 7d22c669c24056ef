"""`delphi run [SUITE]`: the whole Delphi loop (default: the `tiny` preset on the embedded corpus)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="plan, train the IsoFLOP grid, fit, pre-register, train held-out runs, check, report",
        description="Run a suite end to end. SUITE is a preset name (tiny, micro, gpu-node) or a TOML file; "
                    "default: tiny. Re-running skips finished runs and resumes interrupted ones.")
    p.add_argument("suite", nargs="?", default="tiny", help="preset name or path to a suite TOML (default: tiny)")
    p.add_argument("--out", help="suite directory (default: the suite's out_dir)")
    p.add_argument("--retry-failed", action="store_true", help="re-try runs recorded as failed")
    p.add_argument("--no-heldout", action="store_true", help="stop after the fit (no forecast, no held-out runs)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/Markdown report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from delphi.errors import DelphiError
    from delphi.sweep.pipeline import run_suite
    from delphi.sweep.suite import load_suite, readiness_problems

    suite = load_suite(args.suite, out_dir=args.out)  # every problem of the suite file fails here, at once
    missing = readiness_problems(suite)
    if missing:
        raise DelphiError("; ".join(missing))
    import torch

    from delphi.train.hardware import describe_hardware, hardware_line

    # Precision, compile and MFU depend on what was detected: say it once (summary.json records it).
    print(hardware_line(describe_hardware("cuda" if torch.cuda.is_available() else "cpu")), flush=True)
    result = run_suite(suite, retry_failed=args.retry_failed, progress=not args.quiet,
                       heldout=not args.no_heldout, report=not args.no_report)
    print(f"suite directory: {result.suite_dir}")
    return 0
