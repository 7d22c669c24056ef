"""Named recipes.

* `delphi`    — Complete(d)AdamH at paper scale (exact).
* `delphi-v1` — Cautious AdamC, Delphi's first attempt (baseline).
* `cpu`       — Complete(d)AdamH with its constants rescaled for CPU ladders (the `tiny` and
  `micro` suites). Every rule is Delphi's (depth formula, MLP ratio 4, QK-norm, MHA, AdamH +
  Adam, WSD 10%/20%, token-horizon LR (T0/T)^0.3, batch rule, β2/ε transfer, tokens-per-parameter
  cap); only these constants move (the measurements behind them: docs/tune.md):
    - seq_len 128, head_dim 16, vocab 1024: a 4096-token LM head alone is ~75% of a width-64 model's FLOPs.
    - widths 16–512 in steps of 16, min_tokens_per_param 0.2: each IsoFLOP curve spans its optimum.
    - target_steps 1024, min_batch 2: ~1000-step runs; halving the 512-step batch lowered the loss 0.9–1.5%.
    - batch_rounding "integer": power-of-two batches put 1–3% kinks into the IsoFLOP curves.
    - lr0 0.0214, adam_lr0 0.0632, epsilon0 1.6e-9, beta2_0 0.9995 (B0 16, T0 1e6): tuned, 4.8% lower loss.
    - lr_cap 0.1: runs of a few hundred steps need larger relative AdamH steps than Delphi's 30k-step runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from delphi.config import OPTIMIZERS
from delphi.errors import DelphiError
from delphi.recipe.cautious_adamc import DELPHI_V1
from delphi.recipe.completed_adamh import DELPHI, Recipe
from delphi.validate import Bool, Int, ListOf, Num, Problems, Str, key_name, show

CPU = dataclasses.replace(
    DELPHI, name="cpu", name_suffix="cpu", seq_len=128, head_dim=16, vocab_size=1024, rope_scaling=False,
    min_width=16, width_step=16, width_step_large=16, large_step_above=float("inf"), max_width=512,
    max_params_floor=1e9, max_params_ref_flops=1e14, max_params_ceiling=1e9, min_tokens_per_param=0.2,
    target_steps=1024, batch_rounding="integer", min_batch=2, max_batch=1024, ref_batch=16.0, ref_tokens=1e6, lr0=0.0214, adam_lr0=0.0632,
    epsilon0=1.6e-9, beta2_0=0.9995, beta2_min=0.9, beta2_max=0.9999, lr_cap=0.1,
    isoflop_budgets=(1e11, 2e11, 3e11, 5e11, 1e12),
)

RECIPES: dict[str, Recipe] = {"delphi": DELPHI, "delphi-v1": DELPHI_V1, "cpu": CPU}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def recipe_from_table(section: dict[str, Any], where: str = "", key: str = "[recipe]") -> Recipe:
    """A recipe from a TOML table: `preset = NAME` (default "delphi") plus any Recipe constants
    to override, each type- and range-checked (a suite's or a tuned preset's [recipe]). Every
    problem is reported at once, each under its key path (`[recipe] lr0`)."""
    problems = Problems(where)
    recipe = recipe_problems(section, problems, key)
    problems.raise_if_any()
    return recipe


def recipe_problems(section: Any, problems: Problems, key: str = "[recipe]") -> Recipe | None:
    """Check a [recipe] table into `problems`; the recipe when it has none."""
    before = len(problems)
    if not isinstance(section, dict):
        problems.add(key, f"must be a table (preset = \"cpu\" plus overrides), got {show(section)}")
        return None
    section = dict(section)
    preset = section.pop("preset", "delphi")
    if not isinstance(preset, str):
        problems.add(f"{key} preset", f"must be a recipe name such as \"cpu\", got {show(preset)}")
        return None
    try:
        base = get_recipe(preset)
    except DelphiError as e:
        problems.add_error(f"{key} preset", e)
        return None
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(section) - fields)
    if unknown:
        problems.add(key, f"unknown recipe constant(s) {', '.join(map(key_name, unknown))}; "
                          f"known: {', '.join(sorted(fields))}")
    for k in sorted(set(section) & fields):
        v, default = section[k], getattr(base, k)
        rule = RECIPE_RULES.get(k)
        if rule is not None:
            problems.check(f"{key} {k}", v, rule)
        elif isinstance(default, bool) != isinstance(v, bool) or (
                isinstance(default, (int, float)) and not isinstance(v, (int, float))) or (
                isinstance(default, str) and not isinstance(v, str)) or (
                isinstance(default, tuple) and not isinstance(v, list)):
            problems.add(f"{key} {k}", f"must be like {show(default)}, got {show(v)}")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and (not math.isfinite(v) or v < 0):
            problems.add(f"{key} {k}", f"must be a finite non-negative number, got {show(v)}")
    if len(problems) > before:
        return None
    if "isoflop_budgets" in section:
        section["isoflop_budgets"] = tuple(section["isoflop_budgets"])
    merged = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)} | section
    _recipe_relations(merged, problems, key)
    if len(problems) > before:
        return None
    try:
        return dataclasses.replace(base, **section)
    except DelphiError as e:
        problems.add_error(key, e)
    except (TypeError, ValueError) as e:
        problems.add(key, f"has bad recipe constants ({e})")
    return None


_POSITIVE = Num(0, lo_open=True)
_FRACTION = Num(0, 1)
_BETA = Num(0, 1, hi_open=True)
_WIDTH = Int(1, 1 << 20)
MAX_WIDTHS = 10_000  # widths one budget may try (min_width .. max_width by width_step)

RECIPE_RULES = {
    "name": Str(name_like=True, what="a non-empty recipe name"),
    "name_suffix": Str(name_like=True, what="a non-empty run-name suffix"),
    "seq_len": Int(1, 1 << 20), "head_dim": _WIDTH, "mlp_ratio": Int(1, 64), "vocab_size": Int(2, 1 << 24),
    "min_width": _WIDTH, "width_step": _WIDTH, "width_step_large": _WIDTH, "max_width": Int(2, 1 << 21),
    "target_steps": Int(1, 1 << 40), "min_batch": Int(1, 1 << 30), "max_batch": Int(1, 1 << 30),
    "depth_base": _POSITIVE, "depth_log_coef": Num(0, sane_hi=1e6), "depth_offset": Num(0, sane_hi=1e6),
    "min_layers": Int(1, 1 << 10), "rope_scaling": Bool(),
    "large_step_above": Num(0, lo_open=True, allow_inf=True, unit="of FLOPs"),
    "max_params_floor": _POSITIVE, "max_params_ref_flops": _POSITIVE, "max_params_ceiling": _POSITIVE,
    "max_tokens_per_param": _POSITIVE, "min_tokens_per_param": Num(0),
    # batch_rounding: type-checked like its default, its value by Recipe itself
    "ref_batch": _POSITIVE, "ref_tokens": _POSITIVE,
    "lr0": Num(0, lo_open=True, sane_hi=10.0), "adam_lr0": Num(0, lo_open=True, sane_hi=10.0),
    "lr_cap": Num(0, lo_open=True, sane_hi=10.0), "epsilon0": Num(0, lo_open=True, sane_hi=1.0),
    "beta1": _BETA, "beta2_0": _BETA, "beta2_min": _BETA, "beta2_max": _BETA,
    "horizon_exponent": Num(0, sane_hi=10.0),
    "max_grad_norm": Num(0, note="0: no clipping"), "z_loss_weight": Num(0, sane_hi=1.0),
    "warmup_fraction": _FRACTION, "decay_fraction": _FRACTION,
    "optimizer": Str(OPTIMIZERS),
    "isoflop_budgets": ListOf(Num(0, lo_open=True, sane_hi=1e30), nonempty=True, unique=True,
                              what="a list of FLOP budgets", example="[1e18, 3e18, 1e19]"),
    # Cautious AdamC (delphi-v1)
    "lr_coef": _POSITIVE, "weight_decay": Num(0, sane_hi=10.0), "beta2_floor": _BETA, "beta2_base": _BETA,
    "beta2_ref_batch": _POSITIVE, "epsilon": Num(0, lo_open=True, sane_hi=1.0),
}


def _recipe_relations(r: dict[str, Any], problems: Problems, key: str) -> None:
    """Constraints between recipe constants (checked once every constant is valid on its own)."""
    def bad(k: str, msg: str) -> None:
        problems.add(f"{key} {k}", msg)

    if r["min_batch"] > r["max_batch"]:
        bad("min_batch", f"({r['min_batch']}) must be at most max_batch ({r['max_batch']})")
    if r["min_width"] >= r["max_width"]:
        bad("min_width", f"({r['min_width']}) must be below max_width ({r['max_width']}, exclusive)")
    for k in ("min_width", "width_step", "width_step_large"):
        if r[k] % r["head_dim"]:
            bad(k, f"({r[k]}) must be a multiple of head_dim ({r['head_dim']}): every width is a whole number of heads")
    for k in ("width_step", "width_step_large"):
        if (r["max_width"] - r["min_width"]) / r[k] > MAX_WIDTHS:
            bad(k, f"({r[k]}) gives more than {MAX_WIDTHS} widths between min_width and max_width; use a larger step")
    if r["beta2_min"] > r["beta2_max"]:
        bad("beta2_min", f"({r['beta2_min']:g}) must be at most beta2_max ({r['beta2_max']:g})")
    lo, hi = r.get("min_tokens_per_param"), r.get("max_tokens_per_param")
    if lo is not None and hi is not None and lo >= hi:
        bad("min_tokens_per_param", f"({lo:g}) must be below max_tokens_per_param ({hi:g})")
    if r["warmup_fraction"] + r["decay_fraction"] > 1:
        bad("warmup_fraction", f"and decay_fraction must sum to at most 1, got {r['warmup_fraction']:g} + "
                               f"{r['decay_fraction']:g}")
    if r["depth_base"] + r["depth_log_coef"] * math.log2(r["min_width"]) - r["depth_offset"] <= 0:
        bad("depth_offset", "is too large: depth = H / (depth_base + depth_log_coef·log2 H − depth_offset) needs a "
                            "positive denominator at min_width")
    if r["max_params_floor"] > r["max_params_ceiling"]:
        bad("max_params_floor", f"({r['max_params_floor']:g}) must be at most max_params_ceiling "
                                f"({r['max_params_ceiling']:g})")


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DelphiError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}") from None
