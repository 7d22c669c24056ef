"""Forward+backward throughput: Delphi's Qwen3 vs transformers' Qwen3ForCausalLM, same shape and input.

    .venv/bin/python benchmarks/model_throughput.py [--steps 4] [--repeats 3] [--threads 1] [--no-compile]

Both models hold the same weights (ours exported with `export_hf`, loaded by transformers), run in
float32 on CPU, and do one training step's compute per iteration: forward, cross-entropy on the
next token, backward (no optimizer step). Variants are timed round-robin, `--repeats` times, and
the median is reported, so background load hits all of them alike. Ratios are against transformers
measured in the same run. With `--markdown` the table is printed ready to append to RESULTS.md.

Reported twice: tokens per wall-clock second, and tokens per CPU-second of this process. With one
thread the CPU-time figure is the compute actually spent, so its ratio is the one to trust on a
shared machine, where wall time also counts the time other jobs held the core.

`--threads` defaults to 1: on a shared, oversubscribed CPU box, OpenMP regions with more threads
than free cores stall at every barrier (each op waits for a descheduled thread), which measured
4x slower than one thread here and drowns the model differences in scheduler noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from delphi.config import ModelShape
from delphi.model import Qwen3
from delphi.model.hf import export_hf

SHAPES = {
    "H128-L4-V4096-s256": ModelShape(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=32,
                                     intermediate_size=512, vocab_size=4096, seq_len=256),
    "H256-L6-V4096-s256": ModelShape(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=4, head_dim=64,
                                     intermediate_size=1024, vocab_size=4096, seq_len=256),
}


def step_fn(model, hf: bool, docs: bool):
    def step(ids, targets, document_ids):
        if hf:
            logits = model(input_ids=ids, use_cache=False).logits
        else:
            logits = model(ids, document_ids if docs else None)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        return loss.detach()
    return step


def time_steps(step, params, batch, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `steps` steps."""
    ids, targets, docs = batch
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        for p in params:
            p.grad = None
        step(ids, targets, docs)
    return time.perf_counter() - t0, time.process_time() - c0


def run_shape(name: str, shape: ModelShape, batch_size: int, steps: int, repeats: int, compile_: bool) -> dict:
    import transformers

    torch.manual_seed(0)
    ours = Qwen3(shape)
    with tempfile.TemporaryDirectory() as d:
        export_hf(ours, None, d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa")
    hf.train()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, shape.vocab_size, (batch_size, shape.seq_len + 1), generator=g)
    ids, targets = tokens[:, :-1], tokens[:, 1:]
    # Four documents per row, as in packed training.
    docs = (torch.arange(shape.seq_len) // (shape.seq_len // 4)).expand(batch_size, -1).contiguous()
    batch = (ids, targets, docs)

    # Same weights, same input: check the losses agree before timing anything.
    with torch.no_grad():
        a = F.cross_entropy(ours(ids).flatten(0, 1), targets.flatten())
        b = F.cross_entropy(hf(input_ids=ids, use_cache=False).logits.flatten(0, 1), targets.flatten())
    assert abs(a.item() - b.item()) < 1e-4, (a.item(), b.item())

    variants = {
        "transformers Qwen3ForCausalLM (sdpa)": (step_fn(hf, True, False), list(hf.parameters())),
        "delphi Qwen3 (eager)": (step_fn(ours, False, False), list(ours.parameters())),
        "delphi Qwen3 (eager, document mask)": (step_fn(ours, False, True), list(ours.parameters())),
    }
    compile_s = None
    if compile_:
        t0 = time.perf_counter()
        compiled = step_fn(torch.compile(ours), False, False)
        time_steps(compiled, list(ours.parameters()), batch, 2)  # compiles forward and backward
        compiled_docs = step_fn(torch.compile(ours), False, True)
        time_steps(compiled_docs, list(ours.parameters()), batch, 2)
        compile_s = time.perf_counter() - t0
        variants["delphi Qwen3 (torch.compile)"] = (compiled, list(ours.parameters()))
        variants["delphi Qwen3 (torch.compile, document mask)"] = (compiled_docs, list(ours.parameters()))

    for step, params in variants.values():  # warm up every variant
        time_steps(step, params, batch, 1)
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, (step, params) in variants.items():
            times[k].append(time_steps(step, params, batch, steps))
    tokens = batch_size * shape.seq_len * steps
    wall = {k: tokens / statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: tokens / statistics.median(c for _, c in v) for k, v in times.items()}
    return {"name": name, "batch_size": batch_size, "tok_s": wall, "tok_cpu_s": cpu, "compile_s": compile_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    out = []
    for name, shape in SHAPES.items():
        r = run_shape(name, shape, args.batch_size, args.steps, args.repeats, not args.no_compile)
        out.append(r)
        print(f"# {name}: batch {r['batch_size']}x{shape.seq_len}, params {shape.num_params:,}", file=sys.stderr)
        for k, v in r["tok_s"].items():
            print(f"  {k:45s} {v:10.0f} tok/s  {r['tok_cpu_s'][k]:10.0f} tok/CPU-s", file=sys.stderr)

    if args.markdown:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
              f"{torch.get_num_threads()} threads, fp32, forward+backward, median of {args.repeats} x {args.steps} steps\n")
        print("| shape | variant | tokens/s (wall) | ratio | tokens per CPU-second | ratio |")
        print("|---|---|---:|---:|---:|---:|")
        base_name = "transformers Qwen3ForCausalLM (sdpa)"
        for r in out:
            bw, bc = r["tok_s"][base_name], r["tok_cpu_s"][base_name]
            for k, v in r["tok_s"].items():
                c = r["tok_cpu_s"][k]
                print(f"| {r['name']} (batch {r['batch_size']}) | {k} | {v:,.0f} | {v / bw:.2f}x | {c:,.0f} | {c / bc:.2f}x |")
            if r["compile_s"] is not None:
                print(f"| {r['name']} | torch.compile time (fwd+bwd, both variants) | {r['compile_s']:.0f} s | |")


if __name__ == "__main__":
    main()
