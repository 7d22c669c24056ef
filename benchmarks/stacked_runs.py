"""Several runs of one shape in one computation: K one-layer models with stacked parameters
(leading run dimension, `torch.bmm` for every projection, attention over the K·B sequences, one
loss summed over runs) against the trainer's step run K times, forward and backward.

    python benchmarks/stacked_runs.py                       # g16 and g32 grid shapes, K = 2, 4, 8
    python benchmarks/stacked_runs.py --shapes g64 --runs 4 --threads 2

The stacked step is the cheapest form stacking can take (the body stacked, the fused head + loss
per run, no optimizer, no per-run schedule, clipping or data), so it bounds from above what a
stacked trainer would gain; the baseline is the real step (fused loss + backward). Before timing,
the stacked loss is checked against the K runs' own losses.
Also times `torch.func.vmap` over the real model (`functional_call`, plain loss) for K runs.
Prints step times and the ratio loop ÷ stacked (> 1: stacking wins), medians of `--repeats` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import SHAPES, batches, shape_of  # noqa: E402

from delphi.model import Qwen3  # noqa: E402
from delphi.model.qwen3 import apply_rope  # noqa: E402
from delphi.train.hardware import keep_freed_memory  # noqa: E402
from delphi.train.loss import fused_linear_lm_loss, lm_loss  # noqa: E402
from delphi.train.step import make_forward_loss  # noqa: E402


def stacked_params(models: list[Qwen3]) -> dict[str, torch.Tensor]:
    """Each parameter of the K models stacked on a leading run dimension (a leaf with grad)."""
    names = [n for n, _ in models[0].named_parameters()]
    params = {}
    for n in names:
        params[n] = torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
    return params


def rms(x, w, eps):
    """RMSNorm over the last dim with a per-run gain w [K, H] broadcast over x [K, ..., H]."""
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[-1],)
    return (F.rms_norm(x.float(), (x.shape[-1],), eps=eps) * w.float().view(shape)).type_as(x)


def stacked_loss(P: dict, model: Qwen3, ids: torch.Tensor) -> torch.Tensor:
    """Sum over runs of each run's mean next-token cross entropy; ids [K, B, T+1]."""
    s = model.shape
    K, B, T1 = ids.shape
    T, H, n, d = T1 - 1, s.hidden_size, s.num_heads, s.head_dim
    inp, tgt = ids[:, :, :-1], ids[:, :, 1:]
    offs = (torch.arange(K) * s.vocab_size).view(K, 1, 1)
    x = F.embedding(inp + offs, P["embed_tokens.weight"].reshape(K * s.vocab_size, H)).reshape(K, B * T, H)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    eps = s.rms_norm_eps
    for i in range(s.num_layers):
        p = f"layers.{i}."
        h = rms(x, P[p + "input_layernorm.weight"], eps)
        q = torch.bmm(h, P[p + "self_attn.q_proj.weight"].transpose(1, 2))
        k = torch.bmm(h, P[p + "self_attn.k_proj.weight"].transpose(1, 2))
        v = torch.bmm(h, P[p + "self_attn.v_proj.weight"].transpose(1, 2))
        # Attention per run, laid out exactly as the model lays it out: the CPU flash-attention
        # backward was 4-5x slower over all K·B sequences at once, or on other strides.
        ys = []
        for r in range(K):
            qr = rms(q[r:r + 1].view(1, B * T, n, d), P[p + "self_attn.q_norm.weight"][r:r + 1], eps)
            kr = rms(k[r:r + 1].view(1, B * T, n, d), P[p + "self_attn.k_norm.weight"][r:r + 1], eps)
            qr = qr.view(B, T, n, d).transpose(1, 2)
            kr = kr.view(B, T, n, d).transpose(1, 2)
            vr = v[r].view(B, T, n, d).transpose(1, 2)
            qr, kr = apply_rope(qr, cos, sin), apply_rope(kr, cos, sin)
            yr = F.scaled_dot_product_attention(qr.float(), kr.float(), vr.float(), is_causal=True).type_as(qr)
            ys.append(yr.transpose(1, 2).reshape(B * T, n * d))
        y = torch.stack(ys)
        x = x + torch.bmm(y, P[p + "self_attn.o_proj.weight"].transpose(1, 2))
        h = rms(x, P[p + "post_attention_layernorm.weight"], eps)
        g = torch.bmm(h, P[p + "mlp.gate_proj.weight"].transpose(1, 2))
        u = torch.bmm(h, P[p + "mlp.up_proj.weight"].transpose(1, 2))
        x = x + torch.bmm(F.silu(g) * u, P[p + "mlp.down_proj.weight"].transpose(1, 2))
    h = rms(x, P["norm.weight"], eps)
    # The head and loss per run with the trainer's fused loss (a plain loss over [K, B·T, V]
    # logits would lose everything stacking gains: it is the bulk of a small model's step).
    tgt = tgt.reshape(K, B * T)
    return sum(fused_linear_lm_loss(h[k], P["lm_head.weight"][k], tgt[k], 1e-4, torch.bfloat16)[0] for k in range(K))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["g16", "g32"])
    ap.add_argument("--batch", nargs="*", default=["g16=26", "g32=11", "g64=9"])
    ap.add_argument("--runs", nargs="+", type=int, default=[2, 4, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-vmap", action="store_true")
    args = ap.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    SHAPES.setdefault("g32", (32, 1, 2, 1024, 128, 11))
    batch = {k: int(v) for k, v in (b.split("=") for b in args.batch)}
    amp = torch.bfloat16
    rows = []
    for name in args.shapes:
        SHAPES[name] = SHAPES[name][:5] + (batch.get(name, SHAPES[name][5]),)
        shape, B = shape_of(name)
        for K in args.runs:
            models = []
            for k in range(K):
                torch.manual_seed(k)
                models.append(Qwen3(shape))
            fns = [make_forward_loss(m, amp, 1e-4) for m in models]
            P = stacked_params(models)
            data = [torch.stack(b) for b in zip(*[batches(shape, B, args.steps + 3) for _ in range(K)])]

            def loop(ids):
                for k in range(K):
                    obj, _ = fns[k](ids[k, :, :-1], ids[k, :, 1:], None)
                    obj.backward()

            def stacked(ids):
                with torch.autocast("cpu", dtype=amp):
                    stacked_loss(P, models[0], ids).backward()

            with torch.no_grad(), torch.autocast("cpu", dtype=amp):
                ref = sum(float(fns[k](data[0][k, :, :-1], data[0][k, :, 1:], None)[0]) for k in range(K))
                got = float(stacked_loss(P, models[0], data[0]))
            if abs(got - ref) > 1e-2 * abs(ref):
                raise SystemExit(f"stacked loss {got:.5f} differs from the runs' {ref:.5f}")
            variants = {"loop": loop, "stacked": stacked}
            if not args.no_vmap:
                from torch.func import functional_call, grad, stack_module_state, vmap

                vp, vb = stack_module_state(models)
                base = Qwen3(shape).to("meta")

                def one(p, b, ids):
                    with torch.autocast("cpu", dtype=amp):
                        logits = functional_call(base, (p, b), (ids[:, :-1],))
                    return lm_loss(logits, ids[:, 1:], 1e-4)[0]

                g = vmap(grad(one))
                variants["vmap"] = lambda ids: g(vp, vb, ids)
            times = {v: [] for v in variants}
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(args.repeats):
                    for v, f in variants.items():
                        for ids in data[:3]:
                            f(ids)
                        t0 = time.perf_counter()
                        for ids in data[3:]:
                            f(ids)
                        times[v].append((time.perf_counter() - t0) / args.steps * 1e3)
            med = {v: statistics.median(t) for v, t in times.items()}
            label = f"{name} (H{shape.hidden_size}, B{B}), K = {K}, {args.threads} thread(s), bf16"
            rows.append((label, med))
            print(label, {v: f"{m:.1f} ms" for v, m in med.items()},
                  {v: f"{med['loop'] / m:.2f}x" for v, m in med.items() if v != "loop"}, flush=True)
    print()
    print("| shape, runs | K trainer steps (fwd+bwd) | stacked bmm | ratio | vmap | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, med in rows:
        vm = f"{med['vmap']:.1f} ms | {med['loop'] / med['vmap']:.2f}x" if "vmap" in med else "— | —"
        print(f"| {label} | {med['loop']:.1f} ms | {med['stacked']:.1f} ms | {med['loop'] / med['stacked']:.2f}x | {vm} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
