"""The fused LM head + loss equals the plain path (logits, then `lm_loss`) in value and gradient,
for every chunking, with and without z-loss, tied embeddings, bf16 autocast, and in the trainer."""

import pytest
import torch

from delphi.config import ModelShape
from delphi.model import Qwen3
from delphi.train import loss as L
from delphi.train.loss import fused_linear_lm_loss, lm_loss


def _grads(model, ids, targets, z, fused, amp=None):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        if fused:
            obj, ce = model(ids, targets=targets, z_loss_weight=z)
        else:
            obj, ce = lm_loss(model(ids), targets, z)
    (2.5 * obj).backward()  # a non-unit upstream gradient checks the backward's scaling
    return float(obj.detach()), float(ce.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def _shape(**kw):
    base = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, intermediate_size=64,
                vocab_size=300, seq_len=24)
    base.update(kw)
    return ModelShape(**base)


@pytest.mark.parametrize("chunk_elements", [L.FUSED_CHUNK_ELEMENTS, 300 * 7, 1])
@pytest.mark.parametrize("z", [0.0, 1e-2])
@pytest.mark.parametrize("tied", [False, True])
def test_fused_matches_plain_loss_and_gradients(monkeypatch, chunk_elements, z, tied):
    monkeypatch.setattr(L, "FUSED_CHUNK_ELEMENTS", chunk_elements)  # 1: one token per chunk; 2100: 7
    torch.manual_seed(0)
    model = Qwen3(_shape(tie_embeddings=tied))
    ids = torch.randint(0, 300, (3, 24))
    targets = torch.randint(0, 300, (3, 24))
    o1, c1, g1 = _grads(model, ids, targets, z, fused=False)
    o2, c2, g2 = _grads(model, ids, targets, z, fused=True)
    assert o2 == pytest.approx(o1, rel=1e-6) and c2 == pytest.approx(c1, rel=1e-6)
    if not z:
        assert o2 == c2
    for n in g1:
        scale = float(g1[n].abs().max())
        assert scale > 0, n
        assert float((g1[n] - g2[n]).abs().max()) <= 1e-5 * scale, n


def test_fused_under_bf16_autocast_matches_plain_path():
    """Under autocast the head matmuls run in bf16 as an autocast `lm_head` would; the softmax and
    loss stay float32 — so the two paths agree to bf16 rounding, and the loss is float32."""
    torch.manual_seed(0)
    model = Qwen3(_shape())
    ids, targets = torch.randint(0, 300, (2, 24)), torch.randint(0, 300, (2, 24))
    o1, _, g1 = _grads(model, ids, targets, 1e-4, fused=False, amp=torch.bfloat16)
    o2, _, g2 = _grads(model, ids, targets, 1e-4, fused=True, amp=torch.bfloat16)
    assert o2 == pytest.approx(o1, rel=2e-3)
    for n in g1:
        assert float((g1[n] - g2[n]).norm()) <= 2e-2 * float(g1[n].norm()), n
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_fused_loss_of_known_logits():
    """Independent of lm_loss: uniform logits give CE = log V and lse = log V exactly."""
    V = 64
    hidden = torch.zeros(5, 8, requires_grad=True)
    weight = torch.randn(V, 8, requires_grad=True)
    targets = torch.arange(5)
    obj, ce = fused_linear_lm_loss(hidden, weight, targets, z_loss_weight=0.5)
    lv = torch.log(torch.tensor(float(V)))
    assert float(ce) == pytest.approx(float(lv), rel=1e-6)
    assert float(obj.detach()) == pytest.approx(float(lv + 0.5 * lv ** 2), rel=1e-6)
    obj.backward()
    # ∂/∂logits = (1 + 2·0.5·lse)/V − onehot, over 5 tokens; hidden = 0 so ∂/∂W = 0.
    g_logits = torch.full((5, V), float((1 + lv) / V))
    g_logits[torch.arange(5), targets] -= 1
    torch.testing.assert_close(hidden.grad, g_logits @ weight.detach() / 5, rtol=1e-5, atol=1e-6)
    assert float(weight.grad.abs().max()) == 0.0
