"""`delphi plan`: the recipe's configurations for compute budgets (a table, or JSON)."""

from __future__ import annotations

import argparse
import json
import math
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="configurations (shape, batch, steps, hyperparameters) for compute budgets",
        description="Print the recipe's candidates for each budget. With --alloc-a/--alloc-alpha, print the "
                    "single held-out configuration chosen by the allocation law D*(C) = A·C^alpha.",
    )
    p.add_argument("--budget", nargs="+", metavar="FLOPS",
                   help="compute budget(s) in FLOPs, e.g. 3e18 (default: the recipe's IsoFLOP grid)")
    p.add_argument("--recipe", default="delphi", help="recipe name (delphi, delphi-v1, or a suite's recipe)")
    p.add_argument("--alloc-a", type=str, help="allocation law coefficient A in D*(C) = A·C^alpha")
    p.add_argument("--alloc-alpha", type=str, help="allocation law exponent alpha")
    p.add_argument("--batch-size", type=str, help="fixed batch size (sequences) for the held-out run")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run_plan)


def _number(text: str, what: str) -> float:
    from delphi.errors import DelphiError

    try:
        return float(text)
    except (TypeError, ValueError):
        raise DelphiError(f"{what} {text!r} is not a number") from None


def run_plan(args: argparse.Namespace) -> int:
    from delphi.errors import DelphiError
    from delphi.recipe import check_budget, get_recipe

    recipe = get_recipe(args.recipe)
    budgets = [check_budget(_number(b, "budget")) for b in args.budget] if args.budget else list(recipe.isoflop_budgets)
    heldout = args.alloc_a is not None or args.alloc_alpha is not None
    if heldout:
        if args.alloc_a is None or args.alloc_alpha is None:
            raise DelphiError("give both --alloc-a and --alloc-alpha for a held-out plan")
        a, alpha = _number(args.alloc_a, "--alloc-a"), _number(args.alloc_alpha, "--alloc-alpha")
        if not (math.isfinite(a) and a > 0):
            raise DelphiError(f"--alloc-a must be a positive number (D*(C) = A·C^alpha in tokens), "
                              f"got {args.alloc_a!r}")
        if not (math.isfinite(alpha) and 0 < alpha < 1):
            raise DelphiError(f"--alloc-alpha must be a number in (0, 1): tokens grow slower than compute "
                              f"(fits give about 0.5), got {args.alloc_alpha!r}")
        batch = None
        if args.batch_size is not None:
            bs = _number(args.batch_size, "--batch-size")
            if bs != int(bs) or bs < 1:
                raise DelphiError(f"--batch-size must be a positive integer, got {args.batch_size!r}")
            batch = int(bs)
        cands = [recipe.heldout(b, a, alpha, batch) for b in budgets]
    else:
        if args.batch_size is not None:
            raise DelphiError("--batch-size applies only to a held-out plan (with --alloc-a/--alloc-alpha)")
        cands = []
        for b in budgets:
            found = recipe.candidates(b)
            if not found:
                raise DelphiError(f"budget {b:.3g} FLOPs has no valid candidate under recipe {recipe.name!r} "
                                  f"(every width breaks a batch, parameter or tokens-per-parameter bound)")
            cands.extend(found)
    rows = [c.to_dict() for c in cands]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    cols = [("name", "name", "{}"), ("H", "hidden_size", "{}"), ("L", "num_layers", "{}"),
            ("heads", "num_heads", "{}"), ("params", "params", "{:,}"), ("B", "batch_size", "{}"),
            ("steps", "train_steps", "{:,}"), ("tokens", "tokens", "{:,}"), ("tok/param", "tokens_per_param", "{:.1f}"),
            ("lr", "learning_rate", "{:.3e}"), ("adam_lr", "adam_lr", "{:.3e}"), ("eps", "epsilon", "{:.2e}"),
            ("beta2", "beta2", "{:.5f}"), ("FLOPs", "flops", "{:.3e}")]
    cells = [[fmt.format(r[key]) for _, key, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (h, _, _) in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    print(line([h for h, _, _ in cols]))
    for c in cells:
        print(line(c))
    print(f"{len(rows)} configuration(s)")
