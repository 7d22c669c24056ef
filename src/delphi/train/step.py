"""One optimizer step: the forward and loss (`make_forward_loss`), gradient accumulation over
micro-batches (`micro_batch_size`), and whether to compile them (`resolve_compile`)."""

from __future__ import annotations

import contextlib
import os

import torch

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.train import distributed as dist
from delphi.train.loss import lm_loss


def resolve_compile(mode: str, device: str, spec: RunSpec, info: dist.DistInfo) -> bool:
    """torch.compile where it pays: always on CUDA; on CPU only for runs long enough to amortise
    the one-off compile (~25–120 s on 2 cores with a cold inductor cache, well under a second
    warm; it buys 1.4–1.5× per step on the held-out shapes of `micro`, less on small grid
    shapes; benchmarks/RESULTS.md)."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if info.distributed and info.parallel == "fsdp" and not device.startswith("cuda"):
        return False
    if device.startswith("cuda"):
        return True
    # CPU: the compile pays back after a few minutes of training.
    est_flops_per_s = 2e10 * max(1, torch.get_num_threads())
    return spec.flops / est_flops_per_s > 600


def autocast(device: str, amp_dtype: torch.dtype | None):
    """The run's autocast context (a no-op for fp32 runs)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=amp_dtype)


def make_forward_loss(model, amp_dtype: torch.dtype | None, z_loss_weight: float, *, compile: bool = False,
                      fused: bool = True):
    """`fn(inputs, targets, document_ids) -> (objective, cross entropy)`: forward under autocast
    (when `amp_dtype`), float32 loss with z-loss.

    `fused` (default): the model computes the head and the loss together a chunk of tokens at a
    time (`delphi.train.loss.fused_linear_lm_loss`), never materialising the [B, T, V] logits;
    otherwise logits, then `lm_loss` (the reference path, kept for comparison). With `compile`,
    forward and loss are compiled as one graph."""
    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"

    def forward_loss(inputs, targets, doc):
        with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if fused:
                return model(inputs, doc, targets=targets, z_loss_weight=z_loss_weight)
            logits = model(inputs, doc)
        return lm_loss(logits, targets, z_loss_weight)

    return torch.compile(forward_loss) if compile else forward_loss


def micro_batch_size(local_rows: int) -> int:
    """Rows per forward/backward: `DELPHI_MICRO_BATCH` (gradient accumulation), else all rows."""
    env = os.environ.get("DELPHI_MICRO_BATCH")
    if not env:
        return local_rows
    mb = int(env)
    if mb <= 0 or local_rows % mb:
        raise DelphiError(f"DELPHI_MICRO_BATCH={mb} must divide the per-process batch {local_rows}")
    return mb


def accumulate_gradients(loss_fn, tokens: torch.Tensor, docs: torch.Tensor | None, micro: int) -> torch.Tensor:
    """Forward and backward over `tokens` (this process's rows) `micro` rows at a time, each
    micro-batch's loss weighted by its share of the rows; returns the mean cross entropy."""
    rows = tokens.shape[0]
    ce_sum = torch.zeros((), device=tokens.device)
    for m0 in range(0, rows, micro):
        tk = tokens[m0:m0 + micro]
        dc = docs[m0:m0 + micro, :-1] if docs is not None else None
        obj, ce = loss_fn(tk[:, :-1], tk[:, 1:], dc)
        (obj * (tk.shape[0] / rows)).backward()
        ce_sum += ce.detach() * (tk.shape[0] / rows)
    return ce_sum
