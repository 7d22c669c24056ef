"""`delphi tune search`: search the reference point's hyperparameters with Optuna.

Delphi tuned its small reference model (width, B0, T0) exhaustively with Vizier and transferred
the result with explicit rules. This is the same step at any scale: at the reference point
(hidden H, batch B0, horizon T0) every trial is one training run whose optimizer is the recipe's
with the searched constants (η0, η0,Adam, ε0, β2,0; optionally the WSD warmup/decay fractions).
At the reference point the transfer rules are the identity, so the trial's run uses exactly the
constants under test.

Ask and tell, in batches: ask `parallel` trials, build their RunSpecs, train them as one batch
through the sweep executors (local processes or Ray), tell the losses. The study lives on disk
(an Optuna journal file) next to the runs, so an interrupted search resumes: trials that were
asked but never told are re-run by name (the executor skips or resumes their runs) and told; a
finished search re-run does no training. The sampler's own random state is not persisted, so a
resumed search may propose different later trials than an uninterrupted one would.

Outputs in the search directory: `tuned-recipe.toml` (a `[recipe]` section: the base preset plus
the tuned constants, usable in a suite file or as `--recipe` of the other tune commands),
`trials.csv`, `search.json`, `partial-dependence.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, atomic_write_text, json_text
from delphi.recipe import Recipe
from delphi.tune.common import TuneSettings, build_spec, check_point, completed_loss, prepare, run_specs, say


@dataclass(frozen=True)
class Param:
    """One searched dimension. `name` is the Optuna parameter; `constant` the Recipe field it sets
    (β2,0 is searched as 1 − β2,0 on a log scale, where its effect is roughly uniform)."""

    name: str
    constant: str
    low: float
    high: float
    log: bool = True

    def to_constant(self, value: float) -> float:
        return 1.0 - value if self.name == "one_minus_beta2_0" else value

    def from_constant(self, value: float) -> float:
        return 1.0 - value if self.name == "one_minus_beta2_0" else value


PARAM_CONSTANTS = {"lr0": "lr0", "adam_lr0": "adam_lr0", "epsilon0": "epsilon0", "one_minus_beta2_0": "beta2_0",
                   "warmup_fraction": "warmup_fraction", "decay_fraction": "decay_fraction"}


def default_space(recipe: Recipe, schedule: bool = False) -> list[Param]:
    """Log ranges around the recipe's values: LRs ×/÷ 8 (capped at the recipe's LR cap, above
    which the recipe would clip them), ε0 over 1e-10…1e-6, β2,0 over 0.9…0.9999 (the recipe's β2
    bounds); with `schedule`, warmup 0–0.3 and decay 0.05–0.5 of the run."""
    cap = recipe.lr_cap
    space = [
        Param("lr0", "lr0", min(recipe.lr0 / 8, cap / 2), min(recipe.lr0 * 8, cap)),
        Param("adam_lr0", "adam_lr0", min(recipe.adam_lr0 / 8, cap / 2), min(recipe.adam_lr0 * 8, cap)),
        Param("epsilon0", "epsilon0", 1e-10, 1e-6),
        Param("one_minus_beta2_0", "beta2_0", 1.0 - recipe.beta2_max, 1.0 - recipe.beta2_min),
    ]
    if schedule:
        space += [Param("warmup_fraction", "warmup_fraction", 0.0, 0.3, log=False),
                  Param("decay_fraction", "decay_fraction", 0.05, 0.5, log=False)]
    return space


def parse_space(text: str, space: list[Param]) -> list[Param]:
    """Override ranges: 'lr0=1e-3:1e-1,adam_lr0=1e-4:1e-2' (one_minus_beta2_0 for β2,0)."""
    by_name = {p.name: p for p in space}
    out = dict(by_name)
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, rng = item.partition("=")
        lo_s, sep2, hi_s = rng.partition(":")
        if not sep or not sep2:
            raise DelphiError(f"--space entry {item!r}: write NAME=LOW:HIGH, e.g. lr0=1e-3:1e-1")
        if name not in by_name:
            raise DelphiError(f"--space: unknown parameter {name!r}; searched: {', '.join(by_name)}")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise DelphiError(f"--space entry {item!r}: LOW and HIGH must be numbers") from None
        p = by_name[name]
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (p.log and lo <= 0) or lo < 0:
            raise DelphiError(f"--space entry {item!r}: need 0 {'<' if p.log else '≤'} LOW < HIGH")
        out[name] = dataclasses.replace(p, low=lo, high=hi)
    return list(out.values())


@dataclass(frozen=True)
class SearchResult:
    out_dir: Path
    best_trial: int
    best_loss: float
    constants: dict[str, float]  # tuned Recipe constants (the reference point included)
    trials_done: int
    runs_trained: int  # runs this invocation had to train (0 on a finished search)
    preset_path: Path
    table_path: Path
    plot_path: Path | None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("out_dir", "preset_path", "table_path", "plot_path"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


def trial_recipe(recipe: Recipe, constants: dict[str, float], batch: int, tokens: float) -> Recipe:
    """The recipe with the reference moved to (B0 = batch, T0 = tokens) and the trial's constants."""
    return dataclasses.replace(recipe, ref_batch=float(batch), ref_tokens=float(tokens), **constants)


def constants_of(params: dict[str, float], space: Sequence[Param]) -> dict[str, float]:
    by_name = {p.name: p for p in space}
    return {by_name[k].constant: by_name[k].to_constant(v) for k, v in params.items() if k in by_name}


def search(recipe: Recipe, recipe_source: dict[str, Any], *, hidden: int, batch: int, tokens: float,
           out_dir: str | Path, trials: int, settings: TuneSettings, space: Sequence[Param] | None = None,
           sampler: str = "tpe", sampler_seed: int = 0, parallel: int | None = None,
           plot: bool = True) -> SearchResult:
    """Run (or resume, or extend) a search until `trials` trials are finished; write its outputs."""
    import optuna
    from optuna.trial import TrialState

    from delphi.sweep.executors import needs_work

    if trials < 1:
        raise DelphiError(f"--trials must be at least 1, got {trials}")
    if sampler not in ("tpe", "gp"):
        raise DelphiError(f"unknown sampler {sampler!r}; use tpe or gp")
    check_point(recipe, hidden, batch, tokens)
    space = list(space or default_space(recipe))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"recipe": recipe_source, "hidden": hidden, "batch": batch, "tokens": tokens,
              "space": [dataclasses.asdict(p) for p in space], "sampler": sampler, "sampler_seed": sampler_seed,
              "seed": settings.seed, "data": settings.data.to_dict(),
              "eval_windows_per_domain": settings.eval_windows_per_domain, "precision": settings.precision}
    _check_config(out / "search-config.json", config)

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its warnings are about itself, not the search
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    n_startup = max(1, min(10, trials // 3))
    smp = (optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=n_startup) if sampler == "tpe"
           else optuna.samplers.GPSampler(seed=sampler_seed, n_startup_trials=n_startup))
    study = optuna.create_study(storage=storage, sampler=smp, study_name="delphi-tune", direction="minimize",
                                load_if_exists=True)
    dists = {p.name: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log) for p in space}
    if not study.trials:
        # Trial 0 is the recipe as it stands: the search can only improve on the measured baseline.
        start = {p.name: p.from_constant(getattr(recipe, p.constant)) for p in space}
        if all(p.low <= start[p.name] <= p.high for p in space):
            study.enqueue_trial(start)

    runs_dir = out / "runs"
    prepared = False
    trained = 0
    parallel = max(1, parallel or settings.executor.workers)

    def spec_for(number: int, params: dict[str, float]):
        r = trial_recipe(recipe, constants_of(params, space), batch, tokens)
        return build_spec(r, name=f"trial-{number:04d}", hidden=hidden, batch=batch, tokens=tokens,
                          optimizer=r.hyperparams(batch, tokens, hidden), settings=settings,
                          tags={"tune": "search", "trial": str(number)})

    while True:
        finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
        # Asked but never told: an interrupted batch. Re-run those (by name) before asking more.
        batch_trials = [(t.number, t.params) for t in study.trials if t.state == TrialState.RUNNING]
        if not batch_trials:
            if len(finished) >= trials:
                break
            for _ in range(min(parallel, trials - len(finished))):
                t = study.ask(dists)
                batch_trials.append((t.number, t.params))
        specs = [spec_for(n, p) for n, p in batch_trials]
        todo = sum(needs_work(runs_dir / s.name, retry_failed=False) for s in specs)
        if todo and not prepared:
            prepare(settings, recipe)
            prepared = True
        trained += todo
        say(settings, f"trials {', '.join(str(n) for n, _ in batch_trials)} "
                      f"({len(finished) + len(specs)}/{trials}): training {todo} run(s)")
        summaries = run_specs(specs, runs_dir, settings, label="tune search")
        for (number, params), spec, s in zip(batch_trials, specs, summaries):
            loss = completed_loss(s)
            if math.isfinite(loss):
                study.tell(number, loss, skip_if_finished=True)
                msg = f"loss {loss:.4f}"
            else:
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                msg = f"{s.get('status')} ({s.get('reason')})"
            say(settings, f"  trial {number}: {_fmt_params(params)} → {msg}")

    return _write_outputs(study, recipe, recipe_source, space, out, hidden, batch, tokens, trained, plot)


def _fmt_params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in params.items())


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """A search directory belongs to one search: refuse to mix trials of different settings."""
    text = json_text(config, default=str)
    if path.exists():
        old = json.loads(path.read_text())
        new = json.loads(text)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise DelphiError(f"{path.parent} holds a search with different settings ({', '.join(diff)}); "
                              "use a new --out, or the same settings to resume or extend it (--trials may change)")
        return
    atomic_write_text(path, text)


def trials_table(study, space: Sequence[Param]):
    import pandas as pd

    rows = []
    for t in study.trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "run": f"trial-{t.number:04d}",
                               "loss": t.value if t.value is not None else math.nan}
        for p in space:
            v = t.params.get(p.name)
            row[p.constant] = p.to_constant(v) if v is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["trial", "state", "run", "loss"] + [p.constant for p in space])


def _write_outputs(study, recipe: Recipe, recipe_source: dict[str, Any], space: Sequence[Param], out: Path,
                   hidden: int, batch: int, tokens: float, trained: int, plot: bool) -> SearchResult:
    table = trials_table(study, space)
    table_path = out / "trials.csv"
    atomic_write_text(table_path, table.to_csv(index=False, float_format="%.10g"))
    done = table[table["state"] == "COMPLETE"]
    if done.empty:
        raise DelphiError(f"no trial completed (see {out / 'runs'}/*/worker.log); nothing to tune from")
    best = done.loc[done["loss"].idxmin()]
    constants = {"ref_batch": float(batch), "ref_tokens": float(tokens)}
    constants.update({p.constant: float(best[p.constant]) for p in space})
    preset_path = atomic_write_text(out / "tuned-recipe.toml", preset_toml(
        recipe_source, constants,
        header=[f"delphi tune search: best of {len(done)} completed trial(s) (trial {int(best['trial'])}, macro "
                f"validation loss {best['loss']:.4f})",
                f"reference point: hidden {hidden}, B0 = {batch} sequences, T0 = {tokens:.4g} tokens, base recipe "
                f"{recipe.name!r}",
                "use as the [recipe] section of a suite file, or as --recipe of `delphi tune horizon/transfer`"]))
    plot_path = None
    if plot:
        from delphi.tune.plots import plot_partial_dependence

        plot_path = plot_partial_dependence(table, space, int(best["trial"]), out / "partial-dependence.png")
    result = SearchResult(out, int(best["trial"]), float(best["loss"]), constants, len(done), trained, preset_path,
                          table_path, plot_path)
    atomic_write_json(out / "search.json", result.to_dict())
    return result


def preset_toml(source: dict[str, Any], constants: dict[str, float], header: Sequence[str] = ()) -> str:
    """`[recipe]` with the base preset, its earlier overrides, and the tuned constants."""
    table = {**source, **constants}
    lines = [f"# {h}" for h in header] + ["[recipe]", f"preset = {json.dumps(table.pop('preset'))}"]
    for k, v in table.items():
        lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise DelphiError(f"cannot write recipe value {v!r} to TOML")
