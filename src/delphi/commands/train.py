"""`delphi train`: train one run from its RunSpec (or from a recipe's budget and width)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run (RunSpec JSON, or --budget/--hidden against a recipe) into a run directory",
        description="Train one run into --out: run.json, metrics.jsonl, checkpoints/, hf/, summary.json. "
                    "Re-running resumes from the newest intact checkpoint; a finished run is not retrained. "
                    "Under torchrun the same command trains data-parallel (FSDP2; DELPHI_PARALLEL=ddp for DDP).",
    )
    p.add_argument("spec", nargs="?", metavar="RUN.json", help="the run's RunSpec (e.g. a run.json or a planned spec)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write (and resume from)")
    p.add_argument("--budget", metavar="FLOPS", help="instead of RUN.json: the recipe candidate at this budget ...")
    p.add_argument("--hidden", metavar="H", help="... with this hidden size (see `delphi plan --budget FLOPS`)")
    p.add_argument("--recipe", default="delphi", help="recipe for --budget/--hidden (default: delphi; cpu for CPU ladders)")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    p.add_argument("--steps", type=int, help="override the number of training steps (e.g. a quick smoke run)")
    p.add_argument("--eval-every", type=int, help="override the evaluation interval in steps")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="override the spec's precision")
    p.add_argument("--compile", choices=("auto", "on", "off"), help="override the spec's torch.compile setting")
    p.add_argument("--no-resume", action="store_true", help="discard checkpoints and metrics in --out and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar: a plain line every ~5%% of the run")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_train)


def _spec_from_args(args):
    import dataclasses
    from pathlib import Path

    from delphi.config import RunSpec
    from delphi.errors import DelphiError

    for flag, value, lo in (("--seed", args.seed, 0), ("--steps", args.steps, 1), ("--eval-every", args.eval_every, 0)):
        if value is not None and value < lo:
            raise DelphiError(f"{flag} must be an integer ≥ {lo}, got {value}")
    if args.spec and (args.budget or args.hidden):
        raise DelphiError("give either RUN.json or --budget/--hidden, not both")
    if args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise DelphiError(f"run spec {path} not found")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DelphiError(f"run spec {path}: cannot read it ({e.strerror or e})") from None
        spec = RunSpec.from_json(raw, where=str(path), check_files=True)
    elif args.budget and args.hidden:
        spec = _spec_from_recipe(args.recipe, args.budget, args.hidden, args.seed or 0)
    else:
        raise DelphiError("give a RUN.json, or both --budget and --hidden")
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.steps is not None:
        overrides["train_steps"] = args.steps
    if args.eval_every is not None:
        overrides["eval_every"] = args.eval_every
    if args.precision:
        overrides["precision"] = args.precision
    if args.compile:
        overrides["compile"] = args.compile
    return dataclasses.replace(spec, **overrides) if overrides else spec


def _spec_from_recipe(recipe_name: str, budget: str, hidden: str, seed: int):
    from delphi.config import DataSpec
    from delphi.data.tokenizers import TOKENIZER_FOR_VOCAB
    from delphi.errors import DelphiError
    from delphi.recipe import check_budget, get_recipe

    try:
        C = check_budget(float(budget))
        H = int(hidden)
    except ValueError:
        raise DelphiError(f"--budget must be a number and --hidden an integer, got {budget!r} and {hidden!r}") from None
    recipe = get_recipe(recipe_name)
    cands = recipe.candidates(C)
    for c in cands:
        if c.shape.hidden_size == H:
            data = DataSpec(tokenizer=TOKENIZER_FOR_VOCAB.get(recipe.vocab_size, DataSpec().tokenizer))
            return c.to_run_spec(seed=seed, data=data)
    widths = ", ".join(str(c.shape.hidden_size) for c in cands) or "none"
    raise DelphiError(f"recipe {recipe_name!r} has no candidate with hidden size {H} at budget {C:g}; "
                      f"widths there: {widths}")


def run_train(args: argparse.Namespace) -> int:
    from delphi.train import train_run

    spec = _spec_from_args(args)
    summary = train_run(spec, args.out, progress=not args.quiet, resume=not args.no_resume)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        loss = summary.get("loss")
        bpb = summary.get("bpb")
        line = f"{summary['name']}: {summary['status']}"
        if summary.get("reason"):
            line += f" ({summary['reason']})"
        if loss is not None:
            line += f", macro loss {loss:.4f} nats/token, {bpb:.4f} bits/byte"
        print(line + f" -> {args.out}")
    return 0 if summary["status"] == "completed" else 1

