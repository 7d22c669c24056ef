"""Compute definitions: what "C" means on the x-axis of the loss law and the allocation laws.

- `total` (the default, Delphi's definition): C = 3 · forward FLOPs per token · tokens, with the
  forward FLOPs of `ModelShape.flops_per_token` — every layer's matmuls, attention over the
  sequence, and the LM head (2·H·V per token). This is the budget the recipe plans with.
- `non-embedding`: the same without the LM head, C = total − 6·H·V·tokens (the embedding lookup
  costs no FLOPs). Kaplan et al. 2020 and Pearce & Song 2024 count compute this way; at small
  widths with a large vocabulary the LM head is a large, width-dependent share of the total.
- `deepseek-m`: DeepSeek LLM (2024, §3.2), M = 72·n_layer·d² + 12·n_layer·d·l_seq non-embedding
  FLOPs per token (forward + backward, attention included), C = M · tokens. The formula is
  DeepSeek's, applied literally: it assumes their layer shapes (attention 4d², MLP 8d²), so for
  Delphi's MLP of 4H it is not the exact count of our model's FLOPs (`non-embedding` is).

Per run, the value comes from the runs table's shape columns: `hidden_size`, `vocab_size`
(non-embedding) and `num_layers`, `seq_len` (deepseek-m). A suite's `runs.csv` and a suite
directory have them (from each run's `run.json`); another table needs those columns.
"""

from __future__ import annotations

import numpy as np

from delphi.errors import DelphiError

DEFINITIONS = ("total", "non-embedding", "deepseek-m")
DEFAULT = "total"
NEEDED_COLUMNS = {"total": ("flops",), "non-embedding": ("flops", "hidden_size", "vocab_size", "tokens"),
                  "deepseek-m": ("hidden_size", "num_layers", "seq_len", "tokens")}
DESCRIPTION = {"total": "total training FLOPs, 3·forward FLOPs per token·tokens (LM head included)",
               "non-embedding": "training FLOPs without the LM head: total − 6·hidden·vocab·tokens",
               "deepseek-m": "DeepSeek's M·tokens, M = 72·n_layer·d² + 12·n_layer·d·l_seq"}


def check_definition(name: str, where: str = "compute") -> str:
    if name not in DEFINITIONS:
        raise DelphiError(f"{where}: unknown compute definition {name!r}; use {', '.join(DEFINITIONS)}")
    return name


def shape_compute(shape, tokens: float, definition: str = DEFAULT) -> float:
    """C of a model of `shape` (a `ModelShape`) trained on `tokens`, in the given definition."""
    check_definition(definition)
    total = shape.training_flops(tokens)
    if definition == "total":
        return float(total)
    H, L = shape.hidden_size, shape.num_layers
    if definition == "non-embedding":
        return float(total - 6.0 * H * shape.vocab_size * tokens)
    return float((72.0 * L * H * H + 12.0 * L * H * shape.seq_len) * tokens)


def table_compute(table, definition: str = DEFAULT, where: str = "runs table") -> np.ndarray:
    """Each run's C in `definition`, from the table's columns (see the module docstring)."""
    import pandas as pd

    check_definition(definition)
    missing = [c for c in NEEDED_COLUMNS[definition] if c not in table.columns]
    if missing:
        raise DelphiError(f"{where}: compute {definition!r} needs the column(s) {', '.join(map(repr, missing))} "
                          "(a suite's runs.csv or suite directory has them; otherwise add them or use "
                          "--compute total)")
    col = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in NEEDED_COLUMNS[definition]}
    for c, v in col.items():
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if bad.size:
            i = int(bad[0])
            src = table["source"].iloc[i] if "source" in table.columns else f"row {i + 1}"
            raise DelphiError(f"{where}: {src}: column {c!r} must be a positive number for compute "
                              f"{definition!r}, got {table[c].iloc[i]!r}")
    if definition == "total":
        return col["flops"]
    if definition == "non-embedding":
        out = col["flops"] - 6.0 * col["hidden_size"] * col["vocab_size"] * col["tokens"]
    else:
        L, H = col["num_layers"], col["hidden_size"]
        out = (72.0 * L * H * H + 12.0 * L * H * col["seq_len"]) * col["tokens"]
    bad = np.flatnonzero(~(out > 0))
    if bad.size:
        i = int(bad[0])
        src = table["source"].iloc[i] if "source" in table.columns else f"row {i + 1}"
        raise DelphiError(f"{where}: {src}: {definition} compute is not positive ({out[i]:.4g}); the flops, "
                          "hidden_size and vocab_size columns disagree")
    return out
