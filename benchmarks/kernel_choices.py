"""Five CPU kernel choices of the trainer, re-measured on the machine at hand.

1. Attention precision: torch's CPU flash-attention (SDPA, causal, forward + backward) on bf16
   inputs vs the same inputs upcast to float32 — why `delphi.model.qwen3.attention` runs in float32
   on CPU even under bf16 autocast.
2. Fused-loss chunk size: `delphi.train.loss.fused_linear_lm_loss` (bf16 head matmuls, float32
   softmax) with 128K, 256K and 512K logits per chunk (`FUSED_CHUNK_ELEMENTS` is 512K, 2 MB).
3. The fused loss's exponential: `exp_` of a float32 logit chunk vs `mul_(log2 e).exp2_()`, the
   form the loss uses (same values up to rounding).
4. The fused loss's elementwise work on one chunk (float32 logits → scaled softmax gradient in
   bf16, log-sum-exp terms) as the loss runs it eagerly vs the same arithmetic `torch.compile`d
   once for the chunk's static shape (a chunk is [rows, vocab] whatever the model's width, so one
   compile would serve a whole sweep).
5. The fused loss's head-weight gradient per chunk: `grad_W += g^T h` ([V, H]) vs the transposed
   `grad_W^T += h^T g` ([H, V]) of the loss's `accumulate_head_gradient`, in float32 and bf16
   (same sums, only the matmul's layout differs).

    python benchmarks/kernel_choices.py
    python benchmarks/kernel_choices.py --threads 2 --repeats 15
    python benchmarks/kernel_choices.py --tables 4 5

Shapes are those of the `cpu` recipe's grid (head dim 16, sequence 128, vocab 1024). Variants are
timed in turn within each repeat and the median is printed, so drift in the machine's speed hits
them alike. One thread by default, as each worker of a CPU sweep trains with one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import delphi.train.loss as loss_module
from delphi.train.hardware import keep_freed_memory

# (sequences, heads) of grid steps: width 16 at batch 51, width 48 at 13, width 112 at 4, width 64 at 86
ATTENTION_SHAPES = [(51, 1), (13, 3), (4, 7), (86, 4)]
# (width, sequences) for the fused loss
LOSS_SHAPES = [(16, 51), (16, 5), (48, 13), (64, 86), (112, 4)]
CHUNKS = [1 << 17, 1 << 18, 1 << 19]


def interleaved_median_ms(variants: dict, repeats: int) -> dict[str, float]:
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def attention_table(repeats: int):
    print("| sequences × heads | bf16 flash | float32 (upcast) | float32 vs bf16 |")
    print("|---|---:|---:|---:|")
    for B, h in ATTENTION_SHAPES:
        q, k, v = (torch.randn(B, h, 128, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

        def bf16():
            F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()

        def fp32():
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
            y.to(torch.bfloat16).float().sum().backward()

        ms = interleaved_median_ms({"bf16": bf16, "fp32": fp32}, repeats)
        print(f"| {B} × {h} | {ms['bf16']:.2f} ms | {ms['fp32']:.2f} ms | {ms['bf16'] / ms['fp32']:.2f}× faster |")


def chunk_table(repeats: int):
    print("| width, sequences | " + " | ".join(f"{c >> 10}K elements" for c in CHUNKS) + " |")
    print("|---|" + "---:|" * len(CHUNKS))
    saved = loss_module.FUSED_CHUNK_ELEMENTS
    try:
        for H, B in LOSS_SHAPES:
            n = B * 128
            h = torch.randn(n, H, dtype=torch.bfloat16)
            w = torch.randn(1024, H) * 0.1
            y = torch.randint(0, 1024, (n,))

            def with_chunk(c):
                def fn():
                    loss_module.FUSED_CHUNK_ELEMENTS = c
                    loss_module.fused_linear_lm_loss(h, w, y, 1e-7, torch.bfloat16)
                return fn

            ms = interleaved_median_ms({c: with_chunk(c) for c in CHUNKS}, repeats)
            print(f"| {H}, {B} | " + " | ".join(f"{ms[c]:.2f} ms" for c in CHUNKS) + " |")
    finally:
        loss_module.FUSED_CHUNK_ELEMENTS = saved


def exponential_table(repeats: int):
    print("| logits (rows × vocab) | exp_ | mul_(log2 e).exp2_() | exp2 form vs exp |")
    print("|---|---:|---:|---:|")
    for rows in (128, 512, 2048):
        x = torch.randn(rows, 1024) * 4 - 8      # shifted logits: x − max ≤ 0, as in the loss
        buf = torch.empty_like(x)

        def natural():
            buf.copy_(x).exp_()

        def base_two():
            buf.copy_(x).mul_(loss_module.LOG2_E).exp2_()

        def copy_only():
            buf.copy_(x)

        ms = interleaved_median_ms({"exp": natural, "exp2": base_two, "copy": copy_only}, 10 * repeats)
        e, e2 = ms["exp"] - ms["copy"], ms["exp2"] - ms["copy"]   # the copy that restores the input is common to both
        print(f"| {rows} × 1024 | {1000 * e:.0f} µs | {1000 * e2:.0f} µs | {e / e2:.2f}× faster |")


def chunk_elementwise(logits, y, n: float, z: float):
    # What the loss runs between its two matmuls, followed by the cast and sums it does next;
    # the compiled variant compiles this same function (dynamo functionalises the in-place ops).
    g, lse, target = loss_module.chunk_logit_gradient(logits.float(), y, n, z)
    return g.to(torch.bfloat16), (lse - target).sum(), lse.square().sum()


def compiled_chunk_table(repeats: int):
    print("| chunk (rows × vocab) | eager | compiled (static shape) | compile time | compiled vs eager |")
    print("|---|---:|---:|---:|---:|")
    for rows in (512,):
        x = (torch.randn(rows, 1024) * 3).to(torch.bfloat16)
        y = torch.randint(0, 1024, (rows,))
        t0 = time.perf_counter()
        compiled = torch.compile(chunk_elementwise, dynamic=False)
        compiled(x, y, 3328.0, 1e-7)
        compile_s = time.perf_counter() - t0
        ms = interleaved_median_ms({"eager": lambda: chunk_elementwise(x, y, 3328.0, 1e-7),
                                    "compiled": lambda: compiled(x, y, 3328.0, 1e-7)}, 10 * repeats)
        print(f"| {rows} × 1024 | {1000 * ms['eager']:.0f} µs | {1000 * ms['compiled']:.0f} µs | "
              f"{compile_s:.1f} s | {ms['eager'] / ms['compiled']:.2f}× |")


def head_gradient_table(repeats: int):
    print("| width, precision | g^T h → [V, H] | h^T g → [H, V] | transposed vs plain |")
    print("|---|---:|---:|---:|")
    rows = loss_module.FUSED_CHUNK_ELEMENTS // 1024
    for H in (16, 32, 64, 112):
        for dtype in (torch.float32, torch.bfloat16):
            h, g = torch.randn(rows, H, dtype=dtype), torch.randn(rows, 1024, dtype=dtype)
            gw, gw_t = torch.zeros(1024, H), torch.zeros(H, 1024)
            # "plain": the [V, H] form the loss used before; "transposed": the loss's own function.
            plain = (lambda: gw.addmm_(g.t(), h)) if dtype == torch.float32 else (lambda: gw.add_((g.t() @ h).float()))
            variants = {"plain": plain, "transposed": lambda: loss_module.accumulate_head_gradient(gw_t, h, g)}
            ms = interleaved_median_ms(variants, 10 * repeats)
            name = "fp32" if dtype == torch.float32 else "bf16"
            print(f"| {H}, {name} | {1000 * ms['plain']:.0f} µs | {1000 * ms['transposed']:.0f} µs | "
                  f"{ms['plain'] / ms['transposed']:.2f}× |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6),
                    help="which tables to measure (numbered as in the list above)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()   # as every trainer process does; without it page faults distort the timings
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}")
    tables = [attention_table, chunk_table, exponential_table, compiled_chunk_table, head_gradient_table]
    for number in args.tables:
        print()
        tables[number - 1](args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
