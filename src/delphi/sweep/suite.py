"""Suite specification: what `delphi run SUITE.toml` trains, fits, forecasts and checks.

A suite is a TOML file (or a named preset, see `presets/`). Every section and key is checked
before any work starts; unknown keys and impossible values are user errors naming the key.

    [suite]     name, out_dir
    [recipe]    preset = "delphi" | "delphi-v1" | a CPU preset, plus any Recipe field to override
    [grid]      budgets (FLOPs), seed
    [heldout]   budgets, seeds, spread_seeds (extra seeds at the smallest budget), batch_size (optional fixed batch)
    [data]      mixture, tokenizer, block_cross_document_attention
    [eval]      every (steps), windows_per_domain, downstream (task names; empty = off),
                limit (items per task), pool + soft + floor (two-step downstream forecast)
    [train]     precision, compile, checkpoint_every, checkpoint_every_minutes
    [fit]       metric, bootstrap, seed, compute (total | non-embedding | deepseek-m)
    [executor]  kind = "local" | "ray", workers, threads_per_worker, address, cpus_per_run, gpus_per_run
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delphi.config import DataSpec, RunSpec
from delphi.errors import DelphiError
from delphi.recipe import Candidate, Recipe
from delphi.recipe.presets import recipe_from_table

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    workers: int = 1
    threads_per_worker: int = 0  # 0: cores // workers
    address: str | None = None  # ray: cluster address (None: start a local Ray instance)
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    out_dir: str
    recipe: Recipe
    fit_budgets: tuple[float, ...]
    heldout_budgets: tuple[float, ...]
    heldout_seeds: tuple[int, ...] = (0,)
    heldout_batch_size: int | None = None
    spread_seeds: tuple[int, ...] = ()  # extra seeds at the smallest held-out budget (seed spread)
    grid_seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    eval_every: int = 0
    eval_windows_per_domain: int = 16
    downstream_tasks: tuple[str, ...] = ()  # eval tasks for the bucket winners and held-out runs
    downstream_limit: int | None = None  # items per task (None: the committed subset)
    downstream_pool: str | None = None  # CSV (model, soft, hard) or a dir of `delphi eval` results
    downstream_soft: str | None = None  # runs-table column of the soft metric, e.g. "arc_easy/bpb"
    downstream_floor: float | None = None  # chance accuracy for the sigmoid
    precision: str = "auto"
    compile: str = "auto"
    checkpoint_every: int = 0
    checkpoint_every_minutes: float = 5.0
    fit_metric: str = "loss"
    bootstrap: int = 2000
    fit_seed: int = 0
    fit_compute: str = "total"  # compute definition of the loss law's C (`delphi.fit.compute`)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    source: str = ""  # the TOML text the suite was read from (kept with the results)

    # ---- planning ------------------------------------------------------------------------------
    def grid_candidates(self) -> list[Candidate]:
        return [c for b in self.fit_budgets for c in self.recipe.candidates(b)]

    def run_spec(self, cand: Candidate, *, seed: int, role: str, extra_tags: dict[str, str] | None = None,
                 name: str | None = None) -> RunSpec:
        tags = {"role": role, "suite": self.name, **(extra_tags or {})}
        return cand.to_run_spec(
            data=self.data, seed=seed, name=name, eval_every=self.eval_every,
            eval_windows_per_domain=self.eval_windows_per_domain, checkpoint_every=self.checkpoint_every,
            checkpoint_every_minutes=self.checkpoint_every_minutes, precision=self.precision, compile=self.compile,
            tags=tags,
        )

    def grid_specs(self) -> list[RunSpec]:
        return [self.run_spec(c, seed=self.grid_seed, role="grid") for c in self.grid_candidates()]

    def seeds_for(self, budget: float) -> tuple[int, ...]:
        """Held-out seeds at `budget`: `seeds` everywhere, plus `spread_seeds` at the smallest
        held-out budget only (seed spread is measured where it is cheapest)."""
        extra = self.spread_seeds if budget == min(self.heldout_budgets) else ()
        return self.heldout_seeds + tuple(s for s in extra if s not in self.heldout_seeds)

    @staticmethod
    def heldout_name(cand: Candidate, seed: int) -> str:
        return f"{cand.name}-heldout-s{seed}"


# ---- parsing ------------------------------------------------------------------------------------

_SECTIONS = {
    "suite": {"name", "out_dir"},
    "recipe": None,  # preset + Recipe fields, checked against the dataclass
    "grid": {"budgets", "seed"},
    "heldout": {"budgets", "seeds", "spread_seeds", "batch_size"},
    "data": {f.name for f in dataclasses.fields(DataSpec)},
    "eval": {"every", "windows_per_domain", "downstream", "limit", "pool", "soft", "floor"},
    "train": {"precision", "compile", "checkpoint_every", "checkpoint_every_minutes"},
    "fit": {"metric", "bootstrap", "seed", "compute"},
    "executor": {f.name for f in dataclasses.fields(ExecutorSettings)},
}


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
        text, where = path.read_text(), str(path)
    else:
        text, where = preset_text(name_or_path), f"preset {name_or_path}"
    return parse_suite(text, where=where, out_dir=out_dir)


def parse_suite(text: str, *, where: str = "suite", out_dir: str | None = None) -> SuiteSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DelphiError(f"{where}: not valid TOML ({e})") from None
    for section, value in doc.items():
        if section not in _SECTIONS:
            raise DelphiError(f"{where}: unknown section [{section}]; sections: {', '.join(_SECTIONS)}")
        if not isinstance(value, dict):
            raise DelphiError(f"{where}: [{section}] must be a table")
        allowed = _SECTIONS[section]
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise DelphiError(f"{where}: unknown key(s) {', '.join(unknown)} in [{section}]; "
                                  f"allowed: {', '.join(sorted(allowed))}")
    g = lambda s: doc.get(s, {})  # noqa: E731

    name = _str(g("suite").get("name", "suite"), where, "suite.name")
    recipe = recipe_from_table(g("recipe"), where)
    fit_budgets = _budgets(g("grid").get("budgets"), where, "grid.budgets")
    heldout_budgets = _budgets(g("heldout").get("budgets"), where, "heldout.budgets")
    seeds = g("heldout").get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise DelphiError(f"{where}: heldout.seeds must be a non-empty list of non-negative integers")
    spread = g("heldout").get("spread_seeds", [])
    if not isinstance(spread, list) or not all(isinstance(s, int) and s >= 0 for s in spread):
        raise DelphiError(f"{where}: heldout.spread_seeds must be a list of non-negative integers, e.g. [1, 2]")
    batch = g("heldout").get("batch_size")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise DelphiError(f"{where}: heldout.batch_size must be a positive integer")
    try:
        data = DataSpec(**g("data"))
        executor = ExecutorSettings(**g("executor"))
    except TypeError as e:
        raise DelphiError(f"{where}: {e}") from None
    if executor.kind not in ("local", "ray"):
        raise DelphiError(f"{where}: executor.kind must be 'local' or 'ray', got {executor.kind!r}")
    if executor.workers < 1 or executor.threads_per_worker < 0:
        raise DelphiError(f"{where}: executor.workers must be ≥ 1 and threads_per_worker ≥ 0")
    ev, tr, fi = g("eval"), g("train"), g("fit")
    spec = SuiteSpec(
        name=name,
        out_dir=out_dir or _str(g("suite").get("out_dir", f"delphi-out/{name}"), where, "suite.out_dir"),
        recipe=recipe, fit_budgets=fit_budgets, heldout_budgets=heldout_budgets, heldout_seeds=tuple(seeds), spread_seeds=tuple(spread),
        heldout_batch_size=batch, grid_seed=_int(g("grid").get("seed", 0), where, "grid.seed"), data=data,
        eval_every=_int(ev.get("every", 0), where, "eval.every"),
        eval_windows_per_domain=_int(ev.get("windows_per_domain", 16), where, "eval.windows_per_domain", lo=1),
        downstream_tasks=tuple(ev.get("downstream", [])),
        downstream_limit=_int(ev["limit"], where, "eval.limit", lo=1) if "limit" in ev else None,
        downstream_pool=ev.get("pool"), downstream_soft=ev.get("soft"),
        downstream_floor=float(ev["floor"]) if "floor" in ev else None,
        precision=tr.get("precision", "auto"), compile=tr.get("compile", "auto"),
        checkpoint_every=_int(tr.get("checkpoint_every", 0), where, "train.checkpoint_every"),
        checkpoint_every_minutes=float(tr.get("checkpoint_every_minutes", 5.0)),
        fit_metric=_str(fi.get("metric", "loss"), where, "fit.metric"),
        bootstrap=_int(fi.get("bootstrap", 2000), where, "fit.bootstrap", lo=0),
        fit_seed=_int(fi.get("seed", 0), where, "fit.seed"), executor=executor, source=text,
        fit_compute=_compute(fi.get("compute", "total"), where),
    )
    if spec.downstream_tasks:
        from delphi.eval import parse_tasks

        parse_tasks(list(spec.downstream_tasks))  # unknown task names fail here
        if spec.downstream_pool and not spec.downstream_soft:
            raise DelphiError(f"{where}: eval.pool needs eval.soft, the soft-metric column to forecast "
                              "(e.g. \"arc_easy/bpb\")")
    if spec.precision not in ("auto", "fp32", "bf16") or spec.compile not in ("auto", "on", "off"):
        raise DelphiError(f"{where}: train.precision must be auto|fp32|bf16 and train.compile auto|on|off")
    _check_plan(spec, where)
    return spec


def _check_plan(spec: SuiteSpec, where: str) -> None:
    """Impossible suites fail here, before any work."""
    from delphi.data.tokenizers import load_tokenizer

    vocab = load_tokenizer(spec.data.tokenizer).vocab_size
    if vocab != spec.recipe.vocab_size:
        raise DelphiError(f"{where}: tokenizer {spec.data.tokenizer!r} has {vocab} tokens but the recipe's vocab_size "
                          f"is {spec.recipe.vocab_size}; set recipe.vocab_size = {vocab} or use a matching tokenizer")
    if len(spec.fit_budgets) < 3:
        raise DelphiError(f"{where}: grid.budgets needs at least 3 budgets to fit a loss law (got {len(spec.fit_budgets)})")
    for b in spec.fit_budgets:
        n = len(spec.recipe.candidates(b))
        if n < 3:
            raise DelphiError(f"{where}: fit budget {b:.3g} has {n} candidate(s) under recipe {spec.recipe.name!r}; "
                              "an IsoFLOP parabola needs at least 3 (widen the recipe's width range)")
    for b in spec.heldout_budgets:
        if not spec.recipe.candidates(b):
            raise DelphiError(f"{where}: held-out budget {b:.3g} has no valid candidate under recipe {spec.recipe.name!r}")


def _budgets(value: Any, where: str, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise DelphiError(f"{where}: {key} must be a non-empty list of FLOP budgets, e.g. [1e12, 3e12]")
    out = []
    for v in value:
        try:
            b = float(v)
        except (TypeError, ValueError):
            raise DelphiError(f"{where}: {key} entry {v!r} is not a number") from None
        if not math.isfinite(b) or b <= 0:
            raise DelphiError(f"{where}: {key} entry {v!r} must be a positive number of FLOPs")
        out.append(b)
    return tuple(out)


def _compute(v: Any, where: str) -> str:
    from delphi.fit.compute import DEFINITIONS

    if v not in DEFINITIONS:
        raise DelphiError(f"{where}: fit.compute must be one of {', '.join(DEFINITIONS)}, got {v!r}")
    return v


def _int(v: Any, where: str, key: str, lo: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise DelphiError(f"{where}: {key} must be an integer ≥ {lo}, got {v!r}")
    return v


def _str(v: Any, where: str, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise DelphiError(f"{where}: {key} must be a non-empty string")
    return v
