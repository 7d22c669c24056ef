"""`delphi tune search|horizon|transfer`: tune the recipe's reference constants and check them."""

from __future__ import annotations

import argparse
import json
import math


def _number(kind, what: str, positive: bool = True):
    def parse(text: str):
        try:
            v = kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{what} must be finite, got {text!r}")
        if positive and not v > 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
        return v

    return parse


def _floats(what: str):
    def parse(text: str):
        try:
            vals = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be numbers separated by commas, got {text!r}") from None
        if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
            raise argparse.ArgumentTypeError(f"{what} must be positive numbers separated by commas, got {text!r}")
        return vals

    return parse


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reference point")
    g.add_argument("--recipe", default="cpu",
                   help="recipe preset name, or a TOML file with a [recipe] section (e.g. a tuned-recipe.toml); "
                        "default: cpu")
    g.add_argument("--hidden", required=True, type=_number(int, "--hidden"), help="reference width H")
    g.add_argument("--batch", type=_number(int, "--batch"),
                   help="reference batch B0 in sequences (default: the recipe's ref_batch)")
    g.add_argument("--tokens", type=_number(float, "--tokens"),
                   help="reference horizon T0 in tokens, e.g. 2e6 (default: the recipe's ref_tokens)")
    g.add_argument("--out", required=True, metavar="DIR", help="output directory (re-running resumes it)")
    r = p.add_argument_group("runs")
    r.add_argument("--mixture", default="embedded", help="data mixture (default: embedded)")
    r.add_argument("--tokenizer", default="embedded-bpe-1k", help="tokenizer (default: embedded-bpe-1k)")
    r.add_argument("--seed", type=_number(int, "--seed", positive=False), default=0,
                   help="init/data seed shared by every run (default 0)")
    r.add_argument("--eval-windows", type=_number(int, "--eval-windows"), default=32,
                   help="validation windows per domain (default 32)")
    r.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    r.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    r.add_argument("--executor", choices=("local", "ray"), default="local", help="sweep executor (default local)")
    r.add_argument("--workers", type=_number(int, "--workers"), default=1, help="runs in parallel (default 1)")
    r.add_argument("--threads", type=_number(int, "--threads", positive=False), default=0,
                   help="threads per run (default: cores / workers)")
    r.add_argument("--ray-address", help="Ray cluster address (default: a local Ray)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--no-plot", action="store_true", help="skip the PNG figures")
    r.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune the recipe's reference constants; measure the horizon exponent; "
                                    "check LR transfer",
                       description="Reference tuning (see docs/tune.md). Every run is an ordinary Delphi run "
                                   "under OUT/runs; re-running a command trains only what is missing.")
    tsub = p.add_subparsers(dest="tune_command", metavar="{search,horizon,transfer}", parser_class=type(p))
    tsub.required = True

    s = tsub.add_parser("search", help="Optuna search of η0, η0,Adam, ε0, β2,0 at the reference point",
                        description="Search the reference point's constants with Optuna (seeded TPE or GP), "
                                    "trials trained in batches through the sweep executors. Writes "
                                    "tuned-recipe.toml, trials.csv, search.json and partial-dependence.png.")
    _common(s)
    s.add_argument("--trials", type=_number(int, "--trials"), default=24, help="trial budget (default 24)")
    s.add_argument("--sampler", choices=("tpe", "gp"), default="tpe", help="Optuna sampler (default tpe)")
    s.add_argument("--sampler-seed", type=_number(int, "--sampler-seed", positive=False), default=0)
    s.add_argument("--schedule", action="store_true", help="also search the warmup and decay fractions")
    s.add_argument("--space", default="",
                   help="override ranges: NAME=LOW:HIGH,... with NAME in lr0, adam_lr0, epsilon0, "
                        "one_minus_beta2_0, warmup_fraction, decay_fraction")
    s.add_argument("--parallel", type=_number(int, "--parallel"),
                   help="trials asked per batch (default: --workers)")
    s.set_defaults(func=run_search)

    h = tsub.add_parser("horizon", help="sweep the projection LR at several horizons; fit the exponent",
                        description="At --tokens × each --horizons multiplier, sweep the projection LR on a log "
                                    "grid around the recipe's LR, fit each optimum (parabola in log LR) and the "
                                    "power law η*(T) ∝ T^-exponent with a bootstrap interval. Writes "
                                    "horizon.json, horizon.csv, horizon.png.")
    _common(h)
    h.add_argument("--horizons", type=_floats("--horizons"), default=[0.25, 1.0, 4.0],
                   help="multipliers of --tokens (default 0.25,1,4)")
    h.add_argument("--points", type=_number(int, "--points"), default=5, help="LRs per sweep, odd (default 5)")
    h.add_argument("--step", type=_number(float, "--step"), default=2.0, help="LR grid factor (default 2)")
    h.add_argument("--extend", type=_number(int, "--extend", positive=False), default=2,
                   help="extra LRs past a grid edge while the lowest loss sits there (default 2)")
    h.add_argument("--fit-points", type=_number(int, "--fit-points"), default=3,
                   help="lowest points the parabola is fitted through (default 3)")
    h.add_argument("--bootstrap", type=_number(int, "--bootstrap", positive=False), default=1000)
    h.add_argument("--loss-noise", type=_number(float, "--loss-noise", positive=False), default=1e-3,
                   help="assumed run-to-run loss noise, relative (default 1e-3; pass a measured seed spread)")
    h.set_defaults(func=run_horizon_cmd)

    t = tsub.add_parser("transfer", help="local LR sweeps away from the reference: does the recipe's LR land "
                                         "within 0.5%% of the best?",
                        description="At each WIDTHxBATCHxTOKENS setting, sweep the projection LR around the "
                                    "recipe's; pass when the recipe's loss is within --tolerance of the best. "
                                    "Writes transfer.json, transfer.csv, transfer.md, transfer.png.")
    _common(t)
    t.add_argument("--settings", default=None,
                   help="WIDTHxBATCHxTOKENS,... (default: 2× width, 2× batch, 4× horizon of the reference)")
    t.add_argument("--points", type=_number(int, "--points"), default=5, help="LRs per sweep, odd (default 5)")
    t.add_argument("--step", type=_number(float, "--step"), default=2.0, help="LR grid factor (default 2)")
    t.add_argument("--extend", type=_number(int, "--extend", positive=False), default=2,
                   help="extra LRs past a grid edge while the lowest loss sits there (default 2)")
    t.add_argument("--tolerance", type=_number(float, "--tolerance", positive=False), default=0.005,
                   help="relative loss tolerance (default 0.005 = 0.5%%)")
    t.add_argument("--strict", action="store_true", help="exit 1 when any setting fails")
    t.set_defaults(func=run_transfer_cmd)


def _setup(args):
    from delphi.config import DataSpec
    from delphi.errors import DelphiError
    from delphi.sweep.executors import ExecutorSettings
    from delphi.tune.common import TuneSettings, check_point, load_recipe

    recipe, source = load_recipe(args.recipe)
    batch = args.batch if args.batch is not None else recipe.ref_batch
    if batch != int(batch):
        raise DelphiError(f"the recipe's ref_batch {batch} is not a whole number of sequences; pass --batch")
    batch = int(batch)
    tokens = float(args.tokens if args.tokens is not None else recipe.ref_tokens)
    check_point(recipe, args.hidden, batch, tokens)
    if getattr(args, "step", 2.0) <= 1:
        raise DelphiError(f"--step must be a factor > 1, got {args.step}")
    settings = TuneSettings(
        data=DataSpec(mixture=args.mixture, tokenizer=args.tokenizer), seed=args.seed,
        eval_windows_per_domain=args.eval_windows, precision=args.precision, compile=args.compile,
        executor=ExecutorSettings(kind=args.executor, workers=args.workers, threads_per_worker=args.threads,
                                  address=args.ray_address),
        progress=not args.quiet)
    return recipe, source, batch, tokens, settings


def run_search(args: argparse.Namespace) -> int:
    from delphi.tune.search import default_space, parse_space, search

    recipe, source, batch, tokens, settings = _setup(args)
    space = default_space(recipe, schedule=args.schedule)
    if args.space:
        space = parse_space(args.space, space)
    res = search(recipe, source, hidden=args.hidden, batch=batch, tokens=tokens, out_dir=args.out,
                 trials=args.trials, settings=settings, space=space, sampler=args.sampler,
                 sampler_seed=args.sampler_seed, parallel=args.parallel, plot=not args.no_plot)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        consts = ", ".join(f"{k} = {v:.4g}" for k, v in res.constants.items())
        print(f"best of {res.trials_done} trials: trial {res.best_trial}, loss {res.best_loss:.4f}  ({consts})")
        print(f"trained {res.runs_trained} run(s) this time; preset: {res.preset_path}; table: {res.table_path}"
              + (f"; plot: {res.plot_path}" if res.plot_path else ""))
    return 0


def run_horizon_cmd(args: argparse.Namespace) -> int:
    from delphi.tune.common import lr_grid
    from delphi.tune.horizon import format_horizon, run_horizon

    recipe, source, batch, tokens, settings = _setup(args)
    lr_grid(1.0, args.points, args.step)  # validate before any work
    record = run_horizon(recipe, source, hidden=args.hidden, batch=batch, tokens=tokens, out_dir=args.out,
                         settings=settings, multipliers=args.horizons, points=args.points, step=args.step,
                         extend=args.extend, fit_points=args.fit_points, bootstrap=args.bootstrap,
                         loss_noise=args.loss_noise,
                         seed=args.seed, plot=not args.no_plot)
    if args.json:
        print(json.dumps({k: v for k, v in record.items() if k != "runs"}, indent=2))
    else:
        print(format_horizon(record))
        print(f"-> {args.out}/horizon.json")
    return 0


def run_transfer_cmd(args: argparse.Namespace) -> int:
    from delphi.tune.common import lr_grid
    from delphi.tune.transfer import default_settings, format_transfer, parse_settings, run_transfer

    recipe, source, batch, tokens, settings = _setup(args)
    lr_grid(1.0, args.points, args.step)
    points = (parse_settings(args.settings) if args.settings
              else default_settings(args.hidden, batch, tokens, recipe.head_dim))
    record = run_transfer(recipe, source, points_list=points, out_dir=args.out, settings=settings,
                          points=args.points, step=args.step, extend=args.extend, tolerance=args.tolerance,
                          plot=not args.no_plot)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(format_transfer(record))
        print(f"-> {args.out}/transfer.json")
    return 1 if args.strict and record["passed"] < record["total"] else 0
