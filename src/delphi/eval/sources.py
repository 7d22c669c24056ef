"""Evaluation data: the committed seeded subsets, or the full sets from a directory.

Every task reads *records* in the format of its source file (llm-foundry JSON Lines, the
HellaSwag text dump, the MMLU CSVs; see `data/SOURCES.md`). Each record carries a `split`:
`"eval"` (scored) or `"fewshot"` (the fixed pool k-shot prompts are drawn from). The split of
the full sets is a pure function of the file (`fewshot_indices`), so a subset built from them
(`python -m delphi.eval.subsets`) and the full set agree on which items are shots.
"""

from __future__ import annotations

import bz2
import csv
import json
import lzma
import random
from pathlib import Path

from delphi.errors import DelphiError

PACKAGE_DATA = Path(__file__).parent / "data"

# Source file of each dataset in a full data directory (the layout of ../shared/data/eval).
SOURCE_FILES = {
    "arc_easy": "arc_easy.jsonl",
    "arc_challenge": "arc_challenge.jsonl",
    "boolq": "boolq.jsonl",
    "commonsense_qa": "commonsense_qa.jsonl",
    "copa": "copa.jsonl",
    "gsm8k": "gsm8k.jsonl",
    "hellaswag": "hellaswag_val_full.txt.bz2",
    "lambada_openai": "lambada_openai.jsonl",
    "openbook_qa": "openbook_qa.jsonl",
    "piqa": "piqa.jsonl",
    "siqa": "siqa.jsonl",
    "winograd_wsc": "winograd_wsc.jsonl",
    "winogrande": "winogrande.jsonl",
    "mmlu": "mmlu",
}

# Size of the fixed few-shot pool cut from sets that ship without a train/dev split.
FEWSHOT_POOL = 10
SPLIT_SEED = 1234


def fewshot_indices(n: int, pool: int = FEWSHOT_POOL, seed: int = SPLIT_SEED) -> list[int]:
    """Indices of the few-shot pool of an n-record set (fixed: seeded, sorted)."""
    return sorted(random.Random(seed).sample(range(n), min(pool, n // 2)))


def _read_jsonl(path: Path) -> list[dict]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_hellaswag(path: Path) -> list[dict]:
    """6 lines per item: `label: context`, gold index, four endings (cleaned as lm-eval does)."""
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for i in range(0, len(lines) - 5, 6):
        out.append({"query": lines[i], "gold": int(lines[i + 1]), "choices": lines[i + 2:i + 6]})
    return out


def _read_mmlu(root: Path) -> list[dict]:
    """MMLU CSVs `<subject>_{dev,test}.csv` → records with subject and split (dev → fewshot)."""
    out = []
    for split, tag in (("dev", "fewshot"), ("test", "eval")):
        for path in sorted((root / split).glob(f"*_{split}.csv")):
            subject = path.name[: -len(f"_{split}.csv")]
            with open(path, newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.DictReader(f)):
                    out.append({"subject": subject, "split": tag, "index": i, "question": row["question"],
                                "choices": [row[f"choice{j}"] for j in range(4)], "answer": int(row["answer"])})
    return out


def read_source(dataset: str, data_dir: str | Path) -> list[dict]:
    """All records of `dataset` from a full data directory, each tagged with split and index."""
    root = Path(data_dir)
    if dataset not in SOURCE_FILES:
        raise DelphiError(f"unknown eval dataset {dataset!r}; known: {', '.join(sorted(SOURCE_FILES))}")
    path = root / SOURCE_FILES[dataset]
    if not path.exists():
        raise DelphiError(f"eval data: {path} not found; --data-dir must hold the files of ../shared/data/eval "
                          f"(e.g. {SOURCE_FILES[dataset]})")
    if dataset == "mmlu":
        return _read_mmlu(path)
    records = _read_hellaswag(path) if dataset == "hellaswag" else _read_jsonl(path)
    shots = set(fewshot_indices(len(records)))
    return [{**r, "split": "fewshot" if i in shots else "eval", "index": i} for i, r in enumerate(records)]


def load_records(dataset: str, data_dir: str | Path | None = None) -> list[dict]:
    """Records of `dataset`: the committed subset, or the full set when `data_dir` is given."""
    if data_dir is not None:
        return read_source(dataset, data_dir)
    path = PACKAGE_DATA / f"{dataset}.jsonl.xz"
    if not path.exists():
        raise DelphiError(f"no committed subset for {dataset!r} ({path}); pass --data-dir with the full sets")
    return _read_jsonl(path)
