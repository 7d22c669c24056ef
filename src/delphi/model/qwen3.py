"""The Qwen3 decoder Delphi trains, in one readable file.

Same network as `transformers.Qwen3ForCausalLM` (parameter names match it one to one, minus the
`model.` prefix), built from a `ModelShape`:

    x = embed_tokens(ids)
    for each layer:  x = x + Attention(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
    logits = lm_head(RMSNorm(x))                       # untied unless shape.tie_embeddings

Attention: q/k/v projections, QK-norm (RMSNorm over the head dim, one weight shared by all heads,
separate for q and k) *before* RoPE, RoPE with optional Llama-3 frequency scaling, causal SDPA with
scale 1/sqrt(head_dim), grouped-query attention when num_kv_heads < num_heads, output projection.
With `document_ids`, attention is also blocked across document boundaries of packed sequences.

Initialisation follows Levanter (Delphi's trainer): every linear weight ~ truncated normal on
[-3, 3] times 1/sqrt(fan_in), the token embedding ~ truncated normal on [-3, 3] times 1/H, all norm
weights 1. Construction uses torch's global RNG, so `torch.manual_seed(s)` first makes it
deterministic. Building under `torch.device("meta")` allocates nothing (see `describe`);
`init_weights()` materialises the RoPE tables and re-initialises after `to_empty()`.

Written to be compiled (`torch.compile`) and run under bf16 autocast by the trainer: no
data-dependent Python control flow in `forward`, RoPE cos/sin precomputed as buffers, and the
plain causal case calls SDPA with `is_causal=True` so the fused kernel is taken.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from delphi.config import ModelShape
from delphi.errors import DelphiError

__all__ = ["Qwen3", "RMSNorm", "Attention", "MLP", "Block", "rope_inv_freq", "describe"]


# ---- rotary position embedding -------------------------------------------------------------

def rope_inv_freq(shape: ModelShape, device=None) -> torch.Tensor:
    """Inverse frequencies [head_dim/2] of RoPE, with Llama-3 scaling when `shape.rope_scaling`.

    Computed exactly as transformers' "default" / "llama3" rope types do (same float32 ops in the
    same order), so our rotary tables equal the HF model's bit for bit.
    """
    d = shape.head_dim
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    if not shape.rope_scaling:
        return inv_freq
    factor, low, high = shape.rope_factor, shape.rope_low_freq_factor, shape.rope_high_freq_factor
    old_context = shape.rope_original_max_position
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (beyond the original context) are slowed down by `factor`, short ones are
    # kept, and the band in between is interpolated smoothly.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_tables(shape: ModelShape, seq_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [seq_len, head_dim] (float32), "rotate_half" layout: freqs repeated twice."""
    inv_freq = rope_inv_freq(shape, device=device)
    pos = torch.arange(seq_len, dtype=torch.int64, device=device).float()
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, T, d] by position; cos/sin are [T, d]. Returned in x's dtype.

    The rotation is done in float32 (a no-op for float32 models): precise for bf16 weights or
    autocast, and q, k and v then reach SDPA in the same dtype.
    """
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos.float() + rotated * sin.float()).type_as(x)


# ---- modules -------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight, computed in float32 and returned in x's dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 statistics even under bf16 autocast (as HF does); the fused kernel needs the
        # input and weight dtypes to agree, hence the upcast before rather than after.
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).type_as(x)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        H, n, kv, d = shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = n, kv, d
        self.q_proj = nn.Linear(H, n * d, bias=False)
        self.k_proj = nn.Linear(H, kv * d, bias=False)
        self.v_proj = nn.Linear(H, kv * d, bias=False)
        self.o_proj = nn.Linear(n * d, H, bias=False)
        if shape.qk_norm:
            self.q_norm = RMSNorm(d, shape.rms_norm_eps)
            self.k_norm = RMSNorm(d, shape.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        # QK-norm acts on each head's vector, before the rotation.
        q = self.q_norm(self.q_proj(x).view(B, T, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.num_kv_heads != self.num_heads:
            # GQA: expand k/v to one head per query head. Explicit, so every SDPA kernel (incl.
            # the masked ones) can run it; `enable_gqa=True` is honoured by only some kernels.
            # Delphi itself is MHA, so this path serves GQA experiments and imported checkpoints.
            rep = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = attention(q, k, v, mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Causal SDPA (`is_causal=True` when unmasked, so the fused kernel is taken), in q's dtype.

    On CPU it always runs in float32, autocast or not: there torch's bf16 flash-attention kernel is
    2.6–3.4× slower than its float32 one at head dim 16 and sequence 128 (forward + backward, AMD
    Zen 5; `benchmarks/kernel_choices.py`), and a bf16 grid step spent a third of its time in it.
    float32 is also the more precise of the two; only the rounding of the result changes.
    """
    if q.device.type != "cpu":
        return _sdpa(q, k, v, mask)
    with torch.autocast("cpu", enabled=False):  # autocast would cast SDPA's inputs back to bf16
        return _sdpa(q.float(), k.float(), v.float(), mask).to(q.dtype)


def _sdpa(q, k, v, mask):
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        H, I = shape.hidden_size, shape.intermediate_size
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.input_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.self_attn = Attention(shape)
        self.post_attention_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.mlp = MLP(shape)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3(nn.Module):
    """Qwen3 causal LM. `model(input_ids [B,T], document_ids [B,T] | None) -> logits [B,T,V]`;
    `model(input_ids, document_ids, targets=..., z_loss_weight=...) -> (objective, cross entropy)`."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        if not isinstance(shape, ModelShape):
            raise DelphiError(f"Qwen3 needs a delphi.config.ModelShape, got {type(shape).__name__}")
        if shape.head_dim % 2:
            raise DelphiError(f"model shape: head_dim must be even for RoPE, got {shape.head_dim}")
        self.shape = shape
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # Not persistent: derived from the shape, so checkpoints and HF exports do not carry them.
        self.register_buffer("rope_cos", torch.empty(shape.seq_len, shape.head_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(shape.seq_len, shape.head_dim), persistent=False)
        self.init_weights()

    # ---- initialisation ----------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise every parameter as Delphi does and recompute the RoPE tables in place.

        Safe to call after `to_empty(device=...)` on a model built on the meta device.
        """
        self.init_rope()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if self.shape.tie_embeddings and module is self.lm_head:
                    continue  # shares the embedding's weight, initialised below
                fan_in = module.weight.shape[1]
                nn.init.trunc_normal_(module.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)
                module.weight.mul_(1.0 / math.sqrt(fan_in))
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        nn.init.trunc_normal_(self.embed_tokens.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)
        self.embed_tokens.weight.mul_(1.0 / self.shape.hidden_size)

    @torch.no_grad()
    def init_rope(self) -> None:
        """Fill the RoPE cos/sin buffers (float32, on the buffers' current device)."""
        device = self.rope_cos.device
        if device.type == "meta":
            return
        cos, sin = rope_tables(self.shape, self.shape.seq_len, device=device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, document_ids: torch.Tensor | None = None, *,
                targets: torch.Tensor | None = None, z_loss_weight: float = 0.0):
        """Logits [B, T, V]; or, with `targets` [B, T], the training loss `(objective, cross
        entropy)` of `delphi.train.loss.lm_loss` computed by the fused head + loss, which never
        materialises the logits (same value and gradients up to float rounding). The loss is taken
        inside `forward` so that wrappers (DDP, FSDP2) see the head weight used where they expect."""
        B, T = input_ids.shape
        if T <= self.rope_cos.shape[0]:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        else:
            # Longer than the shape's context (e.g. evaluation): compute the tables for this call.
            cos, sin = rope_tables(self.shape, T, device=input_ids.device)
        mask = None
        if document_ids is not None:
            # Boolean [B, 1, T, T]: causal and same document. RoPE is relative, so positions need
            # not restart per document: scores within a document are the same either way.
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            same_doc = document_ids[:, :, None] == document_ids[:, None, :]
            mask = (same_doc & causal)[:, None]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x)
        from delphi.train.loss import fused_linear_lm_loss

        device_type = x.device.type
        matmul_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        return fused_linear_lm_loss(x, self.lm_head.weight, targets, z_loss_weight, matmul_dtype)

    # ---- accounting --------------------------------------------------------------------------
    def num_params(self) -> int:
        """Number of distinct parameters (shared weights counted once); equals shape.num_params."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        s = self.shape
        return (f"hidden={s.hidden_size}, layers={s.num_layers}, heads={s.num_heads}/{s.num_kv_heads}x{s.head_dim}, "
                f"mlp={s.intermediate_size}, vocab={s.vocab_size}, seq_len={s.seq_len}")


def describe(shape: ModelShape) -> dict:
    """Shape, parameter counts and FLOPs of the model, built on the meta device (no memory).

    The parameter count is taken from the real module tree, so it checks `ModelShape.num_params`.
    """
    with torch.device("meta"):
        model = Qwen3(shape)
    params = model.num_params()
    embedding = model.embed_tokens.weight.numel()
    head = 0 if shape.tie_embeddings else model.lm_head.weight.numel()
    return {
        "shape": shape.to_dict(),
        "params": params,
        "params_model_card": shape.num_params,
        "params_levanter": shape.num_params_levanter,
        "non_embedding_params": params - embedding - head,
        "flops_per_token": shape.flops_per_token,
        "bytes_fp32": params * 4,
        "bytes_bf16": params * 2,
    }
