"""Delphi's first attempt ("Cautious AdamC", recipe `delphi-v1`), kept as a baseline.

Same shapes, widths and batch rule as Complete(d)AdamH, but a width-scaled LR with no token
horizon term: lr = 0.33·sqrt(B)/H, AdamC-scaled weight decay 0.1, β1 0.95,
β2 = max(0.95, 0.98^(B/128)), ε 1e-15, max grad norm 1.0; the batch is halved until lr ≤ 0.01;
no tokens-per-parameter cap. One LR for every parameter (adam_lr = lr).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from delphi.config import OptimizerHParams
from delphi.recipe.completed_adamh import Recipe


@dataclass(frozen=True)
class CautiousAdamCRecipe(Recipe):
    name: str = "delphi-v1"
    optimizer: str = "adamc"
    lr_coef: float = 0.33
    weight_decay: float = 0.1
    beta1: float = 0.95
    beta2_floor: float = 0.95
    beta2_base: float = 0.98
    beta2_ref_batch: float = 128.0
    epsilon: float = 1e-15
    max_grad_norm: float = 1.0
    max_tokens_per_param: float | None = None
    name_suffix: str = "delphi-v1"

    def _raw_hparams(self, batch: float, tokens: float, hidden: int) -> tuple[float, float, float, float]:
        lr = self.lr_coef * math.sqrt(batch) / hidden
        beta2 = max(self.beta2_floor, self.beta2_base ** (batch / self.beta2_ref_batch))
        return lr, lr, self.epsilon, beta2

    def _batch_hits_bounds(self, batch: int, tokens: float, hidden: int) -> bool:
        lr, _, _, _ = self._raw_hparams(batch, tokens, hidden)
        return lr > self.lr_cap

    def hyperparams(self, batch: int, tokens: float, hidden: int) -> OptimizerHParams:
        lr, _, eps, beta2 = self._raw_hparams(batch, tokens, hidden)
        lr = min(self.lr_cap, lr)
        return OptimizerHParams(
            name=self.optimizer, lr=lr, adam_lr=lr, beta1=self.beta1, beta2=beta2, epsilon=eps,
            max_grad_norm=self.max_grad_norm, weight_decay=self.weight_decay, z_loss_weight=self.z_loss_weight,
            warmup_fraction=self.warmup_fraction, decay_fraction=self.decay_fraction, min_lr_ratio=0.0,
        )


DELPHI_V1 = CautiousAdamCRecipe()
