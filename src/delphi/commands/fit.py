"""`delphi fit`: IsoFLOP optima (Approach 2), the loss law with bootstrap intervals, its backtest
on the lowest budgets, and the parametric fit L(N, D) (Approach 3). Thin layer over `delphi.fit`; numpy/scipy/pandas are
imported inside the handlers so the CLI starts instantly."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit scaling laws to a runs table (isoflop, loss-law, backtest, parametric)",
                       description="Fit scaling laws to a runs table: CSV, Parquet, JSON Lines, or a suite "
                                   "directory of summary.json files.")
    fs = p.add_subparsers(dest="fit_command", metavar="KIND", parser_class=type(p))
    p.set_defaults(func=lambda args: _usage(p))

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--metric", default="loss",
                        help="loss column to fit (default: loss, the macro validation loss; e.g. bpb, loss/prose)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--plot", metavar="FILE.png", help="draw the fit to this image file")

    compute = argparse.ArgumentParser(add_help=False)
    compute.add_argument("--compute", choices=("total", "non-embedding", "deepseek-m"), default="total",
                         help="what C means for the laws: total FLOPs (default; LM head included), non-embedding "
                              "FLOPs (without the LM head), or DeepSeek's M = 72·n_layer·d² + 12·n_layer·d·l_seq "
                              "per token, times tokens (needs the shape columns a suite's runs.csv has)")

    iso = fs.add_parser("isoflop", parents=[common, compute], help="per-budget parabolas -> compute-optimal points and allocation laws",
                        description="Approach 2: per-budget Huber parabolas in log10(tokens), their vertices "
                                    "(D*, N*, L*), and the allocation laws D*(C) = A·C^alpha, N*(C) = G·C^a.")
    iso.add_argument("runs", metavar="RUNS", help="runs table file or suite directory")
    iso.add_argument("--exclude-flagged", action="store_true",
                     help="leave buckets whose optimum lies outside their token range out of the laws")
    iso.set_defaults(func=run_isoflop)

    law = fs.add_parser("loss-law", parents=[common, compute], help="L*(C) = E + A·C^-alpha through the optima, with bootstrap intervals",
                        description="Fit L*(C) = E + A·C^-alpha to compute-optimal points (OPTIMA: columns flops, "
                                    "loss; the JSON of 'delphi fit isoflop --json'; or a runs table, reduced to "
                                    "optima first), with bootstrap and leave-one-out spreads of the predictions.")
    law.add_argument("optima", metavar="OPTIMA", help="optima table, isoflop JSON, runs table, or suite directory")
    law.add_argument("--predict", nargs="+", metavar="FLOPS", default=[], help="compute budgets to predict, e.g. 1e21 1e22")
    law.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000; 0: none)")
    law.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    law.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95: 2.5/97.5%%)")
    law.add_argument("--no-asymptote", action="store_true", help="fit the pure power law A·C^-alpha (E = 0)")
    law.add_argument("--ceiling", type=float, metavar="H",
                     help="fit the ceiling form 1/L = 1/H + C^alpha/A (the power law capped by H, e.g. the unigram "
                          "loss of the metric: see docs/fit.md)")
    law.add_argument("--overtrain", nargs="+", metavar="S", default=[],
                     help="off-optimal penalty for training S× the optimal tokens (needs a runs table)")
    law.add_argument("--exclude-flagged", action="store_true",
                     help="leave out buckets whose optimum lies outside their token range")
    law.set_defaults(func=run_loss_law)

    bt = fs.add_parser("backtest", parents=[common, compute], help="fit the loss law on the lowest budgets, forecast the higher ones",
                       description="Backtest: for each window of the lowest k budgets (k from --min-budgets), fit "
                                   "the IsoFLOP optima and the loss law on those budgets only, forecast every higher "
                                   "budget's optimum and compare it with that budget's own IsoFLOP optimum. Prints "
                                   "residual against extrapolation factor and how often the intervals cover.")
    bt.add_argument("runs", metavar="RUNS", help="runs table file or suite directory (as for 'delphi fit isoflop')")
    bt.add_argument("--min-budgets", type=int, default=4,
                    help="smallest number of budgets to fit on (default 4: the 3-parameter law needs a 4th "
                         "optimum to leave a residual for its interval)")
    bt.add_argument("--form", nargs="+", choices=("asymptote", "power", "ceiling"), default=["asymptote"],
                    help="loss-law form(s): asymptote = E + A·C^-alpha (default), power = A·C^-alpha, "
                         "ceiling = 1/(1/H + C^alpha/A) (needs --ceiling)")
    bt.add_argument("--ceiling", type=float, metavar="H", help="H of the ceiling form (e.g. the unigram loss)")
    bt.add_argument("--format", choices=("delphi", "chinchilla"), default="delphi",
                    help="input columns: delphi (flops, params, tokens, metric; default) or chinchilla (Epoch AI's "
                         "reconstruction: 'Model Size', 'Training FLOP', 'loss'; runs snapped to the paper's nine "
                         "budgets, tokens = budget/(6N))")
    bt.add_argument("--budgets", nargs="+", metavar="FLOPS", default=[],
                    help="snap every run to the nearest of these budgets (log compute) before bucketing")
    bt.add_argument("--snap-tolerance", type=float, metavar="DECADES",
                    help="with --budgets/--format chinchilla: drop runs farther than this from every budget "
                         "(chinchilla default 0.1; otherwise none)")
    bt.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per fit (default 1000; 0: none)")
    bt.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    bt.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95: 2.5/97.5%%)")
    bt.add_argument("--exclude-flagged", action="store_true",
                    help="leave buckets whose optimum lies outside their token range out of every fit")
    bt.set_defaults(func=run_backtest)

    par = fs.add_parser("parametric", parents=[common], help="L(N, D) = E + A/N^alpha + B/D^beta (Epoch AI's method)",
                        description="Approach 3: Huber (delta 1e-3) on log loss, log-sum-exp parametrisation, "
                                    "L-BFGS from Chinchilla's grid of 4,500 starts; bootstrap intervals.")
    par.add_argument("runs", metavar="RUNS", help="runs table file or suite directory (columns params, tokens, loss)")
    par.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the runs (default 200; 0: none)")
    par.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    par.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    par.add_argument("--optimal", nargs="+", metavar="FLOPS", default=[],
                     help="print compute-optimal N*, D* (C = 6ND) at these budgets")
    par.set_defaults(func=run_parametric)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _floats(values: list[str], what: str) -> list[float]:
    from delphi.errors import DelphiError

    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise DelphiError(f"{what}: {v!r} is not a number") from None
    return out


def _check_positive(values: list[float], what: str) -> None:
    from delphi.errors import DelphiError

    for v in values:
        if not v > 0 or v == float("inf"):
            raise DelphiError(f"{what}: {v!r} must be positive and finite")



def _check_bootstrap_options(args) -> None:
    from delphi.errors import DelphiError

    if args.bootstrap < 0:
        raise DelphiError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0 < args.confidence < 1:
        raise DelphiError(f"--confidence must be in (0, 1), got {args.confidence}")

def _jsonable(v):
    """numpy scalars -> Python numbers, non-finite floats -> null (strict JSON for other tools)."""
    import math

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _print_json(d: dict) -> None:
    print(json.dumps(_jsonable(d), indent=2, allow_nan=False))


def _note(text: str) -> None:
    if text:
        print(f"note: {text}", file=sys.stderr)


def _warn_flags(flags) -> None:
    """Each flag of a fit (`delphi.fit.flags.Flag`) as a `warning:` line on stderr (the JSON
    output carries them under "flags")."""
    for f in flags:
        if f is not None:
            print(f"warning: {f.text} [{f.code}]", file=sys.stderr)


def _rmse_text(law) -> str:
    """The allocation law's residual, or why it has none (two points fit exactly)."""
    if law.n_points <= 2:
        return "through 2 budgets exactly: no residual to judge it by"
    return f"rmse {law.rmse_log10:.3g} dex over {law.n_points} budgets"


# ---- isoflop -------------------------------------------------------------------------------

def run_isoflop(args) -> int:
    from delphi.fit.isoflop import FLAG_TEXT, fit_isoflop
    from delphi.fit.runs_table import excluded_note, load_runs_table

    table = load_runs_table(args.runs, metric=args.metric)
    iso = fit_isoflop(table, args.metric, exclude_flagged=args.exclude_flagged, compute=args.compute)
    if args.plot:
        from delphi.fit.plots import plot_isoflop

        plot_isoflop(iso, args.plot)
    if args.json:
        _print_json(iso.to_dict())
        _note(excluded_note(table))
        _warn_flags(iso.flags)
        return 0
    other = args.compute != "total"
    print(f"IsoFLOP fit of {args.metric!r} ({len(table)} runs, {len(iso.buckets)} buckets)"
          + (f"; C* in {args.compute} compute" if other else ""))
    print(f"{'flops':>10} {'runs':>5} {'D* tokens':>11} {'N* params':>11} {'L*':>9}"
          + (f" {'C* ' + args.compute:>24}" if other else "") + "  flags")
    for b in iso.buckets:
        if b.usable:
            flags = "; ".join(FLAG_TEXT[f] for f in b.flags)
            print(f"{b.flops:>10.3g} {b.n_runs:>5} {b.optimal_tokens:>11.4g} {b.optimal_params:>11.4g} "
                  f"{b.optimal_loss:>9.4f}" + (f" {b.optimal_compute:>24.4g}" if other else "") + f"  {flags}")
        else:
            print(f"{b.flops:>10.3g} {b.n_runs:>5} {'skipped: ' + b.skipped}")
    if iso.tokens_law is None:
        print("allocation laws: none (fewer than two budgets with a minimum; see the warning below)")
    else:
        t, p = iso.tokens_law, iso.params_law
        print(f"D*(C) = {t.A:.4g} · C^{t.alpha:.4f}   ({_rmse_text(t)})")
        print(f"N*(C) = {p.A:.4g} · C^{p.alpha:.4f}   ({_rmse_text(p)})")
        print(f"sum of exponents {t.alpha + p.alpha:.4f} (≈ 1 when C ∝ N·D)")
        laws = iso.allocation_in_compute()
        if laws is not None:
            print(f"against {args.compute} compute: D*(C) = {laws[0].A:.4g} · C^{laws[0].alpha:.4f}, "
                  f"N*(C) = {laws[1].A:.4g} · C^{laws[1].alpha:.4f}")
    _note(excluded_note(table))
    _warn_flags(iso.flags)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# ---- loss law ------------------------------------------------------------------------------

def _load_optima(args):
    """-> (flops, loss, isoflop fit or None, runs table or None)."""
    from pathlib import Path

    import numpy as np

    from delphi.errors import DelphiError
    from delphi.fit.isoflop import fit_isoflop
    from delphi.fit.runs_table import read_table, validate_table

    p = Path(args.optima)
    if p.is_file() and p.suffix.lower() == ".json" and not p.read_text().lstrip().startswith("["):
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DelphiError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or "buckets" not in d:
            raise DelphiError(f"{p}: expected the JSON of 'delphi fit isoflop --json' (an object with 'buckets')")
        buckets = [b for b in d["buckets"] if not (args.exclude_flagged and b.get("flags"))]
        if args.compute != d.get("compute", "total"):
            raise DelphiError(f"{p}: its optima are in {d.get('compute', 'total')!r} compute; --compute "
                              f"{args.compute} needs the runs table (or the isoflop JSON fitted with it)")
        key = "flops" if d.get("compute", "total") == "total" else "optimal_compute"
        try:
            C = np.array([float(b[key]) for b in buckets])
            L = np.array([float(b["optimal_loss"]) for b in buckets])
        except (KeyError, TypeError, ValueError) as e:
            raise DelphiError(f"{p}: bucket without a numeric flops/optimal_loss ({e})") from None
        return C, L, None, None
    raw = read_table(p)
    if {"tokens", "params"} <= set(raw.columns):  # a runs table: reduce to optima first
        table = validate_table(raw, metric=args.metric, where=str(p))
        iso = fit_isoflop(table, args.metric, exclude_flagged=args.exclude_flagged, compute=args.compute)
        if len(iso.buckets) > 1 and all(b.n_runs == 1 for b in iso.buckets) and args.compute == "total":
            _note("every budget has a single run: the rows are read as the optima themselves")
            return table["flops"].to_numpy(float), table[args.metric].to_numpy(float), None, table
        opt = iso.optima()
        C, L = opt["compute"], opt["loss"]
        if len(C) == 0:
            from delphi.fit.isoflop import explain_unused

            raise DelphiError(f"{p}: no budget gave an optimum ({explain_unused(iso.buckets, args.exclude_flagged)}); "
                              f"'delphi fit isoflop {p}' lists each budget")
        return C, L, iso, table
    if args.compute != "total":
        raise DelphiError(f"{p}: --compute {args.compute} needs the runs (a runs table with params, tokens and "
                          "the shape columns, or a suite directory), not a table of optima")
    table = validate_table(raw, metric=args.metric, require=("flops",), where=str(p))
    return table["flops"].to_numpy(float), table[args.metric].to_numpy(float), None, table


def run_loss_law(args) -> int:
    from delphi.errors import DelphiError
    from delphi.fit.loss_law import fit_loss_law
    from delphi.fit.runs_table import excluded_note

    targets = _floats(args.predict, "--predict")
    _check_positive(targets, "--predict")
    overtrain = _floats(args.overtrain, "--overtrain")
    _check_positive(overtrain, "--overtrain")
    _check_bootstrap_options(args)
    C, L, iso, table = _load_optima(args)
    if iso is not None:  # from a runs table the vertices' own uncertainty enters the interval too
        from delphi.fit.isoflop import fit_law_on_optima

        law = fit_law_on_optima(iso, bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                                asymptote=not args.no_asymptote, ceiling=args.ceiling)
    else:
        law = fit_loss_law(C, L, bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                           asymptote=not args.no_asymptote, ceiling=args.ceiling)
    pure = fit_loss_law(C, L, bootstrap=0, asymptote=False) if not args.no_asymptote and len(C) >= 2 else None
    penalty = None
    if overtrain:
        if iso is None:
            raise DelphiError("--overtrain needs the runs (a runs table or suite directory), not only optima")
        if args.compute != "total":  # the penalty's curvature is fitted against the planned budgets
            raise DelphiError("--overtrain works with --compute total only")
        penalty = iso.penalty()
    if args.plot:
        from delphi.fit.plots import plot_loss_law

        plot_loss_law(law, args.plot, targets=targets, pure=pure, metric=args.metric, iso=iso)
    from delphi.fit.runs_table import duplicates_flag

    # The runs' (or the optima table's) flags, then the law's.
    flags = [*(iso.flags if iso is not None else [f for f in [duplicates_flag(table)] if table is not None and f]),
             *law.flags]
    d = law.to_dict(predict_at=targets)
    d["flags"] = [f.to_dict() for f in flags]
    d["compute"] = args.compute
    if pure is not None:
        d["pure_power_law"] = {"A": pure.A, "alpha": pure.alpha, "sse": pure.sse, "rmse": pure.rmse}
    if penalty is not None:
        d["off_optimal"] = {**penalty.to_dict(), "table": penalty.table(overtrain, targets or [max(C)], law)}
    note = excluded_note(table) if table is not None else ""
    _note(law.note or "")
    if args.json:
        _print_json(d)
        _note(note)
        _warn_flags(flags)
        return 0
    form = law.form.replace("*", "·")
    print(f"loss law L*(C) = {form} on {law.n_points} optima of {args.metric!r}"
          + (f" (C: {args.compute} compute)" if args.compute != "total" else ""))
    print(f"  H = {law.ceiling:.5g}   A = {law.A:.5g}   alpha = {law.alpha:.5g}" if law.ceiling is not None
          else f"  E = {law.E:.5g}   A = {law.A:.5g}   alpha = {law.alpha:.5g}")
    print(f"  objective: sum of squared residuals {law.sse:.4g} (rmse {law.rmse:.4g}); {law.status}"
          + ("; E reached min L* (weakly identified)" if law.E_at_upper_bound else ""))
    if pure is not None:
        print(f"  pure power law A·C^-alpha: A = {pure.A:.5g}, alpha = {pure.alpha:.5g}, rmse {pure.rmse:.4g}")
    if targets:
        pct = f"{100 * (1 - law.confidence) / 2:g}-{100 - 100 * (1 - law.confidence) / 2:g}%"
        print(f"{'flops':>10} {'prediction':>11} {('bootstrap ' + pct):>23} {'leave-one-out':>21}")
        for r in d["predictions"]:
            ci = f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if r["ci_low"] is not None else "-"
            loo = f"[{r['loo_min']:.4f}, {r['loo_max']:.4f}]" if r["loo_min"] is not None else "-"
            print(f"{r['flops']:>10.3g} {r['loss']:>11.4f} {ci:>23} {loo:>21}")
    if penalty is not None:
        print("off-optimal penalty (training s× the optimal tokens at the same compute):")
        print(f"{'flops':>10} {'s':>6} {'loss gap':>10} {'extra compute':>14}")
        for r in d["off_optimal"]["table"]:
            print(f"{r['flops']:>10.3g} {r['s']:>6.3g} {r['loss_gap']:>10.4g} {100 * r['extra_compute']:>13.1f}%")
    _note(note)
    _warn_flags(flags)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# ---- backtest ------------------------------------------------------------------------------

def run_backtest(args) -> int:
    from delphi.errors import DelphiError
    from delphi.fit.backtest import CHINCHILLA_BUDGETS, CHINCHILLA_TOLERANCE, adapt_table, backtest, snap_budgets
    from delphi.fit.runs_table import excluded_note, read_table, validate_table

    budgets = _floats(args.budgets, "--budgets")
    _check_positive(budgets, "--budgets")
    _check_bootstrap_options(args)
    if args.min_budgets < 2:
        raise DelphiError(f"--min-budgets must be at least 2, got {args.min_budgets}")
    raw = adapt_table(read_table(args.runs), args.format, where=args.runs)
    chin = args.format == "chinchilla"
    if chin and "tokens" not in raw.columns:
        raw["tokens"] = 1.0  # placeholder: recomputed from the snapped budget below
    table = validate_table(raw, metric=args.metric, where=args.runs)
    if budgets or chin:
        tol = args.snap_tolerance if args.snap_tolerance is not None else CHINCHILLA_TOLERANCE if chin else None
        table = snap_budgets(table, budgets or CHINCHILLA_BUDGETS, tolerance=tol, recompute_tokens=chin)
    elif args.snap_tolerance is not None:
        raise DelphiError("--snap-tolerance needs --budgets (or --format chinchilla)")
    bt = backtest(table, args.metric, min_budgets=args.min_budgets, forms=args.form, bootstrap=args.bootstrap,
                  seed=args.seed, confidence=args.confidence, exclude_flagged=args.exclude_flagged,
                  compute=args.compute, ceiling=args.ceiling)
    if args.plot:
        from delphi.fit.plots import plot_backtest

        plot_backtest(bt, args.plot)
    for n in bt.notes:
        _note(n)
    from delphi.fit.runs_table import duplicates_flag

    _warn_flags([duplicates_flag(table)])
    if args.json:
        _print_json(bt.to_dict())
        _note(excluded_note(table))
        return 0
    pct = f"{100 * (1 - bt.confidence) / 2:g}-{100 - 100 * (1 - bt.confidence) / 2:g}%"
    print(f"backtest of the loss law on {len(bt.budgets)} IsoFLOP optima of {args.metric!r} "
          f"({bt.budgets[0]:.3g} to {bt.budgets[-1]:.3g} FLOPs"
          + (f"; law fitted against {bt.compute} compute" if bt.compute != "total" else "")
          + "); residual = 100·(actual − forecast)/forecast")
    for s in bt.skipped:
        print(f"  bucket {s['flops']:.3g} left out: {s['reason']}")
    for form in bt.forms:
        from delphi.fit.backtest import FORMS

        shown = FORMS[form].replace("*", "·") + (f" (H = {args.ceiling:g})" if form == "ceiling" else "")
        print(f"\n{form}: L*(C) = {shown}")
        print(f"{'fitted':>6} {'up to':>9} {'target':>9} {'factor':>7} {'forecast':>9} {('interval ' + pct):>21} "
              f"{'actual':>8} {'resid%':>7} inside  {'D*/actual':>9} {'placed%':>8}")
        for r in bt.rows:
            if r.form != form:
                continue
            ci = f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None else "-"
            inside = "-" if r.inside is None else "yes" if r.inside else "NO"
            placed = f"{r.placed_residual_pct:>+8.2f}" + ("" if r.placed_in_range else "*")
            print(f"{len(r.fit_budgets):>6} {r.fit_budgets[-1]:>9.3g} {r.target_budget:>9.3g} {r.factor:>6.1f}x "
                  f"{r.forecast:>9.4f} {ci:>21} {r.actual:>8.4f} {r.residual_pct:>+7.2f} {inside:<6} "
                  f"{r.tokens_ratio:>9.2f} {placed}")
        print(f"{'factor':>13} {'rows':>5} {'mean resid%':>12} {'mean |resid|%':>14} {'max |resid|%':>13} {'coverage':>9} "
              f"{'mean placed%':>13}")
        for s in bt.by_factor():
            if s.form != form:
                continue
            hi = "" if s.factor_high == float("inf") else f"{s.factor_high:g}"
            cov = "-" if s.coverage is None else f"{100 * s.coverage:.0f}%"
            placed = "-" if s.mean_placed_residual_pct is None else f"{s.mean_placed_residual_pct:+.2f}"
            print(f"{f'[{s.factor_low:g}, {hi})':>13} {s.n:>5} {s.mean_residual_pct:>+12.2f} {s.mean_abs_residual_pct:>14.2f} "
                  f"{s.max_abs_residual_pct:>13.2f} {cov:>9} {placed:>13}")
        cov = bt.coverage(form)
        n_ci = sum(r.inside is not None for r in bt.rows if r.form == form)
        print(f"coverage: {'-' if cov is None else f'{100 * cov:.0f}%'} of {n_ci} actuals inside their "
              f"{100 * bt.confidence:g}% interval")
    print("\nD*/actual: the window's allocation law D*(C) over the target's fitted D*; placed%: the residual "
          "a held-out run trained at those tokens would show (the target's parabola there against the "
          "forecast); * where the parabola is extrapolated beyond the target's runs")
    _note(excluded_note(table))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# ---- parametric ----------------------------------------------------------------------------

def run_parametric(args) -> int:
    from delphi.errors import DelphiError
    from delphi.fit.parametric import PARAM_NAMES, fit_parametric
    from delphi.fit.runs_table import duplicates_flag, excluded_note, load_runs_table

    optimal = _floats(args.optimal, "--optimal")
    _check_positive(optimal, "--optimal")
    if args.bootstrap < 0:
        raise DelphiError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    table = load_runs_table(args.runs, metric=args.metric, require=("params", "tokens"))
    fit = fit_parametric(table["params"], table["tokens"], table[args.metric], bootstrap=args.bootstrap,
                         seed=args.seed, confidence=args.confidence)
    if args.plot:
        from delphi.fit.plots import plot_parametric

        plot_parametric(fit, table["params"].to_numpy(float), table["tokens"].to_numpy(float),
                        table[args.metric].to_numpy(float), args.plot, metric=args.metric)
    flags = [f for f in [duplicates_flag(table), *fit.flags] if f is not None]
    d = fit.to_dict()
    d["flags"] = [f.to_dict() for f in flags]
    if optimal:
        if any(f.code == "exponent_not_positive" for f in fit.flags):
            _warn_flags(flags)
            raise DelphiError("--optimal: the fit has an exponent <= 0 (see the warning above), so it has no "
                              "compute-optimal allocation; fix the runs first")
        N, D = fit.compute_optimal(optimal)
        d["compute_optimal"] = [{"flops": c, "params": float(n), "tokens": float(t), "loss": float(fit.predict(n, t))}
                                for c, n, t in zip(optimal, N, D)]
    if args.json:
        _print_json(d)
        _note(excluded_note(table))
        _warn_flags(flags)
        return 0
    print(f"L(N, D) = E + A/N^alpha + B/D^beta on {fit.n_runs} runs of {args.metric!r}")
    ci = fit.ci
    for k in PARAM_NAMES:
        lo_hi = f"   [{ci[k][0]:.4g}, {ci[k][1]:.4g}]" if k in ci else ""
        print(f"  {k:>5} = {getattr(fit, k):.5g}{lo_hi}")
    if ci:
        print(f"  ({100 * fit.confidence:g}% bootstrap intervals, {len(fit.bootstrap_params)} resamples)")
    print(f"  Huber loss {fit.huber_loss:.6g} (delta {fit.delta:g}); {fit.n_starts_at_best} of {fit.n_starts} "
          f"starts reached the best; {fit.status}")
    for r in d.get("compute_optimal", []):
        print(f"  C = {r['flops']:.3g}: N* = {r['params']:.4g}, D* = {r['tokens']:.4g}, L = {r['loss']:.4f}")
    _note(excluded_note(table))
    _warn_flags(flags)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
