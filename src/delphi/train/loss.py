"""Next-token loss (Levanter's): cross entropy on float32 logits, mean over predicted positions,
plus z-loss `weight · logsumexp(logits)²` per token; and bits-per-byte.

The log-softmax is computed once and shared by the cross entropy and the z-loss, so the z-loss
costs one extra square (no second pass over the vocabulary).
"""

from __future__ import annotations

import math

import torch

LOG2_E = 1.0 / math.log(2.0)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood (nats) and log-sum-exp, both float32, shape of `targets`."""
    x = logits.float()
    # One log-softmax pass gives both: nll = −logp[target], and lse = x_i − logp_i for any i
    # (index 0 here), so the z-loss needs no second reduction over the vocabulary. Its gradient
    # through x_0 − logp_0 is exactly softmax(x), as for logsumexp.
    logp = torch.log_softmax(x, dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    lse = x[..., 0] - logp[..., 0]
    return nll, lse


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss_weight: float = 0.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, cross entropy): objective = mean CE + z_loss_weight · mean(lse²).

    `logits` [B, T, V] (any float dtype; upcast to float32), `targets` [B, T] token ids.
    The cross entropy (nats/token) is returned separately for logging.
    """
    nll, lse = token_nll(logits, targets)
    ce = nll.mean()
    if z_loss_weight:
        return ce + z_loss_weight * lse.square().mean(), ce
    return ce, ce


def bits_per_byte(loss_sum_nats: float, num_bytes: float) -> float:
    """bpb = Σ nats / Σ UTF-8 bytes of the target tokens · log2(e)."""
    return float(loss_sum_nats) / float(num_bytes) * LOG2_E if num_bytes else float("nan")
