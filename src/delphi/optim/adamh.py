"""AdamH exactly as Levanter trained Delphi (`levanter/optim/adamh.py`), as a torch Optimizer.

Two kinds of parameter group:

* ``kind="adamh"`` (every linear weight): Adam direction, then a step of relative size exactly
  ``lr`` on the sphere of the weight's Frobenius norm::

      u  = m̂ / (sqrt(v̂) + ε)
      W̃  = W − lr · u · ‖W‖_F / max(‖u‖_F, 1e-10)
      W ← W̃ · ‖W‖_F / max(‖W̃‖_F, 1e-10)

  One norm per matrix (per layer, per projection), so each projection keeps its initial norm.
* ``kind="adam"`` (embedding, norm gains): plain Adam, ``W ← W − lr · u``.

Clipping by global norm (optax.clip_by_global_norm: scale ``max/‖g‖`` only when ``‖g‖ ≥ max``,
no epsilon) is applied per ``clip_key``; Delphi gives each group its own key, so the two groups
are clipped separately (each optax chain only sees its own leaves). No weight decay.

The vectorised path uses ``torch._foreach_*`` kernels (one launch per op over all tensors); the
per-tensor path is the plain reference it is tested against. Under FSDP2 the parameters are
DTensor shards: the step runs on the local shards and the squared norms are all-reduced, so
every norm is the norm of the full unsharded matrix.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

_NORM_FLOOR = 1e-10


def _local(t):
    """The local shard of a DTensor (FSDP2), or the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def _is_sharded(t) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements")


def _sq_norms(tensors: list[torch.Tensor], foreach: bool) -> torch.Tensor:
    """Squared Frobenius norms of local tensors as one float32 vector."""
    if not tensors:
        return torch.zeros(0)
    if foreach:
        norms = torch._foreach_norm(tensors)
    else:
        norms = [torch.linalg.vector_norm(t) for t in tensors]
    return torch.stack([n.float() for n in norms]).square()


class GroupClippedOptimizer(torch.optim.Optimizer):
    """Shared machinery: LR per group (`lr`, `peak_lr`), global-norm clipping per `clip_key`,
    sharded-norm reduction, and the pre-clip gradient norms of the last step (for logging)."""

    def __init__(self, params, defaults, *, foreach: bool = True,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("peak_lr", group["lr"])
        self.foreach = foreach
        # Sums a vector of local squared norms over ranks when parameters are sharded.
        self._all_reduce = all_reduce
        self.last_grad_norms: dict[str, float] = {}

    def _global_sq(self, sq: torch.Tensor, sharded: bool) -> torch.Tensor:
        if sharded and sq.numel():
            if self._all_reduce is not None:
                return self._all_reduce(sq)
            import torch.distributed as dist

            sq = sq.clone()
            dist.all_reduce(sq)
        return sq

    @torch.no_grad()
    def _clip(self) -> dict[int, float]:
        """Clip gradients in place per clip_key; returns {group index: applied scale}."""
        by_key: dict[str, list[int]] = {}
        for i, group in enumerate(self.param_groups):
            by_key.setdefault(group.get("clip_key", str(i)), []).append(i)
        scales: dict[int, float] = {}
        self.last_grad_norms = {}
        for key, idxs in by_key.items():
            grads = [_local(p.grad) for i in idxs for p in self.param_groups[i]["params"] if p.grad is not None]
            sharded = any(_is_sharded(p.grad) for i in idxs for p in self.param_groups[i]["params"]
                          if p.grad is not None)
            sq = self._global_sq(_sq_norms(grads, self.foreach), sharded)
            norm = float(sq.sum().sqrt()) if sq.numel() else 0.0
            self.last_grad_norms[key] = norm
            max_norm = max(self.param_groups[i].get("max_grad_norm") or 0.0 for i in idxs)
            scale = 1.0
            if max_norm > 0 and norm >= max_norm:
                scale = max_norm / norm
                if self.foreach:
                    torch._foreach_mul_(grads, scale)
                else:
                    for g in grads:
                        g.mul_(scale)
            for i in idxs:
                scales[i] = scale
        return scales

    def _moments(self, group, params: list) -> tuple[list, list, list, list, int]:
        """Update Adam moments for the group's params with grads; returns local (p, g, m, v, t)."""
        ps, gs, ms, vs = [], [], [], []
        step = None
        for p in params:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(_local(p), memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(_local(p), memory_format=torch.preserve_format)
            state["step"] += 1
            step = int(state["step"].item()) if step is None else step
            ps.append(_local(p))
            gs.append(_local(p.grad))
            ms.append(state["exp_avg"])
            vs.append(state["exp_avg_sq"])
        b1, b2 = group["betas"]
        if not ps:
            return ps, gs, ms, vs, 0
        if self.foreach:
            torch._foreach_lerp_(ms, gs, 1 - b1)  # m ← β1·m + (1−β1)·g
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        else:
            for g, m, v in zip(gs, ms, vs):
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
        return ps, gs, ms, vs, step

    def _adam_direction(self, group, ms, vs, step) -> list[torch.Tensor]:
        """u = m̂ / (sqrt(v̂) + ε), ε outside the square root (optax.scale_by_adam)."""
        b1, b2 = group["betas"]
        bc1 = 1 - b1 ** step
        bc2_sqrt = math.sqrt(1 - b2 ** step)
        eps = group["eps"]
        if self.foreach:
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, bc2_sqrt)
            torch._foreach_add_(denom, eps)
            u = list(torch._foreach_div(ms, denom))
            torch._foreach_div_(u, bc1)
            return u
        return [(m / bc1) / (v.sqrt() / bc2_sqrt + eps) for m, v in zip(ms, vs)]


class AdamH(GroupClippedOptimizer):
    """AdamH on groups with ``kind="adamh"``, Adam on groups with ``kind="adam"``.

    Build it with :func:`delphi.optim.build_optimizer`, which partitions a model Delphi's way.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.9999), eps: float = 1e-8,
                 max_grad_norm: float | None = 0.1, kind: str = "adamh", *, foreach: bool = True,
                 all_reduce=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, max_grad_norm=max_grad_norm, kind=kind)
        super().__init__(params, defaults, foreach=foreach, all_reduce=all_reduce)
        for group in self.param_groups:
            if group["kind"] not in ("adamh", "adam"):
                raise ValueError(f"AdamH: group kind must be 'adamh' or 'adam', got {group['kind']!r}")

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
            lr = group["lr"]
            if group["kind"] == "adam":
                if self.foreach:
                    torch._foreach_add_(ps, u, alpha=-lr)
                else:
                    for p, d in zip(ps, u):
                        p.add_(d, alpha=-lr)
                continue
            sharded = any(_is_sharded(p) for p in group["params"] if p.grad is not None)
            p_norm = self._global_sq(_sq_norms(ps, self.foreach), sharded).sqrt()
            u_norm = self._global_sq(_sq_norms(u, self.foreach), sharded).sqrt()
            step_scale = lr * p_norm / u_norm.clamp_min(_NORM_FLOOR)
            if self.foreach:
                torch._foreach_mul_(u, step_scale.tolist())
                torch._foreach_sub_(ps, u)
            else:
                for p, d, s in zip(ps, u, step_scale.unbind()):
                    p.sub_(d * s)
            new_norm = self._global_sq(_sq_norms(ps, self.foreach), sharded).sqrt()
            back = p_norm / new_norm.clamp_min(_NORM_FLOOR)
            if self.foreach:
                torch._foreach_mul_(ps, back.tolist())
            else:
                for p, s in zip(ps, back.unbind()):
                    p.mul_(s)
        return loss
