"""Training-step throughput: Delphi's step vs transformers Qwen3ForCausalLM + torch.optim.AdamW.

Same shape, batch, token data and precision on both sides (fp32 vs fp32, bf16 autocast vs bf16
autocast); ours is the trainer's step exactly (`make_forward_loss` + `build_optimizer` AdamH +
WSD `set_lr`), eager and torch.compile'd. Baseline: `Qwen3ForCausalLM(attn_implementation="sdpa")`,
float32 cross entropy on its logits, `torch.optim.AdamW(foreach)` with global-norm clipping — what a
user of transformers would write. Reports tokens/s, the ratio to the baseline, and achieved
FLOP/s = 3·fpt·tokens/s (Delphi's FLOP accounting).

    python benchmarks/train_throughput.py                 # all shapes, fp32 and bf16
    python benchmarks/train_throughput.py --shapes s1 --precisions fp32 --steps 8
    python benchmarks/train_throughput.py --shapes g16 g64 --precisions fp32 --variants eager-plain eager

Numbers are noisy on shared machines: steps are timed after warm-up (compile included there),
and the median step time is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from delphi.config import ModelShape, OptimizerHParams
from delphi.optim import WSD, build_optimizer, set_lr
from delphi.train.trainer import make_forward_loss

SHAPES = {
    # name: (hidden, layers, heads, vocab, seq, batch)
    "s1": (128, 3, 1, 4096, 256, 16),
    "s2": (256, 5, 2, 4096, 256, 16),
    "s3": (384, 6, 3, 4096, 512, 8),
    # the `cpu` recipe's IsoFLOP grid: one layer, head dim 16, vocab 1024, sequence 128
    "g16": (16, 1, 1, 1024, 128, 32),
    "g64": (64, 1, 4, 1024, 128, 64),
    "g112": (112, 1, 7, 1024, 128, 128),
    # held-out runs of `micro` (3e13 FLOPs) and of its 256-token arm (9e13): the shapes that
    # compile = "auto" compiles
    "h96": (96, 1, 6, 1024, 128, 141),
    "h112s256": (112, 1, 7, 1024, 256, 152),
}


def add_step_options(ap: argparse.ArgumentParser, steps: int) -> None:
    """Options shared by the scripts that time the trainer's step shape by shape in fresh processes
    (`allocator.py`, `step_vs_baseline.py`); `step_batches(args)` reads `--batch`."""
    ap.add_argument("--shapes", nargs="+", default=["g16", "g64", "g112", "h96"], choices=sorted(SHAPES))
    ap.add_argument("--batch", nargs="*", default=["g16=26", "g64=9", "g112=4"],
                    help="NAME=B batch overrides (defaults: batches of the tiny grid's 5e11-1e12 runs)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)


def step_batches(args) -> dict[str, int]:
    return {k: int(v) for k, v in (b.split("=") for b in args.batch)}


def shape_of(name: str) -> tuple[ModelShape, int]:
    H, L, n, V, s, B = SHAPES[name]
    return ModelShape(hidden_size=H, num_layers=L, num_heads=n, num_kv_heads=n, head_dim=H // n,
                      intermediate_size=4 * H, vocab_size=V, seq_len=s), B


def batches(shape: ModelShape, B: int, n: int):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, shape.vocab_size, (B, shape.seq_len + 1), generator=g) for _ in range(n)]


def time_interleaved(steps: dict, data, warmup: int) -> dict[str, float]:
    """Median step time of each variant, timing the variants in turn on each batch, so that load
    from other processes on a shared machine hits all of them alike."""
    for step in steps.values():
        for t in data[:warmup]:
            step(t)
    times = {k: [] for k in steps}
    for t in data[warmup:]:
        for k, step in steps.items():
            t0 = time.perf_counter()
            step(t)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ours(shape: ModelShape, amp, compile: bool, fused: bool = True):
    from delphi.model import Qwen3

    torch.manual_seed(0)
    model = Qwen3(shape)
    hp = OptimizerHParams()
    opt = build_optimizer(model, hp)
    sched = WSD.from_hparams(hp, 1000)
    fn = make_forward_loss(model, amp, hp.z_loss_weight, compile=compile, fused=fused)
    count = [100]

    def step(tokens):
        obj, ce = fn(tokens[:, :-1], tokens[:, 1:], None)
        obj.backward()
        set_lr(opt, sched, count[0])
        opt.step()
        opt.zero_grad(set_to_none=True)
        count[0] += 1
        return float(ce.detach())

    return step


def baseline(shape: ModelShape, amp):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from delphi.model.hf import hf_config

    cfg = hf_config(shape)
    cfg.pop("architectures", None)
    config = Qwen3Config(**cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    V = shape.vocab_size

    def step(tokens):
        ctx = torch.autocast("cpu", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False)
        with ctx:
            logits = model(input_ids=tokens[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["s1", "s2"], choices=sorted(SHAPES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["base", "eager", "compiled"],
                    choices=["base", "eager", "compiled", "eager-plain", "compiled-plain"],
                    help="base = transformers + AdamW; eager/compiled = the trainer's step (fused head + "
                         "loss); *-plain = the same step with logits + lm_loss (the unfused reference)")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu {torch.backends.cpu.get_cpu_capability()}")
    rows = []
    for name in args.shapes:
        shape, B = shape_of(name)
        data = batches(shape, B, args.warmup + args.steps)
        tok = B * shape.seq_len
        fpt3 = 3 * shape.flops_per_token
        for prec in args.precisions:
            amp = torch.bfloat16 if prec == "bf16" else None
            makers = {"base": lambda: baseline(shape, amp), "eager": lambda: ours(shape, amp, False),
                      "compiled": lambda: ours(shape, amp, True),
                      "eager-plain": lambda: ours(shape, amp, False, fused=False),
                      "compiled-plain": lambda: ours(shape, amp, True, fused=False)}
            names = {"base": "HF Qwen3 + AdamW", "eager": "ours eager", "compiled": "ours compiled",
                     "eager-plain": "ours eager, plain loss", "compiled-plain": "ours compiled, plain loss"}
            t = time_interleaved({v: makers[v]() for v in args.variants}, data, args.warmup)
            ref = args.variants[0]  # ratios are against the first variant named
            ref_t = t[ref]
            label = f"{name} H{shape.hidden_size}/L{shape.num_layers}/V{shape.vocab_size}/s{shape.seq_len} B{B} {prec}"
            for v in args.variants:
                rows.append((label, names[v], tok / t[v], ref_t / t[v], fpt3 * tok / t[v], t[v]))
            for r in rows[-len(args.variants):]:
                print(f"{r[0]:<40} {r[1]:<26} {r[5] * 1e3:8.1f} ms {r[2]:>9,.0f} tok/s  {r[3]:5.2f}x  "
                      f"{r[4] / 1e9:7.1f} GFLOP/s", flush=True)
    print()
    print(f"| shape / precision | step | ms/step | tokens/s | vs {names[args.variants[0]]} | achieved FLOP/s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[5] * 1e3:.1f} | {r[2]:,.0f} | {r[3]:.2f}x | {r[4] / 1e9:.1f} GFLOP/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
