"""`delphi data prepare` (tokenise a mixture into cached shards) and `delphi data info`."""

from __future__ import annotations

import argparse
import json
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mixture", default="embedded",
                   help="built-in mixture ('embedded', 'shared-corpus') or a mixture file (.toml/.json)")
    p.add_argument("--tokenizer", default="embedded-bpe",
                   help="'embedded-bpe', 'llama3', or a path to a tokenizer.json")
    p.add_argument("--cache-dir", help="shard cache (default: $DELPHI_CACHE/data or ~/.cache/delphi/data)")
    p.add_argument("--json", action="store_true", help="print the per-domain summary as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare and inspect tokenised training data",
                       description="Tokenise a mixture into cached token shards, or show what a mixture holds.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    prep = dsub.add_parser("prepare", help="tokenise a mixture into cached shards (no work if cached)")
    _common(prep)
    prep.add_argument("--workers", type=int, default=None, help="tokeniser processes (default: CPU cores)")
    prep.add_argument("--skip-bad", action="store_true",
                      help="skip malformed records (counted in the summary) instead of stopping at the first")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.set_defaults(func=run_prepare)
    info = dsub.add_parser("info", help="domains, weights, sources and (if prepared) token counts of a mixture")
    _common(info)
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _spec(args):
    from delphi.config import DataSpec

    return DataSpec(mixture=args.mixture, tokenizer=args.tokenizer, cache_dir=args.cache_dir)


def run_prepare(args: argparse.Namespace) -> int:
    from delphi.data import prepare_data
    from delphi.errors import DelphiError

    if args.workers is not None and args.workers < 1:
        raise DelphiError(f"--workers must be at least 1, got {args.workers}")
    show = not (args.no_progress or args.json)
    prepared = prepare_data(_spec(args), progress=show, workers=args.workers, skip_bad=args.skip_bad)
    if not args.json and not (show and prepared.built):  # prepare_data printed it when it built shards
        prepared.print_summary()
    if args.json:
        json.dump({"summary": prepared.summary(), "tokens_before_repeat": prepared.tokens_before_repeat()},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from delphi.data.shards import cached_data, _plan

    spec = _spec(args)
    mixture, tokenizer, root, items = _plan(spec)
    prepared = cached_data(spec)
    if args.json:
        out = {"mixture": mixture.name, "source": mixture.source, "tokenizer": tokenizer.name,
               "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id, "cache": str(root),
               "domains": [{"name": d.name, "weight": d.weight, "train": list(d.train),
                            "validation": list(d.validation), "text_field": d.text_field} for d in mixture.domains],
               "prepared": prepared is not None}
        if prepared is not None:
            out["summary"] = prepared.summary()
            out["tokens_before_repeat"] = prepared.tokens_before_repeat()
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"mixture {mixture.name} ({mixture.source})")
    print(f"tokenizer {tokenizer.name}: vocab {tokenizer.vocab_size:,}, eos id {tokenizer.eos_id}")
    for d in mixture.domains:
        print(f"  {d.name:<10} weight {d.weight:.3f}  train {', '.join(d.train)}")
        print(f"  {'':<10} {'':<12}  validation {', '.join(d.validation)}")
    if prepared is None:
        done = sum((out / "meta.json").exists() for *_, out in items)
        print(f"not prepared ({done} of {len(items)} shards cached in {root}); run 'delphi data prepare'")
    else:
        from rich.console import Console

        prepared.print_summary(Console())
    return 0
