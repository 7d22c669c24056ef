"""Baseline optimizers: AdamW (Levanter's AdamConfig) and Cautious AdamC (Delphi's v1 recipe).

Both clip by one global norm over all parameters (one optax chain) and decay only the linear
weights (`weight_decay` on the "matrix" group, 0 elsewhere).

* AdamW: ``W ← W − lr_t · (u + λ·W)`` with ``u = m̂/(sqrt(v̂)+ε)`` (decoupled decay, scaled by
  the scheduled lr like optax.adamw / Levanter).
* Cautious AdamC (Levanter `CautiousConfig(adamc_weight_decay=True)`):
  - cautious mask (Liang et al. 2024, arXiv:2411.16085): ``mask = (u·g > 0)`` with the clipped
    gradient g; ``u_c = u·mask / (mean(mask) + ε)`` (mean per tensor, ε the Adam ε);
  - AdamC decay (Defazio 2025, arXiv:2506.02285): the decay coefficient is proportional to the
    scheduled lr, ``λ_t = λ · lr_t / lr_peak``, so ``W ← W − lr_t · (u_c + λ_t·W)`` and
    ``λ_t/lr_t`` stays constant over the schedule (keeps normalized layers' weight norms at
    their steady state instead of letting gradients grow as the lr decays).
"""

from __future__ import annotations

from typing import Iterable

import torch

from delphi.optim.adamh import GroupClippedOptimizer


class AdamW(GroupClippedOptimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, max_grad_norm: float | None = 1.0, *, cautious: bool = False,
                 adamc: bool = False, foreach: bool = True, all_reduce=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, clip_key="all")
        super().__init__(params, defaults, foreach=foreach, all_reduce=all_reduce)
        self.cautious = cautious
        self.adamc = adamc

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._clip()
        for group in self.param_groups:
            ps, gs, ms, vs, step = self._moments(group, group["params"])
            if not ps:
                continue
            u = self._adam_direction(group, ms, vs, step)
            lr, wd = group["lr"], group["weight_decay"]
            if self.cautious:
                eps = group["eps"]
                for i, (d, g) in enumerate(zip(u, gs)):
                    mask = (d * g > 0).to(d.dtype)
                    u[i] = d * mask / (mask.mean() + eps)
            if wd:
                if self.adamc:
                    wd = wd * (lr / group["peak_lr"]) if group["peak_lr"] else 0.0
                # Decay uses the weights before this step's update (optax.add_decayed_weights).
                if self.foreach:
                    torch._foreach_add_(u, ps, alpha=wd)
                else:
                    for d, p in zip(u, ps):
                        d.add_(p, alpha=wd)
            if self.foreach:
                torch._foreach_add_(ps, u, alpha=-lr)
            else:
                for p, d in zip(ps, u):
                    p.add_(d, alpha=-lr)
        return loss


def CautiousAdamC(params: Iterable, **kwargs) -> AdamW:
    """Cautious Adam with AdamC-corrected weight decay (Delphi v1's optimizer)."""
    return AdamW(params, cautious=True, adamc=True, **kwargs)
