"""Build the committed, seeded evaluation subsets from the full sets.

    python -m delphi.eval.subsets FULL_SETS_DIR src/delphi/eval/data

Each subset keeps the whole few-shot pool plus a seeded sample of the scored items (all of them
for small sets), in the source records' own format, xz-compressed. MMLU keeps every dev item
(5 per subject, the 5-shot prompts) and the same number of test items from each subject.
Re-running with the same arguments rewrites byte-identical files.
"""

from __future__ import annotations

import io
import json
import lzma
import random
import sys
from pathlib import Path

from delphi.eval.sources import SOURCE_FILES, read_source

DEFAULT_SIZES = {"gsm8k": 250, "lambada_openai": 500}
DEFAULT_SIZE = 500
MMLU_PER_SUBJECT = 10


def _sample(records: list[dict], n: int, seed: int) -> list[dict]:
    shots = [r for r in records if r["split"] == "fewshot"]
    items = [r for r in records if r["split"] == "eval"]
    if len(items) > n:
        keep = sorted(random.Random(seed).sample(range(len(items)), n))
        items = [items[i] for i in keep]
    return shots + items


def _sample_mmlu(records: list[dict], per_subject: int, seed: int) -> list[dict]:
    out = [r for r in records if r["split"] == "fewshot"]
    subjects = sorted({r["subject"] for r in records})
    for s in subjects:
        items = [r for r in records if r["subject"] == s and r["split"] == "eval"]
        keep = sorted(random.Random(f"{seed}-{s}").sample(range(len(items)), min(per_subject, len(items))))
        out += [items[i] for i in keep]
    return out


def build_subsets(source_dir: str | Path, out_dir: str | Path, *, seed: int = 0,
                  mmlu_per_subject: int = MMLU_PER_SUBJECT) -> dict[str, int]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for dataset in sorted(SOURCE_FILES):
        records = read_source(dataset, source_dir)
        if dataset == "mmlu":
            subset = _sample_mmlu(records, mmlu_per_subject, seed)
        else:
            subset = _sample(records, DEFAULT_SIZES.get(dataset, DEFAULT_SIZE), seed)
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in subset)
        buf = io.BytesIO()
        # preset 9 + no timestamps in the xz container: identical bytes on every rebuild.
        with lzma.open(buf, "wb", preset=9) as f:
            f.write(text.encode("utf-8"))
        (out_dir / f"{dataset}.jsonl.xz").write_bytes(buf.getvalue())
        counts[dataset] = sum(r["split"] == "eval" for r in subset)
    return counts


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    for name, n in build_subsets(src, dst).items():
        print(f"{name}: {n} scored items")
