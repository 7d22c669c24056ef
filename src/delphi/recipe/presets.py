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
    - target_steps 512 and min batch 2 (Delphi: 2^16 and 8): CPU runs see 10^5–10^7 tokens, so
      runs get 256–512 steps. With 128 target steps the batch outgrew the critical batch: the
      10×-held-out run of `tiny` trained 74 steps at batch 512 and missed its forecast by +5.9%,
      while the same model and tokens at batch 128 reached a 10.7% lower loss
      (benchmarks/RESULTS.md);
    - reference point (width 64, B0 = 16 sequences, T0 = 1e6 tokens, 488 steps) with η0, η0,Adam,
      ε0, β2,0 searched by `delphi tune search` (30 trials: 20 over the default space, then 10
      around the best; benchmarks/tune/): macro loss 3.876 against 4.070 for the untuned
      constants (η0 0.01, η0,Adam 0.004, ε0 1e-8, β2,0 0.999). The embedding/norm LR η0,Adam
      matters most (one-layer models: embeddings are most of the parameters); 0.03–0.06 are
      within 0.13% of each other. AdamH moves each matrix by a relative `lr` per step, so
      few-hundred-step runs need larger steps than Delphi's 30k-step runs: the LR cap is 0.1,
      not 0.01.
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
    target_steps=512, min_batch=2, max_batch=1024, ref_batch=16.0, ref_tokens=1e6, lr0=0.0214, adam_lr0=0.0632,
    epsilon0=1.6e-9, beta2_0=0.9995, beta2_min=0.9, beta2_max=0.9999, lr_cap=0.1,
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
                isinstance(default, (int, float)) and not isinstance(v, (int, float))) or (
                isinstance(default, str) and not isinstance(v, str)):
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
