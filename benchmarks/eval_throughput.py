"""Scoring throughput of `delphi.eval` against lm-evaluation-harness's HFLM (the baseline), on
the same requests, model and batch size, in one process; also reports their largest
log-likelihood difference.

    python benchmarks/eval_throughput.py [--append benchmarks/RESULTS.md]

Needs lm-eval with its HF extra (`pip install "lm-eval[hf]"`: HFLM imports accelerate).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from delphi.eval import hf_backend, parse_tasks  # noqa: E402
from delphi.eval.sources import load_records  # noqa: E402
from delphi.eval.tiny import make_tiny_hf_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--append", default=None)
    args = ap.parse_args()
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    d = make_tiny_hf_model(Path(tempfile.mkdtemp()), seed=0, hidden_size=128, num_layers=4)
    reqs = []
    for spec, n in (("arc_easy:0", 100), ("mmlu_sl_verb:5", 25), ("hellaswag:0", 50)):
        task = parse_tasks(spec)[0]
        reqs += [r for doc in task.docs(load_records(task.defn.dataset))[:n] for r in doc.requests]
    ours = hf_backend(d, device="cpu", dtype="fp32", batch_size=args.batch_size)
    lm = HFLM(pretrained=str(d), device="cpu", batch_size=args.batch_size, dtype="float32")
    inst = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)]
    ours.loglikelihood(reqs[:8])  # warm-up both
    lm.loglikelihood(inst[:8], disable_tqdm=True)
    t0 = time.perf_counter()
    a = ours.loglikelihood(reqs)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = lm.loglikelihood(inst, disable_tqdm=True)
    t_lm = time.perf_counter() - t0
    diff = max(abs(x[0] - y[0]) for x, y in zip(a, b))
    text = (f"{len(reqs)} requests (ARC-Easy 0-shot, MMLU sl_verb 5-shot, HellaSwag 0-shot), tiny Qwen3 "
            f"(hidden 128, 4 layers, vocab 512), CPU fp32, batch {args.batch_size}:\n\n"
            f"| scorer | seconds | requests/s |\n|---|---|---|\n"
            f"| lm-eval HFLM (baseline) | {t_lm:.2f} | {len(reqs) / t_lm:.1f} |\n"
            f"| delphi.eval | {t_ours:.2f} | {len(reqs) / t_ours:.1f} |\n\n"
            f"delphi.eval / HFLM throughput ratio: {t_lm / t_ours:.2f}×; max |Δ log-likelihood| {diff:.2e} nats\n")
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n## Eval scoring throughput vs lm-evaluation-harness\n\n"
                    f"Command: `python benchmarks/eval_throughput.py --batch-size {args.batch_size}` "
                    "(lm-eval 0.4.13 with accelerate on the path)\n\n" + text)


if __name__ == "__main__":
    main()
