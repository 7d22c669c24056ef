"""Delphi's Qwen3 decoder: accounting, initialisation, RoPE, masking, compile-friendliness, training."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from delphi.config import ModelShape
from delphi.errors import DelphiError
from delphi.model import Qwen3, RMSNorm, describe, rope_inv_freq


def tiny(**kw) -> ModelShape:
    base = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8, intermediate_size=64,
                vocab_size=97, seq_len=32)
    return ModelShape(**{**base, **kw})


DELPHI_1E22 = ModelShape(hidden_size=3840, num_layers=37, num_heads=30, num_kv_heads=30, head_dim=128,
                         intermediate_size=15360, vocab_size=128256, seq_len=4096)


# ---- accounting ------------------------------------------------------------------------------

def test_describe_1e22_without_allocating():
    d = describe(DELPHI_1E22)
    assert d["params"] == 9_714_698_752 == d["params_model_card"]
    assert d["params_levanter"] == 9_714_698_752 - 2 * 128 * 37
    assert d["non_embedding_params"] == 9_714_698_752 - 2 * 128256 * 3840
    assert d["flops_per_token"] == DELPHI_1E22.flops_per_token
    with torch.device("meta"):
        model = Qwen3(DELPHI_1E22)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("kw", [dict(), dict(num_kv_heads=2), dict(num_kv_heads=1, hidden_size=40),
                                dict(tie_embeddings=True), dict(qk_norm=False)])
def test_num_params_matches_shape(kw):
    shape = tiny(**kw)
    model = Qwen3(shape)
    assert model.num_params() == shape.num_params == describe(shape)["params"]


def test_module_layout_for_the_optimizer_partition():
    model = Qwen3(tiny(num_kv_heads=2))
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert len(linears) == 7 * 2 + 1
    assert all(m.bias is None for m in linears.values())
    assert isinstance(model.embed_tokens, nn.Embedding)
    norms = [m for m in model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 4 * 2 + 1  # input, post-attention, q_norm, k_norm per layer + final
    assert {n for n, _ in model.named_parameters()} >= {
        "embed_tokens.weight", "norm.weight", "lm_head.weight", "layers.1.self_attn.q_norm.weight",
        "layers.1.self_attn.k_norm.weight", "layers.1.mlp.down_proj.weight", "layers.0.input_layernorm.weight",
        "layers.0.post_attention_layernorm.weight"}
    # Every parameter is either a linear weight or an "Adam group" parameter (embedding, norm gains).
    linear_weights = {id(m.weight) for m in linears.values()}
    other = [p for p in model.parameters() if id(p) not in linear_weights]
    assert sum(p.numel() for p in other) == 97 * 32 + 9 * 32 - 4 * 32 + 4 * 8  # embed + norms + qk norms
    assert "rope_cos" not in model.state_dict()  # derived buffers stay out of checkpoints


def test_tied_embeddings_share_one_tensor():
    model = Qwen3(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.embed_tokens.weight


def test_bad_inputs_raise_delphi_errors():
    with pytest.raises(DelphiError, match="head_dim"):
        Qwen3(tiny(head_dim=7))
    with pytest.raises(DelphiError, match="ModelShape"):
        Qwen3({"hidden_size": 32})


# ---- initialisation --------------------------------------------------------------------------

TRUNC_STD = 0.98658  # std of a standard normal truncated to [-3, 3]


def test_init_matches_delphi():
    torch.manual_seed(0)
    shape = tiny(hidden_size=256, intermediate_size=1024, num_heads=4, head_dim=64, vocab_size=512, num_layers=1)
    model = Qwen3(shape)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            fan_in = m.weight.shape[1]
            z = m.weight.detach() * math.sqrt(fan_in)  # back to the standard truncated normal
            assert z.abs().max() <= 3.0 + 1e-5, name
            assert z.abs().max() > 2.5, name  # actually uses the tails (not a plain uniform / tiny normal)
            assert abs(z.std().item() - TRUNC_STD) < 0.02, name
            assert abs(z.mean().item()) < 0.02, name
    e = model.embed_tokens.weight.detach() * shape.hidden_size
    assert e.abs().max() <= 3.0 + 1e-5 and abs(e.std().item() - TRUNC_STD) < 0.02
    for m in model.modules():
        if isinstance(m, RMSNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight))


def test_init_is_deterministic_under_manual_seed():
    torch.manual_seed(3)
    a = Qwen3(tiny()).state_dict()
    torch.manual_seed(3)
    b = Qwen3(tiny()).state_dict()
    torch.manual_seed(4)
    c = Qwen3(tiny()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.self_attn.q_proj.weight"], c["layers.0.self_attn.q_proj.weight"])


def test_meta_build_then_materialise():
    shape = tiny()
    with torch.device("meta"):
        model = Qwen3(shape)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    ref = Qwen3(shape)
    torch.manual_seed(0)
    ref.init_weights()  # same RNG stream as the materialised model's init
    ids = torch.randint(0, shape.vocab_size, (2, 16))
    torch.testing.assert_close(model(ids), ref(ids), rtol=0, atol=0)
    assert torch.equal(model.rope_cos, ref.rope_cos) and model.rope_sin.abs().max() > 0.5


# ---- RoPE ------------------------------------------------------------------------------------

def _llama3_inv_freq_reference(d, theta, factor, low, high, old_ctx):
    """delphi-notes §5.2, written independently in float64 numpy."""
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    out = []
    for f in inv:
        wl = 2 * np.pi / f
        if wl < old_ctx / high:
            out.append(f)
        elif wl > old_ctx / low:
            out.append(f / factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return np.array(out)


def test_llama3_rope_scaling_matches_the_definition():
    shape = tiny(head_dim=128, num_heads=1, num_kv_heads=1, hidden_size=128)
    ours = rope_inv_freq(shape).double().numpy()
    ref = _llama3_inv_freq_reference(128, 500000.0, 8.0, 1.0, 4.0, 8192)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    plain = 1.0 / 500000.0 ** (np.arange(0, 128, 2) / 128)
    # All three bands occur at Delphi's settings: kept, interpolated, divided by 8.
    ratio = plain / ref
    assert (np.isclose(ratio, 1.0)).sum() > 10 and (np.isclose(ratio, 8.0)).sum() > 10
    assert ((ratio > 1.01) & (ratio < 7.99)).sum() >= 3
    np.testing.assert_allclose(rope_inv_freq(tiny(head_dim=128, num_heads=1, num_kv_heads=1, hidden_size=128, rope_scaling=False))
                               .double().numpy(), plain, rtol=1e-6)


def test_longer_than_seq_len_uses_fresh_tables():
    torch.manual_seed(0)
    short = Qwen3(tiny(seq_len=16))
    long = Qwen3(tiny(seq_len=48))
    long.load_state_dict(short.state_dict())
    ids = torch.randint(0, 97, (1, 40))
    torch.testing.assert_close(short(ids), long(ids), rtol=0, atol=1e-6)


# ---- masking ---------------------------------------------------------------------------------

def test_causal():
    torch.manual_seed(0)
    model = Qwen3(tiny(num_kv_heads=2))
    ids = torch.randint(0, 97, (2, 24))
    changed = ids.clone()
    changed[:, 15:] = (changed[:, 15:] + 1) % 97
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=1e-6)
    assert (a[:, 15:] - b[:, 15:]).abs().max() > 1e-3


def test_document_mask_equals_separate_documents():
    torch.manual_seed(0)
    model = Qwen3(tiny(num_kv_heads=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # make attention matter
    a, b, c = (torch.randint(0, 97, (1, n)) for n in (7, 12, 5))
    packed = torch.cat([a, b, c], dim=1)
    docs = torch.tensor([[0] * 7 + [1] * 12 + [2] * 5])
    out = model(packed, docs)
    separate = torch.cat([model(a), model(b), model(c)], dim=1)
    # RoPE is relative, so a document sees the same scores wherever it sits in the pack.
    torch.testing.assert_close(out, separate, rtol=0, atol=2e-5)
    # Without the mask the later documents do attend across the boundary.
    assert (model(packed)[:, 7:] - separate[:, 7:]).abs().max() > 1e-2
    # One document everywhere is the plain causal model.
    torch.testing.assert_close(model(packed, torch.zeros_like(docs)), model(packed), rtol=0, atol=2e-5)


def test_document_ids_per_row():
    torch.manual_seed(0)
    model = Qwen3(tiny())
    ids = torch.randint(0, 97, (2, 16))
    docs = torch.tensor([[0] * 16, [0] * 4 + [1] * 12])
    out = model(ids, docs)
    torch.testing.assert_close(out[0], model(ids[:1])[0], rtol=0, atol=2e-5)
    torch.testing.assert_close(out[1, 4:], model(ids[1:, 4:])[0], rtol=0, atol=2e-5)


# ---- compile-friendliness, precision, training -------------------------------------------------

def test_no_graph_breaks():
    torch._dynamo.reset()
    model = Qwen3(tiny(num_kv_heads=2))
    ids = torch.randint(0, 97, (2, 16))
    docs = torch.zeros_like(ids)
    for args in ((ids,), (ids, docs)):
        explanation = torch._dynamo.explain(model)(*args)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    model = Qwen3(tiny())
    ids = torch.randint(0, 97, (2, 16))
    ref = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, torch.zeros_like(ids))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    out.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_weights_forward():
    """A model cast to bf16 (as an evaluation may load it) runs with and without document ids."""
    torch.manual_seed(0)
    model = Qwen3(tiny(num_kv_heads=2))
    ids = torch.randint(0, 97, (2, 16))
    ref = model(ids)
    model.to(torch.bfloat16)
    for docs in (None, torch.zeros_like(ids)):
        out = model(ids, docs)
        assert out.dtype == torch.bfloat16
        assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.02


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_runs_in_float32_under_bf16(masked):
    """On CPU, bf16 q/k/v (autocast or bf16 weights) are attended in float32 — the fp32 kernel
    on the upcast inputs, rounded once to bf16 — and the gradients come back in bf16."""
    from delphi.model.qwen3 import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.ones(16, 16, dtype=torch.bool).tril() if masked else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attention(q, k, v, mask)
    kw = dict(attn_mask=mask) if masked else dict(is_causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref.bfloat16(), rtol=0, atol=0)
    y.float().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_tiny_model_trains_on_cpu():
    torch.manual_seed(0)
    shape = tiny(num_kv_heads=2, vocab_size=64)
    model = Qwen3(shape)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # A learnable pattern: each document repeats a short random motif.
    g = torch.Generator().manual_seed(1)
    motif = torch.randint(0, 64, (4, 5), generator=g)
    tokens = motif.repeat(1, 7)[:, :33]
    docs = torch.zeros_like(tokens)
    docs[:, 17:] = 1
    losses = []
    for _ in range(12):
        logits = model(tokens[:, :-1], docs[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 64), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Delphi's init gives unit-scale logits (lm_head std 1/sqrt(H) on a normalised state), so the
    # first loss sits a little above log(V).
    assert math.log(64) < losses[0] < math.log(64) + 1.5
    assert all(b < a for a, b in zip(losses, losses[1:]))
    # Below the motif's unigram entropy (log 5): the model uses context, not just token counts.
    assert losses[-1] < 1.0
    assert all(math.isfinite(x) for x in losses)
