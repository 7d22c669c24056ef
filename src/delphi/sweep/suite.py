"""Suite specification: what `delphi run SUITE.toml` trains, fits, forecasts and checks.

A suite is a TOML file (or a named preset, see `presets/`). Every section and key is type- and
range-checked before any work starts (`delphi.validate`), and so is everything that would fail
later (mixture, tokenizer, candidates per budget, fit metric, downstream tasks and pool): all
problems are reported together as one user error, each under its key path (`[executor] workers`).

    [suite]     name, out_dir
    [recipe]    preset = "delphi" | "delphi-v1" | a CPU preset, plus any Recipe field to override
    [grid]      budgets (FLOPs), seed
    [heldout]   budgets, seeds, spread_seeds (extra seeds at the smallest budget), batch_size (optional fixed batch)
    [data]      mixture, tokenizer, block_cross_document_attention
    [eval]      every (steps), windows_per_domain, downstream (task names; empty = off),
                limit (items per task), pool + soft + floor (two-step downstream forecast)
    [train]     precision, compile, checkpoint_every, checkpoint_every_minutes
    [fit]       metric (loss | bpb | loss/<domain> | bpb/<domain>), bootstrap, seed,
                compute (total | non-embedding | deepseek-m), ceiling ("unigram" or a number: the loss
                law's ceiling form 1/L = 1/H + C^alpha/A; absent: E + A·C^-alpha)
    [executor]  kind = "local" | "ray", workers, threads_per_worker, address, cpus_per_run, gpus_per_run
    [tracking]  backends (["tensorboard", "wandb"]; empty = metrics.jsonl only), project (W&B)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from delphi.config import (COMPILE_MODES, DATA_RULES, PRECISIONS, RUN_RULES, TRACKING_RULES, DataSpec, RunSpec,
                           TrackingSpec)
from delphi.errors import DelphiError
from delphi.recipe import DELPHI, Candidate, Recipe
from delphi.recipe.presets import recipe_problems
from delphi.sweep.executors import EXECUTOR_RULES, ExecutorSettings
from delphi.validate import MAX_SEED, Int, ListOf, Num, Problems, Rule, Str, key_name, show

PRESET_DIR = Path(__file__).with_name("presets")


class _Section:
    """A suite section read from TOML, normalised to its field types: TOML lists become tuples
    (the frozen sections are hashable and safe to share) and integers in float fields become
    floats (`budgets = [1e12, 3000000000000]`, `floor = 0`)."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            floats = f.type.startswith("tuple[float") or f.type.startswith("float")
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, f.name, tuple(float(v) for v in value) if floats else tuple(value))
            elif floats and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))


@dataclass(frozen=True)
class GridSpec(_Section):
    """`[grid]`: the IsoFLOP budgets the law is fitted on, and the seed of every grid run."""

    budgets: tuple[float, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class HeldoutSpec(_Section):
    """`[heldout]`: the budgets forecast and then trained, with their seeds."""

    budgets: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    spread_seeds: tuple[int, ...] = ()  # extra seeds at the smallest held-out budget (seed spread)
    batch_size: int | None = None  # a fixed batch instead of the recipe's


@dataclass(frozen=True)
class EvalSettings(_Section):
    """`[eval]`: validation during training, and the downstream tasks of the winners and held-out runs."""

    every: int = 0  # steps between evaluations (0: only at the end)
    windows_per_domain: int = 16
    downstream: tuple[str, ...] = ()  # eval tasks for the bucket winners and held-out runs
    limit: int | None = None  # items per task (None: the committed subset)
    pool: str | None = None  # CSV (model, soft, hard) or a dir of `delphi eval` results
    soft: str | None = None  # runs-table column of the soft metric, e.g. "arc_easy/bpb"
    floor: float | None = None  # chance accuracy for the sigmoid


@dataclass(frozen=True)
class TrainSettings(_Section):
    """`[train]`: how every run of the suite trains (not what: that is the recipe's)."""

    precision: str = "auto"
    compile: str = "auto"
    checkpoint_every: int = 0
    checkpoint_every_minutes: float = 5.0


@dataclass(frozen=True)
class FitSettings(_Section):
    """`[fit]`: the metric, the compute definition and the loss-law form of the suite's fit."""

    metric: str = "loss"
    bootstrap: int = 2000
    seed: int = 0
    compute: str = "total"  # compute definition of the loss law's C (`delphi.fit.compute`)
    ceiling: str | float | None = None  # the loss law's ceiling H: "unigram", a number, or None


@dataclass(frozen=True)
class SuiteSpec:
    """A suite file, one typed section per TOML table (`[grid]` is `spec.grid`, and so on)."""

    name: str
    out_dir: str
    recipe: Recipe
    grid: GridSpec = field(default_factory=GridSpec)
    heldout: HeldoutSpec = field(default_factory=HeldoutSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSettings = field(default_factory=EvalSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)  # passed to every run
    source: str = ""  # the TOML text the suite was read from (kept with the results)

    # ---- planning ------------------------------------------------------------------------------
    def grid_candidates(self) -> list[Candidate]:
        return [c for b in self.grid.budgets for c in self.recipe.candidates(b)]

    def run_spec(self, cand: Candidate, *, seed: int, role: str, extra_tags: dict[str, str] | None = None,
                 name: str | None = None) -> RunSpec:
        tags = {"role": role, "suite": self.name, **(extra_tags or {})}
        return cand.to_run_spec(
            data=self.data, seed=seed, name=name, eval_every=self.eval.every,
            eval_windows_per_domain=self.eval.windows_per_domain, checkpoint_every=self.train.checkpoint_every,
            checkpoint_every_minutes=self.train.checkpoint_every_minutes, precision=self.train.precision,
            compile=self.train.compile, tags=tags, tracking=self.tracking,
        )

    def grid_specs(self) -> list[RunSpec]:
        return [self.run_spec(c, seed=self.grid.seed, role="grid") for c in self.grid_candidates()]

    def seeds_for(self, budget: float) -> tuple[int, ...]:
        """Held-out seeds at `budget`: `seeds` everywhere, plus `spread_seeds` at the smallest
        held-out budget only (seed spread is measured where it is cheapest)."""
        extra = self.heldout.spread_seeds if budget == min(self.heldout.budgets) else ()
        return self.heldout.seeds + tuple(s for s in extra if s not in self.heldout.seeds)

    @staticmethod
    def heldout_name(cand: Candidate, seed: int) -> str:
        return f"{cand.name}-heldout-s{seed}"


# ---- parsing ------------------------------------------------------------------------------------

class _ComputeDefinition(Rule):
    """One of `delphi.fit.compute.DEFINITIONS` (imported when a suite sets it)."""

    def problem(self, value, strict=True):
        from delphi.fit.compute import DEFINITIONS

        return Str(DEFINITIONS).problem(value, strict)


class _Ceiling(Rule):
    """The loss law's ceiling H: "unigram" (measured on the suite's data) or a positive number."""

    def problem(self, value, strict=True):
        if value == "unigram" or (not isinstance(value, str) and Num(0, lo_open=True).problem(value, strict) is None):
            return None
        return f'must be "unigram" (measured on the data) or a positive number, got {show(value)}'


_BUDGETS = ListOf(Num(0, lo_open=True, sane_hi=1e30, unit="of FLOPs"), nonempty=True, unique=True,
                  what="a list of FLOP budgets", example="[1e12, 3e12]")
_SEEDS = ListOf(Int(0, MAX_SEED), unique=True, what="a list of non-negative integers", example="[1, 2]")
_RULES: dict[str, dict[str, Rule] | None] = {
    "suite": {"name": Str(name_like=True, what="a non-empty suite name"), "out_dir": Str(what="a directory path")},
    "recipe": None,  # preset + Recipe fields, checked by `recipe_problems`
    "grid": {"budgets": _BUDGETS, "seed": Int(0, MAX_SEED)},
    "heldout": {"budgets": _BUDGETS,
                "seeds": ListOf(Int(0, MAX_SEED), nonempty=True, unique=True, what="a list of non-negative integers",
                                example="[0]"),
                "spread_seeds": _SEEDS, "batch_size": Int(1)},
    "data": DATA_RULES,
    "eval": {"every": Int(0, note="steps; 0: only at the end"), "windows_per_domain": Int(1),
             "downstream": ListOf(Str(what="a task name"), what="a list of task names", example='["arc_easy:5"]'),
             "limit": Int(1), "pool": Str(what="a pool CSV path or a directory of eval results"),
             "soft": Str(what='a runs-table column such as "arc_easy_5shot/bpb"'),
             "floor": Num(0, 1, hi_open=True, note="the chance accuracy")},
    "train": {"precision": Str(PRECISIONS), "compile": Str(COMPILE_MODES),
              "checkpoint_every": RUN_RULES["checkpoint_every"],
              "checkpoint_every_minutes": RUN_RULES["checkpoint_every_minutes"]},
    "fit": {"metric": Str(what="a metric name such as \"loss\""), "bootstrap": Int(0, 10**6, note="0: no interval"),
            "seed": Int(0, MAX_SEED), "compute": _ComputeDefinition(), "ceiling": _Ceiling()},
    "executor": EXECUTOR_RULES,
    "tracking": TRACKING_RULES,
}
_SECTIONS = {name: (None if rules is None else set(rules)) for name, rules in _RULES.items()}
# The typed object of each checked section: its fields are the section's keys, so a checked
# section is read by one generic `cls(**keys)`.
_SECTION_TYPES = {"grid": GridSpec, "heldout": HeldoutSpec, "data": DataSpec, "eval": EvalSettings,
                  "train": TrainSettings, "fit": FitSettings, "executor": ExecutorSettings, "tracking": TrackingSpec}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_text(name: str) -> str:
    path = PRESET_DIR / f"{name}.toml"
    if not path.exists():
        raise DelphiError(f"unknown suite preset {name!r}; presets: {', '.join(preset_names())}")
    return path.read_text()


def load_suite(name_or_path: str | None = None, *, out_dir: str | None = None) -> SuiteSpec:
    """A suite from a preset name (default `tiny`) or a TOML file path."""
    name_or_path = name_or_path or "tiny"
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise DelphiError(f"suite file {path} does not exist")
        text, where = read_text(path, "suite file"), str(path)
    else:
        text, where = preset_text(name_or_path), f"preset {name_or_path}"
    return parse_suite(text, where=where, out_dir=out_dir)


def read_text(path: Path, what: str) -> str:
    """A spec file's text; unreadable or non-UTF-8 files are user errors."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DelphiError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DelphiError(f"{what} {path}: cannot read it ({e.strerror or e})") from None


def parse_suite(text: str, *, where: str = "suite", out_dir: str | None = None) -> SuiteSpec:
    """Validate a suite TOML; every problem is reported at once (with its key path) as one
    DelphiError, before any work starts."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DelphiError(f"{where}: not valid TOML ({e})") from None
    except RecursionError:
        raise DelphiError(f"{where}: not valid TOML (nested too deeply)") from None
    p = Problems(where)
    for section, value in doc.items():
        if section not in _RULES:
            p.add("", f"unknown section [{key_name(section)}]; sections: {', '.join(_RULES)}")
        elif not isinstance(value, dict):
            if section != "recipe":  # reported by `recipe_problems`
                p.add(f"[{section}]", f"must be a table, got {show(value)}")
        elif _SECTIONS[section] is not None:
            p.unknown_keys(f"[{section}]", value, _SECTIONS[section])
    g = lambda s: doc[s] if isinstance(doc.get(s), dict) else {}  # noqa: E731
    # Every field is checked; invalid ones are left out (their defaults stand in) so that the
    # checks below still run on the rest and one message lists every problem.
    clean: dict[str, dict[str, Any]] = {}
    for section, rules in _RULES.items():
        if rules is not None:
            clean[section] = {k: v for k, v in g(section).items()
                              if k in rules and p.check(f"[{section}] {k}", v, rules[k])}
    for section in ("grid", "heldout"):
        if "budgets" not in g(section):
            p.add(f"[{section}] budgets", "is missing: give a non-empty list of FLOP budgets, e.g. [1e12, 3e12]")
    recipe = recipe_problems(doc.get("recipe", {}), p, "[recipe]")

    su = clean["suite"]
    name = su.get("name", "suite")
    sections = {key: cls(**clean[key]) for key, cls in _SECTION_TYPES.items()}
    spec = SuiteSpec(name=name, out_dir=out_dir or su.get("out_dir", f"delphi-out/{name}"), recipe=recipe or DELPHI,
                     source=text, **sections)
    _check_plan(spec, p, recipe_ok=recipe is not None, grid_ok="budgets" in clean["grid"],
                heldout_ok="budgets" in clean["heldout"])
    p.raise_if_any()
    return spec


def _check_plan(spec: SuiteSpec, p: Problems, *, recipe_ok: bool = True, grid_ok: bool = True,
                heldout_ok: bool = True) -> None:
    """What would fail later, checked now: data and tokenizer, the grid under the recipe, the fit
    metric, the downstream tasks and pool."""
    from delphi.data.mixture import resolve_mixture
    from delphi.data.tokenizers import load_tokenizer

    mixture = None
    try:
        mixture = resolve_mixture(spec.data.mixture)
    except DelphiError as e:
        p.add_error("[data] mixture", e)
    try:
        vocab = load_tokenizer(spec.data.tokenizer).vocab_size
    except DelphiError as e:
        p.add_error("[data] tokenizer", e)
    else:
        if recipe_ok and vocab != spec.recipe.vocab_size:
            p.add("[data] tokenizer", f"{spec.data.tokenizer!r} has {vocab} tokens but the recipe's vocab_size is "
                                      f"{spec.recipe.vocab_size}; set recipe.vocab_size = {vocab} or use a matching "
                                      "tokenizer")
    if grid_ok and len(spec.grid.budgets) < 3:
        p.add("[grid] budgets", f"needs at least 3 budgets to fit a loss law (got {len(spec.grid.budgets)})")
    for b in spec.grid.budgets if recipe_ok else ():
        n = len(spec.recipe.candidates(b))
        if n < 3:
            p.add("[grid] budgets", f"fit budget {b:.3g} has {n} candidate(s) under recipe {spec.recipe.name!r}; "
                                    "an IsoFLOP parabola needs at least 3 (widen the recipe's width range)")
    for b in spec.heldout.budgets if recipe_ok else ():
        cands = spec.recipe.candidates(b)
        if not cands:
            p.add("[heldout] budgets", f"held-out budget {b:.3g} has no valid candidate under recipe "
                                       f"{spec.recipe.name!r}")
        elif spec.heldout.batch_size is not None and all(
                round(c.tokens / (spec.heldout.batch_size * spec.recipe.seq_len)) < 1 for c in cands):
            p.add("[heldout] batch_size", f"{spec.heldout.batch_size} leaves no training step at budget {b:.3g} "
                                          "(fewer tokens than one batch); lower it or drop it")
    _check_metric(spec, mixture, p)
    _check_downstream(spec, p)


def fit_metrics(mixture) -> list[str]:
    """The metrics a suite's fit can use: the runs table holds them for every grid run."""
    domains = [d.name for d in mixture.domains] if mixture is not None else []
    return ["loss", "bpb", *(f"loss/{d}" for d in domains), *(f"bpb/{d}" for d in domains)]


def _check_metric(spec: SuiteSpec, mixture, p: Problems) -> None:
    metric = spec.fit.metric
    if metric in ("loss", "bpb"):
        return
    kind, _, domain = metric.partition("/")
    if mixture is None:  # the mixture's own problem is reported; its domains are unknown
        if kind in ("loss", "bpb") and domain:
            return
    elif metric in fit_metrics(mixture):
        return
    domains = ", ".join(d.name for d in mixture.domains) if mixture is not None else "?"
    msg = (f"must be loss, bpb, loss/<domain> or bpb/<domain> (domains of mixture {spec.data.mixture!r}: "
           f"{domains}), got {show(metric)}")
    if kind not in ("loss", "bpb") and domain:
        msg += ("; downstream columns are measured after the fit: forecast them with [eval] downstream, "
                "pool and soft")
    p.add("[fit] metric", msg)


def _check_downstream(spec: SuiteSpec, p: Problems) -> None:
    keys: list[str] = []
    if spec.eval.downstream:
        from delphi.eval import parse_tasks

        try:
            keys = [t.key for t in parse_tasks(list(spec.eval.downstream))]
        except DelphiError as e:
            p.add_error("[eval] downstream", e)
            return
    elif spec.eval.pool or spec.eval.soft or spec.eval.floor is not None:
        given = [k for k, v in (("pool", spec.eval.pool), ("soft", spec.eval.soft),
                                ("floor", spec.eval.floor)) if v is not None]
        p.add("[eval]", f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} used only with downstream tasks: "
                        f"add downstream = [\"arc_easy:5\"] or remove {'it' if len(given) == 1 else 'them'}")
        return
    if spec.eval.floor is not None and not spec.eval.pool:
        p.add("[eval] floor", "is used only with [eval] pool (the sigmoid's lower bound); add a pool or remove it")
    if spec.eval.soft is not None:
        from delphi.eval import HIGHER_IS_BETTER

        task, _, metric = spec.eval.soft.rpartition("/")
        if task not in keys or metric not in HIGHER_IS_BETTER:
            p.add("[eval] soft", f"must be <task>/<metric> with a task of [eval] downstream ({', '.join(keys)}) and "
                                 f"a metric among {', '.join(HIGHER_IS_BETTER)}, got {show(spec.eval.soft)}")
            return
    if spec.eval.pool:
        if not spec.eval.soft:
            p.add("[eval] pool", "needs [eval] soft, the soft-metric column to forecast (e.g. \"arc_easy_5shot/bpb\")")
            return
        if not Path(spec.eval.pool).exists():
            p.add("[eval] pool", f"{spec.eval.pool}: no such file or directory (a CSV with columns model, soft, "
                                 "hard, or a directory of `delphi eval` results)")
            return
        from delphi.downstream.forecast import load_pool

        try:
            load_pool(spec.eval.pool, soft=spec.eval.soft)
        except DelphiError as e:
            p.add_error("[eval] pool", e)
        if spec.fit.bootstrap < 10:
            p.add("[fit] bootstrap", f"must be at least 10 with a downstream pool (the accuracy interval needs "
                                     f"bootstrap draws), got {spec.fit.bootstrap}")


def readiness_problems(spec: SuiteSpec) -> list[str]:
    """What `delphi run` needs from this machine beyond a valid suite (checked before any work)."""
    import importlib.util

    out = []
    if spec.executor.kind == "ray" and importlib.util.find_spec("ray") is None:
        out.append("[executor] kind = \"ray\" needs Ray on this machine: pip install 'delphi[ray]', "
                   "or use kind = \"local\"")
    from delphi.train.tracking import missing_packages

    out.extend(f"[tracking] backends: {m}" for m in missing_packages(spec.tracking.backends))
    d = Path(spec.out_dir)
    if d.exists() and not d.is_dir():
        out.append(f"the suite directory {d} exists and is not a directory; choose another out_dir or --out")
    return out
