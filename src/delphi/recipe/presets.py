"""Named recipes.

* `delphi`    — Complete(d)AdamH at paper scale (exact).
* `delphi-v1` — Cautious AdamC, Delphi's first attempt (baseline).
* `cpu`       — Complete(d)AdamH with its constants rescaled for CPU ladders (the `tiny` and
  `micro` suites). Every rule is Delphi's: depth formula, MLP ratio 4, QK-norm, MHA, AdamH on
  projections + Adam on embeddings/norms, WSD 10%/20%, token-horizon LR (T0/T)^0.3, batch rule,
  β2/ε transfer, the tokens-per-parameter cap. Only the constants move, for these reasons:
    - seq_len 128, head dim 16, vocab 1024 (`embedded-bpe-1k`): at 1e10–1e14 FLOPs a 4096-token
      context or a large vocabulary would leave no compute for the network itself (measured: at
      width 64 a 4096-token LM head is ~75% of the FLOPs; with 1024 tokens a run reads ~2× more
      text per FLOP, see benchmarks/RESULTS.md);
    - widths 16, 32, 48, … (step 16) below 512 (width 16 is one head), and min_tokens_per_param 0.2 (not a Delphi rule)
      so each IsoFLOP curve spans its optimum (measured near 1–4 tokens/param at 3e11 FLOPs,
      where embeddings are most of the parameters) without spending compute on models far too
      large for the budget;
    - target_steps 128 and min batch 2 (Delphi: 2^16 and 8): CPU runs see 10^5–10^7 tokens;
    - reference point B0 = 16 sequences, T0 = 2e6 tokens, η0 = 0.01 and η0,Adam = 0.004 from a
      small LR sweep (1e11–1e12 FLOPs: η0 0.01 beat 0.02 by 0.15 nats at 1e12 and tied at 1e11;
      η0,Adam between 0.002 and 0.016 moved the loss < 0.02 nats); β2,0 = 0.999 and ε0 = 1e-8
      are Adam defaults, not tuned. AdamH moves each matrix by a relative `lr` per step, so
      ~100-step runs need larger steps than Delphi's 30k-step runs: the LR cap is 0.1, not 0.01.
  The reference-tuning issue (`delphi tune`) is meant to replace these with searched values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from delphi.errors import DelphiError
from delphi.recipe.cautious_adamc import DELPHI_V1
from delphi.recipe.completed_adamh import DELPHI, Recipe

CPU = dataclasses.replace(
    DELPHI, name="cpu", name_suffix="cpu", seq_len=128, head_dim=16, vocab_size=1024, rope_scaling=False,
    min_width=16, width_step=16, width_step_large=16, large_step_above=float("inf"), max_width=512,
    max_params_floor=1e9, max_params_ref_flops=1e14, max_params_ceiling=1e9, min_tokens_per_param=0.2,
    target_steps=128, min_batch=2, max_batch=1024, ref_batch=16.0, ref_tokens=2e6, lr0=0.01, adam_lr0=0.004,
    epsilon0=1e-8, beta2_0=0.999, beta2_min=0.9, beta2_max=0.9999, lr_cap=0.1,
    isoflop_budgets=(6e10, 1e11, 2e11, 3e11, 6e11),
)

RECIPES: dict[str, Recipe] = {"delphi": DELPHI, "delphi-v1": DELPHI_V1, "cpu": CPU}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def recipe_from_table(section: dict[str, Any], where: str = "recipe") -> Recipe:
    """A recipe from a TOML table: `preset = NAME` (default "delphi") plus any Recipe constants
    to override, each checked against the preset's type (a suite's or a tuned preset's [recipe])."""
    section = dict(section)
    preset = section.pop("preset", "delphi")
    if not isinstance(preset, str):
        raise DelphiError(f"{where}: recipe.preset must be a recipe name such as \"cpu\"")
    base = get_recipe(preset)
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(section) - fields)
    if unknown:
        raise DelphiError(f"{where}: unknown recipe constant(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    if "isoflop_budgets" in section:
        section["isoflop_budgets"] = tuple(section["isoflop_budgets"])
    for k, v in section.items():
        default = getattr(base, k)
        if isinstance(default, bool) != isinstance(v, bool) or (
                isinstance(default, (int, float)) and not isinstance(v, (int, float))):
            raise DelphiError(f"{where}: recipe.{k} must be like {default!r}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (not math.isfinite(v) or v < 0):
            raise DelphiError(f"{where}: recipe.{k} must be a finite non-negative number, got {v!r}")
    try:
        return dataclasses.replace(base, **section)
    except (TypeError, ValueError) as e:
        raise DelphiError(f"{where}: bad recipe constants ({e})") from None


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DelphiError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}") from None
