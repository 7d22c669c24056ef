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


# ---- fused LM head + loss -----------------------------------------------------------------------

# Rows of logits materialised at a time: 512K float32 elements (2 MB), about an L2/L3-sized tile on
# CPUs and small next to activations on GPUs. Independent of the result (up to float rounding).
FUSED_CHUNK_ELEMENTS = 1 << 19


def chunk_logit_gradient(logits: torch.Tensor, targets: torch.Tensor, n: int, z_loss_weight: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of the fused loss between its two matmuls: float32 `logits` [c, V] are turned in
    place into ∂(Σ nll + z Σ lse²)/∂logits / n; returns (that gradient, lse [c, 1], target logit
    [c, 1])."""
    target_logit = logits.gather(1, targets[:, None])
    # One exponential pass serves both the log-sum-exp and the softmax: e = exp(x − max) in
    # place, taken as 2^((x − max)·log2 e): torch's CPU exp2 is 2–4× faster than its exp
    # (benchmarks/RESULTS.md), which pays for the extra multiply many times over.
    peak = logits.amax(dim=1, keepdim=True)
    g = logits.sub_(peak).mul_(LOG2_E).exp2_()
    total = g.sum(dim=1, keepdim=True)
    lse = peak + total.log()
    # softmax · (1 + 2z·lse) / n − onehot(y) / n, in place.
    if z_loss_weight:
        g.mul_((1.0 + 2.0 * z_loss_weight * lse).div_(total * n))
    else:
        g.div_(total * n)
    g.scatter_add_(1, targets[:, None], torch.full_like(lse, -1.0 / n))
    return g, lse, target_logit


def accumulate_head_gradient(grad_weight_t: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> None:
    """`grad_weight_t` [H, V] (float32) += h^T g for one chunk: `h` [c, H] hidden states and `g`
    [c, V] logit gradients, both in the matmul dtype.

    Transposed ([H, V], not the head's [V, H] = g^T h): on CPU the same sums run 1.2–2.1× faster
    in float32 at widths 112–16 and 3–11% faster in bf16, bitwise equal
    (`benchmarks/kernel_choices.py --tables 5`); the caller transposes once at the end.
    """
    if g.dtype == torch.float32:
        grad_weight_t.addmm_(h.t(), g)
    else:
        grad_weight_t += (h.t() @ g).float()


class _FusedLinearLoss(torch.autograd.Function):
    """mean_t CE(h_t W^T, y_t) + z · mean_t lse_t², with ∂/∂h and ∂/∂W computed in the forward pass,
    a chunk of tokens at a time (the "fused linear cross-entropy" of Liger-Kernel / Cut Cross-Entropy).

    Why: the plain path materialises the [tokens × vocab] logits, their float32 upcast, the
    log-softmax, a zero-filled gather gradient and the softmax gradient — five tensors of that size
    and as many full passes, which dominate small models on CPU. Here each chunk's logits are
    computed once, turned in place into the gradient with respect to the logits
    (softmax·(1 + 2z·lse) − onehot, over the token count), and immediately contracted into the
    gradients of the hidden states and the head weight. The backward pass only scales them.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, z_loss_weight: float, matmul_dtype):
        n, v = hidden.shape[0], weight.shape[0]
        chunk = max(1, min(n, FUSED_CHUNK_ELEMENTS // max(v, 1)))
        w = weight.to(matmul_dtype)
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_weight_t = torch.zeros(weight.shape[::-1], dtype=torch.float32, device=weight.device)  # [H, V]
        ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        z_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk):
            h = hidden[start:start + chunk].to(matmul_dtype)
            y = targets[start:start + chunk]
            g, lse, target_logit = chunk_logit_gradient((h @ w.t()).float(), y, n, z_loss_weight)
            ce_sum += (lse - target_logit).sum()
            if z_loss_weight:
                z_sum += lse.square().sum()
            g_m = g.to(matmul_dtype)
            grad_hidden[start:start + chunk] = g_m @ w
            accumulate_head_gradient(grad_weight_t, h, g_m)
        grad_weight = grad_weight_t.t().contiguous()
        ce = ce_sum / n
        objective = ce + z_loss_weight * z_sum / n if z_loss_weight else ce.clone()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.mark_non_differentiable(ce)
        return objective, ce

    @staticmethod
    def backward(ctx, grad_objective, _grad_ce):
        grad_hidden, grad_weight = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (grad_hidden.mul_(grad_objective).to(h_dtype), grad_weight.mul_(grad_objective).to(w_dtype),
                None, None, None)


def fused_linear_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         z_loss_weight: float = 0.0, matmul_dtype: torch.dtype | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """`lm_loss(hidden @ weight.T, targets, z_loss_weight)` without materialising the logits:
    (objective, cross entropy), equal to the plain path up to float rounding in value and gradient.

    `hidden` [..., H] (final-norm output), `weight` [V, H] (the LM head), `targets` [...] ids.
    The head matmuls run in `matmul_dtype` (default: the hidden states' dtype; pass the autocast
    dtype under mixed precision, as an autocast `lm_head` would); the softmax and the loss are
    float32. Autocast is off inside, so these dtypes are exactly what runs.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = targets.reshape(-1)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _FusedLinearLoss.apply(h, weight, y, float(z_loss_weight), matmul_dtype or hidden.dtype)
