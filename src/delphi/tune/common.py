"""What every tuning experiment shares: the recipe it starts from, how a run at a (width, batch,
horizon) point is built, and how a batch of runs is trained through the sweep executors.

All tuning runs are ordinary Delphi runs (`RunSpec` → `runs/<name>/summary.json`), so the sweep
executors skip finished runs and resume interrupted ones: re-running a tuning command after a
crash (or to extend it) never retrains what is already on disk.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from delphi.config import DataSpec, OptimizerHParams, RunSpec
from delphi.errors import DelphiError
from delphi.recipe.presets import recipe_from_table
from delphi.recipe import Recipe, get_recipe
from delphi.sweep.executors import ExecutorSettings


@dataclass(frozen=True)
class TuneSettings:
    """How tuning runs are trained and executed (not what is tuned)."""

    data: DataSpec = field(default_factory=lambda: DataSpec(mixture="embedded", tokenizer="embedded-bpe-1k"))
    seed: int = 0  # every run uses the same init/data seed: comparisons see the same noise
    eval_windows_per_domain: int = 32
    precision: str = "auto"
    compile: str = "auto"
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    progress: bool = True

    def __post_init__(self):
        if self.eval_windows_per_domain < 1:
            raise DelphiError(f"eval windows per domain must be at least 1, got {self.eval_windows_per_domain}")


# ---- the recipe a tuning command starts from ---------------------------------------------------

def load_recipe(name_or_path: str) -> tuple[Recipe, dict[str, Any]]:
    """A recipe by preset name, or from a TOML file whose `[recipe]` section is `preset = NAME`
    plus Recipe fields to override (the file `delphi tune search` writes, or a suite file).

    Returns the recipe and its source as a `[recipe]` table (`{"preset": NAME, **overrides}`), so
    a tuned preset can be written back as the base's preset plus every override.
    """
    path = Path(name_or_path)
    if not (name_or_path.endswith(".toml") or path.is_file()):
        return get_recipe(name_or_path), {"preset": name_or_path}
    if not path.is_file():
        raise DelphiError(f"recipe file {path} not found (give a preset name like cpu, or a TOML file)")
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DelphiError(f"recipe file {path}: not valid TOML ({e})") from None
    except RecursionError:
        raise DelphiError(f"recipe file {path}: not valid TOML (nested too deeply)") from None
    except OSError as e:
        raise DelphiError(f"recipe file {path}: cannot read it ({e.strerror or e})") from None
    section = doc.get("recipe")
    if not isinstance(section, dict):
        raise DelphiError(f"recipe file {path}: no [recipe] table (expected preset = \"cpu\" plus overrides)")
    if not isinstance(section.get("preset"), str):
        raise DelphiError(f"{path}: [recipe] needs preset = \"NAME\" (e.g. \"cpu\")")
    return recipe_from_table(section, where=str(path)), dict(section)


# ---- one run at a (width, batch, horizon) point --------------------------------------------------

def check_point(recipe: Recipe, hidden: int, batch: int, tokens: float) -> int:
    """Validate a (width, batch, horizon) point; returns its number of training steps."""
    if hidden < 1 or hidden % recipe.head_dim:
        raise DelphiError(f"hidden size {hidden} must be a positive multiple of the recipe's head dim "
                          f"{recipe.head_dim}")
    if batch < 1:
        raise DelphiError(f"batch size must be a positive number of sequences, got {batch}")
    if not (math.isfinite(tokens) and tokens > 0):
        raise DelphiError(f"token horizon must be a positive number of tokens, got {tokens!r}")
    steps = round(tokens / (batch * recipe.seq_len))
    if steps < 1:
        raise DelphiError(f"{tokens:.3g} tokens at batch {batch} × seq_len {recipe.seq_len} is less than one step; "
                          "raise --tokens or lower --batch")
    return steps


def point_name(prefix: str, hidden: int, batch: int, tokens: float) -> str:
    return f"{prefix}-h{hidden}-b{batch}-t{_short(tokens)}"


def _short(x: float) -> str:
    return f"{x:.4g}".replace("+", "")


def lr_label(lr: float) -> str:
    return f"lr{lr:.4g}".replace("+", "")


def build_spec(recipe: Recipe, *, name: str, hidden: int, batch: int, tokens: float,
               optimizer: OptimizerHParams, settings: TuneSettings, tags: dict[str, str]) -> RunSpec:
    steps = check_point(recipe, hidden, batch, tokens)
    return RunSpec(
        name=name, shape=recipe.shape(hidden), optimizer=optimizer, batch_size=batch, train_steps=steps,
        data=settings.data, seed=settings.seed, recipe=recipe.name,
        eval_windows_per_domain=settings.eval_windows_per_domain, precision=settings.precision,
        compile=settings.compile, tags={"role": "tune", **tags},
    )


def lr_grid(center: float, points: int = 5, step: float = 2.0) -> list[float]:
    """A log grid of `points` LRs spaced by `step`, centred on (and including) `center`."""
    if points < 3 or points % 2 == 0:
        raise DelphiError(f"an LR sweep needs an odd number of points ≥ 3 (centred on the recipe's LR), got {points}")
    if not step > 1:
        raise DelphiError(f"the LR grid step must be a factor > 1 (e.g. 2), got {step}")
    if not (math.isfinite(center) and center > 0):
        raise DelphiError(f"the recipe's LR must be positive, got {center}")
    k = points // 2
    return [center * step ** i for i in range(-k, k + 1)]


# Horizon sweeps and transfer checks name (and tag) their runs alike, so the two commands pointed
# at one --out share identical runs (a run is a pure function of its RunSpec).
SWEEP_PREFIX = "lr"


def lr_sweep_specs(recipe: Recipe, *, prefix: str, hidden: int, batch: int, tokens: float, lrs: Sequence[float],
                   settings: TuneSettings, tags: dict[str, str] | None = None) -> list[RunSpec]:
    """One run per projection LR at (hidden, batch, tokens); every other hyperparameter is the
    recipe's at that point (Adam LR, ε and β2 transfer with B and T as the recipe says)."""
    base = recipe.hyperparams(batch, tokens, hidden)
    point = point_name(prefix, hidden, batch, tokens)
    return [build_spec(recipe, name=f"{point}-{lr_label(lr)}", hidden=hidden, batch=batch, tokens=tokens,
                       optimizer=dataclasses.replace(base, lr=lr), settings=settings,
                       tags={"tune": "lr-sweep", "sweep_lr": repr(lr), **(tags or {})})
            for lr in lrs]


def adaptive_sweeps(recipe: Recipe, *, prefix: str, points: Sequence[tuple[int, int, float]],
                    centers: Sequence[float], grid_points: int, step: float, extend: int, runs_dir: Path,
                    settings: TuneSettings, label: str) -> list[tuple[list[RunSpec], list[dict]]]:
    """LR sweeps at several (hidden, batch, tokens) points, trained together. A sweep whose lowest
    loss is at its smallest or largest LR gets one more LR beyond that edge (same step), up to
    `extend` times: an optimum on the grid's edge is only a bound. Returns (specs, summaries) per
    point, specs sorted by LR."""
    grids = [lr_grid(c, grid_points, step) for c in centers]
    extend = max(0, int(extend))
    for rnd in range(extend + 1):
        sweeps = [lr_sweep_specs(recipe, prefix=prefix, hidden=h, batch=b, tokens=t, lrs=g, settings=settings)
                  for (h, b, t), g in zip(points, grids)]
        flat = [s for sw in sweeps for s in sw]
        done = dict(zip([s.name for s in flat], run_specs(flat, runs_dir, settings, label)))
        results = [(sw, [done[s.name] for s in sw]) for sw in sweeps]
        if rnd == extend:
            break
        grids, grown = extend_grids(grids, [[completed_loss(x) for x in sums] for _, sums in results], step)
        if not grown:
            break
        say(settings, "optimum at a grid edge: extending those sweeps by one LR")
    return results


def extend_grids(grids: Sequence[Sequence[float]], losses: Sequence[Sequence[float]],
                 step: float) -> tuple[list[list[float]], bool]:
    """One more LR past the edge of each sweep whose lowest loss sits on that edge (grids sorted
    ascending, losses aligned, inf = diverged/failed); returns the new grids and whether any grew."""
    out, grown = [], False
    for grid, ls in zip(grids, losses):
        grid = list(grid)
        finite = [j for j, v in enumerate(ls) if math.isfinite(v)]
        if finite:
            best = min(finite, key=lambda j: ls[j])
            if best == 0:
                grid.insert(0, grid[0] / step)
                grown = True
            elif best == len(grid) - 1:
                grid.append(grid[-1] * step)
                grown = True
        out.append(grid)
    return out, grown


# ---- training a batch of runs ------------------------------------------------------------------

def prepare(settings: TuneSettings, recipe: Recipe) -> None:
    """Tokenise once here, so parallel workers find the cache instead of racing to build it; and
    refuse a tokenizer whose vocabulary does not match the recipe's model shapes."""
    from delphi.data import prepare_data

    prepared = prepare_data(settings.data, progress=settings.progress)
    vocab = prepared.tokenizer.vocab_size
    if vocab != recipe.vocab_size:
        raise DelphiError(f"tokenizer {settings.data.tokenizer!r} has {vocab} tokens but recipe {recipe.name!r} has "
                          f"vocab_size {recipe.vocab_size}; pick the matching --tokenizer (cpu recipes: "
                          "embedded-bpe-1k) or set vocab_size in a recipe file")


def run_specs(specs: Sequence[RunSpec], runs_dir: Path, settings: TuneSettings, label: str) -> list[dict]:
    """Train `specs` (skipping finished ones) and return their summaries, in order."""
    from delphi.sweep.executors import execute, read_summary

    execute(list(specs), runs_dir, settings.executor, progress=settings.progress, label=label)
    out = []
    for spec in specs:
        s = read_summary(Path(runs_dir) / spec.name) or {"status": "failed", "reason": "no summary written"}
        out.append(s)
    return out


def completed_loss(summary: dict) -> float:
    """The run's macro validation loss, or +inf for a diverged/failed run (never an optimum)."""
    loss = summary.get("loss")
    if summary.get("status") != "completed" or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return math.inf
    return float(loss)


def say(settings: TuneSettings, msg: str) -> None:
    if settings.progress:
        print(msg, file=sys.stderr, flush=True)

