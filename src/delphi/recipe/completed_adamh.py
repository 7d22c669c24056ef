"""Delphi's recipe, "Complete(d)AdamH": compute budget → complete training configurations.

Every constant is a field of the frozen `Recipe` dataclass, so another scale (a CPU ladder, a
longer context) is a `dataclasses.replace(DELPHI, ...)` away and keeps every rule:

* depth      L = round(H / (depth_base + depth_log_coef·log2 H − depth_offset)), at least min_layers
* horizon    T = C / (3 · fpt(H))   (unrounded target tokens; all hyperparameters use it)
* LR         lr = min(cap, η0 · sqrt(B/B0) · (T0/T)^0.3)
* Adam LR    adam_lr = min(cap, η0,Adam · sqrt(B·T0 / (B0·T)))
* epsilon    ε = ε0 · sqrt(B0·T / (B·T0));  β2 = clip(β2,0^(B/B0), 0.9, 0.9999)
* batch      B = T / (target_steps · s) rounded up to a power of two (Delphi; `batch_rounding =
             "integer"` rounds to the nearest whole sequence instead), halved while B > min and
             any hyperparameter hits its bound; B outside [min, max] rejects the width.
* widths     H = min_width, +step … below max_width; skip if params > max_params(C) or
             T / params > max_tokens_per_param (or, CPU ladders only, < min_tokens_per_param).

Pure Python (no torch): `delphi plan` must start instantly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from delphi.config import DataSpec, ModelShape, OptimizerHParams, RunSpec
from delphi.errors import DelphiError

# Delphi's IsoFLOP budgets (the fitted grid, 78 runs).
DELPHI_ISOFLOP_BUDGETS = (3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20)
BATCH_ROUNDINGS = ("power_of_two", "integer")


@dataclass(frozen=True)
class Candidate:
    """One complete training configuration for a budget (a row of `delphi plan`)."""

    name: str
    budget: float
    recipe: str
    shape: ModelShape
    batch_size: int
    train_steps: int
    optimizer: OptimizerHParams
    target_tokens: float  # the unrounded horizon T the hyperparameters were computed from

    @property
    def tokens(self) -> int:
        return self.batch_size * self.train_steps * self.shape.seq_len

    @property
    def params(self) -> int:
        return self.shape.num_params

    @property
    def flops(self) -> float:
        return self.shape.training_flops(self.tokens)

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    def to_dict(self) -> dict[str, Any]:
        o = self.optimizer
        return {
            "name": self.name,
            "budget": self.budget,
            "recipe": self.recipe,
            "hidden_size": self.shape.hidden_size,
            "num_layers": self.shape.num_layers,
            "num_heads": self.shape.num_heads,
            "params": self.params,
            "params_levanter": self.shape.num_params_levanter,
            "batch_size": self.batch_size,
            "train_steps": self.train_steps,
            "seq_len": self.shape.seq_len,
            "tokens": self.tokens,
            "learning_rate": o.lr,
            "adam_lr": o.adam_lr,
            "epsilon": o.epsilon,
            "beta1": o.beta1,
            "beta2": o.beta2,
            "weight_decay": o.weight_decay,
            "max_grad_norm": o.max_grad_norm,
            "z_loss_weight": o.z_loss_weight,
            "optimizer": o.name,
            "tokens_per_param": self.tokens_per_param,
            "flops": self.flops,
        }

    def to_run_spec(self, *, data: DataSpec | None = None, seed: int = 0, name: str | None = None,
                    **run_fields: Any) -> RunSpec:
        """The RunSpec that trains this candidate (extra RunSpec fields pass through)."""
        tags = dict(run_fields.pop("tags", {}) or {})
        return RunSpec(
            name=name or self.name,
            shape=self.shape,
            optimizer=self.optimizer,
            batch_size=self.batch_size,
            train_steps=self.train_steps,
            data=data or DataSpec(),
            seed=seed,
            budget=self.budget,
            recipe=self.recipe,
            tags=tags,
            **run_fields,
        )


@dataclass(frozen=True)
class Recipe:
    """Delphi's Complete(d)AdamH recipe; the defaults are the paper-scale constants."""

    name: str = "delphi"
    # Architecture
    seq_len: int = 4096
    head_dim: int = 128
    mlp_ratio: int = 4
    vocab_size: int = 128_256
    depth_base: float = 64.0
    depth_log_coef: float = 4.0
    depth_offset: float = 9.0
    min_layers: int = 1  # a floor under the depth formula (e.g. 2: one depth family along a small grid)
    rope_scaling: bool = True
    # Width search
    min_width: int = 512
    width_step: int = 128
    width_step_large: int = 256
    large_step_above: float = 2e19  # budgets above this use width_step_large
    max_width: int = 131_072  # exclusive
    # Caps
    max_params_floor: float = 12e9
    max_params_ref_flops: float = 3e20
    max_params_ceiling: float = 1e12
    max_tokens_per_param: float | None = 250.0
    # Not a Delphi rule (None at paper scale): CPU ladders use it to drop widths far too large
    # for the budget, which keeps every IsoFLOP curve centred on its optimum and cheap.
    min_tokens_per_param: float | None = None
    # Batch and steps
    target_steps: int = 2**16
    # "power_of_two" (Delphi) or "integer": with runs of a few hundred steps, power-of-two batches
    # make the step count jump by up to 2× between neighbouring widths of an IsoFLOP curve.
    batch_rounding: str = "power_of_two"
    min_batch: int = 8
    max_batch: int = 8192
    # Reference point and hyperparameter transfer
    ref_batch: float = 64.0  # B0, sequences
    ref_tokens: float = 2.5e9  # T0
    lr0: float = 0.00630  # η0, projection (AdamH) LR
    adam_lr0: float = 0.000656  # η0,Adam, embedding/norm LR
    epsilon0: float = 1.85e-8
    beta1: float = 0.9
    beta2_0: float = 0.9999
    beta2_min: float = 0.9
    beta2_max: float = 0.9999
    lr_cap: float = 0.01
    horizon_exponent: float = 0.3  # lr ∝ (T0/T)^0.3
    max_grad_norm: float = 0.1
    z_loss_weight: float = 1e-7
    warmup_fraction: float = 0.1
    decay_fraction: float = 0.2
    optimizer: str = "adamh"
    # Default IsoFLOP budgets for `delphi plan --grid` and suites
    isoflop_budgets: tuple[float, ...] = DELPHI_ISOFLOP_BUDGETS
    name_suffix: str = "delphi"

    # ---- shapes ------------------------------------------------------------------------------
    def __post_init__(self):
        if self.batch_rounding not in BATCH_ROUNDINGS:
            raise DelphiError(f"recipe {self.name!r}: batch_rounding must be one of {', '.join(BATCH_ROUNDINGS)}, "
                              f"got {self.batch_rounding!r}")

    def depth(self, hidden: int) -> int:
        formula = round(hidden / (self.depth_base + self.depth_log_coef * math.log2(hidden) - self.depth_offset))
        return max(1, self.min_layers, formula)

    def shape(self, hidden: int) -> ModelShape:
        if hidden % self.head_dim:
            raise DelphiError(f"hidden size {hidden} is not a multiple of the head dim {self.head_dim}")
        heads = hidden // self.head_dim
        return ModelShape(
            hidden_size=hidden, num_layers=self.depth(hidden), num_heads=heads, num_kv_heads=heads,
            head_dim=self.head_dim, intermediate_size=self.mlp_ratio * hidden, vocab_size=self.vocab_size,
            seq_len=self.seq_len, rope_scaling=self.rope_scaling,
        )

    def widths(self, budget: float) -> range:
        step = self.width_step_large if budget > self.large_step_above else self.width_step
        return range(self.min_width, self.max_width, step)

    def max_params(self, budget: float) -> float:
        return min(max(self.max_params_floor, self.max_params_floor * math.sqrt(budget / self.max_params_ref_flops)),
                   self.max_params_ceiling)

    # ---- hyperparameters -----------------------------------------------------------------------
    def _raw_hparams(self, batch: float, tokens: float, hidden: int) -> tuple[float, float, float, float]:
        """Unclipped (lr, adam_lr, epsilon, beta2) for batch B (sequences), horizon T (tokens) and
        width H (unused by this recipe: AdamH's LR is width-free)."""
        B0, T0 = self.ref_batch, self.ref_tokens
        lr = self.lr0 * math.sqrt(batch / B0) * (T0 / tokens) ** self.horizon_exponent
        adam_lr = self.adam_lr0 * math.sqrt(batch * T0 / (B0 * tokens))
        eps = self.epsilon0 * math.sqrt(B0 * tokens / (batch * T0))
        beta2 = self.beta2_0 ** (batch / B0)
        return lr, adam_lr, eps, beta2

    def hyperparams(self, batch: int, tokens: float, hidden: int) -> OptimizerHParams:
        lr, adam_lr, eps, beta2 = self._raw_hparams(batch, tokens, hidden)
        return OptimizerHParams(
            name=self.optimizer, lr=min(self.lr_cap, lr), adam_lr=min(self.lr_cap, adam_lr), beta1=self.beta1,
            beta2=min(max(beta2, self.beta2_min), self.beta2_max), epsilon=eps, max_grad_norm=self.max_grad_norm,
            weight_decay=0.0, z_loss_weight=self.z_loss_weight, warmup_fraction=self.warmup_fraction,
            decay_fraction=self.decay_fraction, min_lr_ratio=0.0,
        )

    def _batch_hits_bounds(self, batch: int, tokens: float, hidden: int) -> bool:
        """True while the batch is too large for the hyperparameters to stay inside their bounds."""
        lr, adam_lr, _, beta2 = self._raw_hparams(batch, tokens, hidden)
        return lr >= self.lr_cap or adam_lr >= self.lr_cap or beta2 <= self.beta2_min

    def batch_size(self, tokens: float, hidden: int) -> int | None:
        """Sequences per step for horizon T, or None when no batch in [min, max] is valid."""
        ideal = tokens / (self.target_steps * self.seq_len)
        if self.batch_rounding == "integer":
            batch = max(self.min_batch, round(ideal))  # like rounding up to 2^k, never below the minimum
        else:
            batch = _next_power_of_two(ideal)
        while batch > self.min_batch and self._batch_hits_bounds(batch, tokens, hidden):
            batch //= 2
        if batch < self.min_batch or batch > self.max_batch:
            return None
        return batch

    # ---- candidates ----------------------------------------------------------------------------
    def run_name(self, budget: float, shape: ModelShape, batch: int) -> str:
        return f"isoflop-{budget:.0e}-d{shape.hidden_size}-L{shape.num_layers}-B{batch}-{self.name_suffix}"

    def candidate(self, budget: float, hidden: int) -> Candidate | None:
        """The configuration at width `hidden` for budget C, or None when a rule rejects it."""
        shape = self.shape(hidden)
        tokens = budget / (3 * shape.flops_per_token)
        params = shape.num_params_levanter  # Levanter's count drives the caps
        if params > self.max_params(budget):
            return None
        if self.max_tokens_per_param is not None and tokens / params > self.max_tokens_per_param:
            return None
        if self.min_tokens_per_param is not None and tokens / params < self.min_tokens_per_param:
            return None
        batch = self.batch_size(tokens, hidden)
        if batch is None:
            return None
        steps = round(tokens / (batch * self.seq_len))
        if steps < 1:
            return None
        return Candidate(
            name=self.run_name(budget, shape, batch), budget=budget, recipe=self.name, shape=shape,
            batch_size=batch, train_steps=steps, optimizer=self.hyperparams(batch, tokens, hidden),
            target_tokens=tokens,
        )

    def candidates(self, budget: float) -> list[Candidate]:
        """Every valid configuration for budget C, smallest width first (an IsoFLOP curve)."""
        budget = check_budget(budget)
        return [c for h in self.widths(budget) if (c := self.candidate(budget, h)) is not None]

    def grid(self, budgets: tuple[float, ...] | list[float] | None = None) -> list[Candidate]:
        return [c for b in (budgets or self.isoflop_budgets) for c in self.candidates(b)]

    def heldout(self, budget: float, alloc_a: float, alloc_alpha: float, batch_size: int | None = None,
                suffix: str | None = None) -> Candidate:
        """The held-out ("optimal") run at C chosen by an allocation law D*(C) = A·C^α.

        Among C's candidates, the one with the smallest tokens ≥ D*(C) (else the one with the most
        tokens). With a fixed batch size, steps and hyperparameters are recomputed from
        (B_fixed, candidate.tokens).
        """
        cands = self.candidates(budget)
        if not cands:
            raise DelphiError(f"budget {budget:.3g} FLOPs has no valid candidate under recipe {self.name!r}")
        if not (alloc_a > 0 and math.isfinite(alloc_alpha)):
            raise DelphiError("allocation law needs A > 0 and a finite alpha")
        try:
            target = alloc_a * budget ** alloc_alpha
        except OverflowError:
            raise DelphiError(f"allocation law D*(C) = {alloc_a:g}·C^{alloc_alpha:g} overflows at C = {budget:.3g}; "
                              "alpha should be about 0.5") from None
        above = [c for c in cands if c.tokens >= target]
        chosen = min(above, key=lambda c: c.tokens) if above else max(cands, key=lambda c: c.tokens)
        if batch_size is not None:
            if batch_size < 1:
                raise DelphiError(f"--batch-size must be positive, got {batch_size}")
            steps = round(chosen.tokens / (batch_size * self.seq_len))
            if steps < 1:
                raise DelphiError(f"batch size {batch_size} leaves no training steps for {chosen.tokens} tokens")
            chosen = dataclasses.replace(
                chosen, batch_size=batch_size, train_steps=steps,
                optimizer=self.hyperparams(batch_size, chosen.tokens, chosen.shape.hidden_size),
                name=self.run_name(budget, chosen.shape, batch_size),
            )
        if suffix:
            chosen = dataclasses.replace(chosen, name=f"{chosen.name}-{suffix}")
        return chosen


def _next_power_of_two(x: float) -> int:
    """Smallest power of two ≥ x (1 for x ≤ 1)."""
    if x <= 1:
        return 1
    return 1 << (math.ceil(x) - 1).bit_length()


def check_budget(budget: float) -> float:
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise DelphiError(f"budget {budget!r} is not a number; write FLOPs like 3e18") from None
    if not math.isfinite(b) or b <= 0:
        raise DelphiError(f"budget must be a positive, finite number of FLOPs, got {budget!r}")
    return b


DELPHI = Recipe()
