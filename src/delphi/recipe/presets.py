"""Named recipes.

* `delphi`    — Complete(d)AdamH at paper scale (exact).
* `delphi-v1` — Cautious AdamC, Delphi's first attempt (baseline).
* `cpu`       — Complete(d)AdamH with its constants rescaled for CPU ladders (the `tiny` and
  `micro` suites). Every rule is Delphi's: depth formula, MLP ratio 4, QK-norm, MHA, AdamH on
  projections + Adam on embeddings/norms, WSD 10%/20%, token-horizon LR (T0/T)^0.3, batch rule,
  β2/ε transfer. Only the constants move:
    - seq_len 128, head dim 32, vocab 4096 (the embedded byte-level BPE): at 1e11–1e13 FLOPs a
      4096-token context or a 128k vocabulary would leave no compute for the network itself;
    - widths 64…480 in steps of 32, and min_tokens_per_param 0.01 so that every IsoFLOP curve
      spans its optimum without spending compute on hopelessly large models;
    - target_steps 128 and min batch 4 (Delphi: 2^16 and 8): CPU runs have 10^5–10^7 tokens;
    - reference point B0 = 16 sequences, T0 = 2e6 tokens with η0, η0,Adam, ε0, β2,0 chosen for
      runs of ~100 steps (AdamH moves each matrix by a relative `lr` per step, so short runs need
      a larger lr than Delphi's 30k-step runs: the LR cap is 0.1 instead of 0.01).
  `delphi tune` (reference-tuning issue) replaces these constants with measured ones.
"""

from __future__ import annotations

import dataclasses

from delphi.errors import DelphiError
from delphi.recipe.cautious_adamc import DELPHI_V1
from delphi.recipe.completed_adamh import DELPHI, Recipe

CPU = dataclasses.replace(
    DELPHI, name="cpu", name_suffix="cpu", seq_len=128, head_dim=32, vocab_size=4096, rope_scaling=False,
    min_width=64, width_step=32, width_step_large=32, large_step_above=float("inf"), max_width=512,
    max_params_floor=1e9, max_params_ref_flops=1e14, max_params_ceiling=1e9, min_tokens_per_param=0.01,
    target_steps=128, min_batch=4, max_batch=1024, ref_batch=16.0, ref_tokens=2e6, lr0=0.02, adam_lr0=0.004,
    epsilon0=1e-8, beta2_0=0.999, beta2_min=0.9, beta2_max=0.9999, lr_cap=0.1,
    isoflop_budgets=(2e11, 6e11, 2e12),
)

RECIPES: dict[str, Recipe] = {"delphi": DELPHI, "delphi-v1": DELPHI_V1, "cpu": CPU}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DelphiError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}") from None
