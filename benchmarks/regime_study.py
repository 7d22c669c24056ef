"""Train a set of IsoFLOP points outside a suite's plan, to study what a regime's losses depend on.

    python benchmarks/regime_study.py OUT_DIR POINT [POINT ...] [--suite tiny] [--recipe KEY=VALUE ...]

A POINT is `BUDGET:WIDTH` (the recipe's candidate) or `BUDGET:WIDTH:BATCH` (the same model and
tokens, trained at another batch size, with the recipe's hyperparameters for that batch). Recipe
constants can be overridden (`--recipe target_steps=1024 min_batch=1`). The runs take the suite's
data, eval and training settings, train with the suite's executor (long-lived workers, longest
first) into OUT_DIR/runs, and OUT_DIR/runs.csv is rewritten with every finished run
(`delphi fit backtest OUT_DIR/runs.csv` reads it). Re-running skips finished runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from delphi.recipe.presets import recipe_from_table
from delphi.sweep.executors import ExecutorSettings, execute
from delphi.sweep.results import collect, write_table
from delphi.sweep.suite import load_suite


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("points", nargs="+")
    ap.add_argument("--suite", default="tiny")
    ap.add_argument("--recipe", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix for run names (keeps variants apart)")
    args = ap.parse_args()

    suite = load_suite(args.suite)
    overrides = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.recipe)}
    recipe = recipe_from_table({"preset": suite.recipe.name, **overrides})  # type- and range-checked there
    suite = dataclasses.replace(suite, recipe=recipe)
    specs = []
    for point in args.points:
        parts = point.split(":")
        budget, width = float(parts[0]), int(parts[1])
        cand = recipe.candidate(budget, width)
        if cand is None:
            print(f"skip {point}: the recipe rejects width {width} at {budget:.3g}")
            continue
        if len(parts) > 2:
            batch = int(parts[2])
            steps = round(cand.target_tokens / (batch * recipe.seq_len))
            cand = dataclasses.replace(cand, batch_size=batch, train_steps=steps,
                                       optimizer=recipe.hyperparams(batch, cand.target_tokens, width),
                                       name=recipe.run_name(budget, cand.shape, batch))
        name = cand.name + (f"-{args.tag}" if args.tag else "")
        specs.append(suite.run_spec(cand, seed=args.seed, role="grid", name=name))
    execute(specs, args.out / "runs", ExecutorSettings(workers=args.workers), label="study runs")
    table = collect(args.out / "runs")
    write_table(table, args.out / "runs.csv")
    cols = [c for c in ("name", "budget", "hidden_size", "num_layers", "batch_size", "train_steps", "tokens", "loss")
            if c in table.columns]
    print(table[cols].sort_values(["budget", "hidden_size"]).to_string(index=False))


if __name__ == "__main__":
    main()
