"""AdamH, AdamW, Cautious AdamC, the WSD schedule and the loss, against plain references."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from delphi.config import OptimizerHParams
from delphi.optim import WSD, build_optimizer, partition_params, set_lr
from delphi.optim.adamh import AdamH
from delphi.optim.baselines import AdamW, CautiousAdamC
from delphi.train.loss import bits_per_byte, lm_loss, token_nll


# ---------------------------------------------------------------------------------------------
# WSD schedule
# ---------------------------------------------------------------------------------------------

def test_wsd_shape_and_int_rounding():
    s = WSD(100)
    assert (s.warmup_steps, s.stable_steps, s.decay_steps) == (10, 70, 20)
    assert s(0) == 0.0  # the first update uses lr exactly 0
    assert s(1) == pytest.approx(0.1)
    assert s(9) == pytest.approx(0.9)
    assert s(10) == 1.0 and s(79) == 1.0
    assert s(80) == 1.0  # decay piece starts at its init value
    assert s(81) == pytest.approx(1 - 1 / 20)
    assert s(99) == pytest.approx(1 / 20)  # last step: peak / d
    # int() truncates: N = 19 → w = int(1.9) = 1, d = int(3.8) = 3.
    s = WSD(19)
    assert (s.warmup_steps, s.decay_steps, s.stable_steps) == (1, 3, 15)
    assert s(0) == 0.0 and s(1) == 1.0 and s(16) == 1.0
    assert s(18) == pytest.approx(1 / 3)
    # Tiny runs: no warmup at all (int(0.1·7) = 0) starts at the peak.
    assert WSD(7)(0) == 1.0 and WSD(7).decay_steps == 1
    # min_lr_ratio is the floor the decay heads to.
    assert WSD(10, 0.0, 0.5, 0.1)(9) == pytest.approx(1 - 0.9 * 4 / 5)


def test_set_lr_follows_schedule_for_both_groups():
    model = _tiny_model()
    hp = OptimizerHParams(lr=0.01, adam_lr=0.001)
    opt = build_optimizer(model, hp)
    sched = WSD.from_hparams(hp, 50)
    set_lr(opt, sched, 3)
    lrs = {g["kind"]: g["lr"] for g in opt.param_groups}
    assert lrs["adamh"] == pytest.approx(0.01 * 3 / 5)
    assert lrs["adam"] == pytest.approx(0.001 * 3 / 5)


# ---------------------------------------------------------------------------------------------
# A tiny model with the module types the real decoder uses
# ---------------------------------------------------------------------------------------------

class _Tiny(nn.Module):
    def __init__(self, V=37, H=16):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, H)
        self.q = nn.Linear(H, H, bias=False)
        self.up = nn.Linear(H, 3 * H, bias=False)
        self.down = nn.Linear(3 * H, H, bias=False)
        self.norm = nn.RMSNorm(H)
        self.lm_head = nn.Linear(H, V, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        x = x + self.q(x)
        x = x + self.down(F.silu(self.up(self.norm(x))))
        return self.lm_head(self.norm(x))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return _Tiny()


def _loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 37, (4, 9), generator=g)
    logits = model(ids[:, :-1])
    return lm_loss(logits, ids[:, 1:], 1e-4)[0]


def test_partition_linear_vs_rest():
    model = _tiny_model()
    matrices, others = partition_params(model)
    assert [id(p) for p in matrices] == [id(m.weight) for m in (model.q, model.up, model.down, model.lm_head)]
    assert {id(p) for p in others} == {id(model.embed_tokens.weight), id(model.norm.weight)}


# ---------------------------------------------------------------------------------------------
# AdamH against a plain per-tensor reference written from delphi-notes §6
# ---------------------------------------------------------------------------------------------

def _clip_(grads, max_norm):
    norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
    if norm >= max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


class _RefAdamH:
    """Straight from the notes: per group clip, Adam moments, sphere step, renormalise."""

    def __init__(self, matrices, others, lr, adam_lr, b1, b2, eps, max_norm):
        self.groups = [("adamh", matrices, lr), ("adam", others, adam_lr)]
        self.b1, self.b2, self.eps, self.max_norm = b1, b2, eps, max_norm
        self.m = {id(p): torch.zeros_like(p) for _, ps, _ in self.groups for p in ps}
        self.v = {id(p): torch.zeros_like(p) for _, ps, _ in self.groups for p in ps}
        self.t = 0

    @torch.no_grad()
    def step(self, lr_factor=1.0):
        self.t += 1
        b1, b2, eps, t = self.b1, self.b2, self.eps, self.t
        for kind, ps, lr in self.groups:
            lr = lr * lr_factor
            grads = [p.grad.clone() for p in ps]
            _clip_(grads, self.max_norm)
            for p, g in zip(ps, grads):
                m, v = self.m[id(p)], self.v[id(p)]
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                u = (m / (1 - b1 ** t)) / (torch.sqrt(v / (1 - b2 ** t)) + eps)
                if kind == "adam":
                    p.copy_(p - lr * u)
                else:
                    w_norm = torch.linalg.norm(p)
                    w_tilde = p - lr * u * w_norm / torch.clamp(torch.linalg.norm(u), min=1e-10)
                    p.copy_(w_tilde * w_norm / torch.clamp(torch.linalg.norm(w_tilde), min=1e-10))


@pytest.mark.parametrize("foreach", [True, False])
def test_adamh_matches_reference(foreach):
    hp = OptimizerHParams(lr=0.02, adam_lr=0.003, beta1=0.9, beta2=0.99, epsilon=1e-8, max_grad_norm=0.1)
    ours, ref = _tiny_model(), _tiny_model()
    opt = build_optimizer(ours, hp, foreach=foreach)
    rm, ro = partition_params(ref)
    ref_opt = _RefAdamH(rm, ro, hp.lr, hp.adam_lr, hp.beta1, hp.beta2, hp.epsilon, hp.max_grad_norm)
    sched = WSD(8)  # lr 0 first, then peak, then decay: exercises the schedule too
    clipped = False
    for step in range(8):
        for model in (ours, ref):
            model.zero_grad(set_to_none=True)
            _loss(model, step).backward()
        factor = set_lr(opt, sched, step)
        opt.step()
        ref_opt.step(factor)
        clipped |= any(n >= 0.1 for n in opt.last_grad_norms.values())
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"{name} at step {step}")
    assert clipped, "the test should exercise clipping"


def test_adamh_invariants_norm_preserved_and_relative_step_is_lr():
    torch.manual_seed(1)
    W = nn.Parameter(torch.randn(128, 96) / 96 ** 0.5)
    lr = 0.01
    opt = AdamH([dict(params=[W], kind="adamh")], lr=lr, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=None)
    norm0 = float(torch.linalg.norm(W.detach()))
    for step in range(5):
        W.grad = torch.randn_like(W)
        before = W.detach().clone()
        opt.step()
        rel = float(torch.linalg.norm(W.detach() - before)) / float(torch.linalg.norm(before))
        # Exact for an update orthogonal to W: ‖W_new − W‖/‖W‖ = sqrt(2 − 2/sqrt(1+lr²)) ≈ lr.
        assert rel == pytest.approx(lr, rel=0.02)
        assert float(torch.linalg.norm(W.detach())) == pytest.approx(norm0, rel=1e-6)


def test_adamh_first_update_at_lr_zero_leaves_weights_bitwise_unchanged():
    model = _tiny_model()
    hp = OptimizerHParams()
    opt = build_optimizer(model, hp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _loss(model, 0).backward()
    set_lr(opt, WSD.from_hparams(hp, 100), 0)
    opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_adamh_adam_group_matches_torch_adam():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(7, 5))
    b = nn.Parameter(a.detach().clone())
    ours = AdamH([dict(params=[a], kind="adam")], lr=0.01, betas=(0.9, 0.99), eps=1e-8, max_grad_norm=None)
    ref = torch.optim.Adam([b], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    for _ in range(6):
        g = torch.randn(7, 5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_clipping_is_per_group():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 4))
    e = nn.Parameter(torch.randn(3))
    opt = AdamH([dict(params=[w], kind="adamh", clip_key="adamh"), dict(params=[e], kind="adam", clip_key="adam")],
                lr=0.0, betas=(0.9, 0.99), eps=1e-8, max_grad_norm=0.1)
    w.grad = torch.full((4, 4), 10.0)  # norm 40: clipped to 0.1
    e.grad = torch.full((3,), 0.01)  # norm 0.017: untouched — a global clip would have shrunk it
    opt.step()
    assert opt.last_grad_norms["adamh"] == pytest.approx(40.0)
    assert opt.last_grad_norms["adam"] == pytest.approx(0.01 * 3 ** 0.5)
    torch.testing.assert_close(opt.state[e]["exp_avg"], 0.1 * torch.full((3,), 0.01))
    torch.testing.assert_close(opt.state[w]["exp_avg"], 0.1 * torch.full((4, 4), 0.1 / 4))


# ---------------------------------------------------------------------------------------------
# AdamW and Cautious AdamC
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("foreach", [True, False])
def test_adamw_matches_torch_adamw(foreach):
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(6, 5))
    b = nn.Parameter(a.detach().clone())
    ours = AdamW([a], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=None, foreach=foreach)
    ref = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(6, 5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_cautious_adamc_mask_and_lr_proportional_decay():
    torch.manual_seed(0)
    p0 = torch.randn(50)
    p = nn.Parameter(p0.clone())
    eps, wd, peak = 1e-8, 0.5, 0.1
    opt = CautiousAdamC([p], lr=peak, betas=(0.9, 0.99), eps=eps, weight_decay=wd, max_grad_norm=None)
    g1 = torch.randn(50)
    p.grad = g1.clone()
    opt.step()
    # Step 1: u = g/(|g|+ε) agrees in sign with g everywhere → mask all ones; decay λ·lr/peak = λ.
    u1 = g1 / (g1.abs() + eps)
    expect = p0 - peak * (u1 / (1 + eps) + wd * p0)
    torch.testing.assert_close(p.detach(), expect, rtol=1e-6, atol=1e-6)
    # Step 2 at half the peak lr with a gradient opposing the momentum on half the entries.
    p1 = p.detach().clone()
    g2 = -0.5 * g1  # m = 0.09·g1 − 0.05·g1 keeps g1's sign: u opposes g2 on these entries
    g2[::2] = g1[::2]
    p.grad = g2.clone()
    for group in opt.param_groups:
        group["lr"] = peak / 2
    opt.step()
    b1, b2 = 0.9, 0.99
    m = b1 * 0.1 * g1 + 0.1 * g2
    v = b2 * 0.01 * g1 ** 2 + 0.01 * g2 ** 2
    u = (m / (1 - b1 ** 2)) / ((v / (1 - b2 ** 2)).sqrt() + eps)
    mask = (u * g2 > 0).float()
    assert 0 < mask.mean() < 1
    uc = u * mask / (mask.mean() + eps)
    expect = p1 - (peak / 2) * (uc + wd * 0.5 * p1)  # AdamC: λ_t = λ·(lr_t/peak) = λ/2
    torch.testing.assert_close(p.detach(), expect, rtol=1e-5, atol=1e-6)


def test_adamw_clips_globally_and_decays_only_matrices():
    model = _tiny_model()
    hp = OptimizerHParams(name="adamw", lr=0.01, weight_decay=0.1)
    opt = build_optimizer(model, hp)
    decays = {len(g["params"]): g["weight_decay"] for g in opt.param_groups}
    assert decays == {4: 0.1, 2: 0.0}
    _loss(model, 0).backward()
    opt.step()
    assert list(opt.last_grad_norms) == ["all"]


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------

def test_loss_matches_cross_entropy_plus_z_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 11, (2, 5))
    total, ce = lm_loss(logits, targets, 1e-2)
    x = logits.float()
    ref_ce = F.cross_entropy(x.reshape(-1, 11), targets.reshape(-1))
    ref = ref_ce + 1e-2 * torch.logsumexp(x, -1).square().mean()
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce, ref_ce)
    torch.testing.assert_close(total, ref)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()
    nll, _ = token_nll(x, targets)
    torch.testing.assert_close(nll.mean(), ref_ce)


def test_bits_per_byte():
    assert bits_per_byte(math.log(2) * 10, 10) == pytest.approx(1.0)
    assert math.isnan(bits_per_byte(1.0, 0))
