"""`delphi suite show NAME` / `delphi suite list`: the suite presets."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suite", help="show suite presets", description="Show or list suite presets.")
    s = p.add_subparsers(dest="suite_command", metavar="ACTION", parser_class=type(p))
    show = s.add_parser("show", help="print a preset (TOML) or validate a suite file")
    show.add_argument("name", help="preset name or path to a suite TOML")
    show.add_argument("--plan", action="store_true", help="also print the planned grid runs")
    show.set_defaults(func=run_show)
    lst = s.add_parser("list", help="list presets")
    lst.set_defaults(func=run_list)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_show(args: argparse.Namespace) -> int:
    from delphi.sweep.suite import load_suite

    suite = load_suite(args.name)  # validates: a bad file fails here with one line
    print(suite.source.rstrip())
    if args.plan:
        print(f"\n# grid: {len(suite.grid_candidates())} runs, {sum(c.flops for c in suite.grid_candidates()):.3g} FLOPs")
        for c in suite.grid_candidates():
            print(f"#   {c.name:44s} params {c.params:>11,}  tokens {c.tokens:>12,}  B {c.batch_size:>4}  "
                  f"steps {c.train_steps:>6}  lr {c.optimizer.lr:.4f}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from delphi.sweep.suite import load_suite, preset_names

    for name in preset_names():
        s = load_suite(name)
        print(f"{name:10s} fit budgets {', '.join(f'{b:.0e}' for b in s.grid.budgets)};  held-out "
              f"{', '.join(f'{b:.0e}' for b in s.heldout.budgets)} × seeds {list(s.heldout.seeds)}"
              + (f" (+ seeds {list(s.heldout.spread_seeds)} at the smallest)" if s.heldout.spread_seeds else ""))
    return 0
