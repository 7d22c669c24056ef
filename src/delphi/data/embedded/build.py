"""Rebuild the embedded corpus and its tokenizer from the shared three-domain corpus.

    python src/delphi/data/embedded/build.py /path/to/shared/data/corpus

Selection is a fixed function of the source files: documents are ordered by sha256 of their
``id`` (a reproducible, source-order-free shuffle) and taken from the front until the domain's
UTF-8 byte target is reached. Train documents come only from ``<domain>-train``, validation
documents only from ``<domain>-val`` (the shared corpus splits those by document, prose by
book), so train and validation stay disjoint. Then the byte-level BPE (vocabulary 4096) is
trained on the embedded train split, in the order of the files written here.

Byte targets: ~3 UTF-8 bytes per token with the 4096 BPE; the train targets gave 13.2M prose +
6.8M code + 7.3M math tokens (26.4M before any domain repeats at the 2:1:1 weights of mixture.toml) and the validation targets
a few hundred thousand tokens per domain. The whole directory stays under 20 MB.

``--tokenizer-only`` retrains the tokenizer on the embedded files without re-cutting them.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_BYTES = {"prose": 41_000_000, "code": 21_000_000, "math": 19_000_000}
VAL_BYTES = {"prose": 1_200_000, "code": 1_100_000, "math": 1_100_000}


def select(src: Path, target: int) -> list[str]:
    with lzma.open(src, "rt", encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    keyed = sorted(lines, key=lambda line: hashlib.sha256(json.loads(line)["id"].encode()).hexdigest())
    out, total = [], 0
    for line in keyed:
        if total >= target:
            break
        out.append(line if line.endswith("\n") else line + "\n")
        total += len(json.loads(line)["text"].encode("utf-8"))
    return out


def main(corpus: Path | None) -> None:
    for domain in ("prose", "code", "math") if corpus else ():
        for split, targets in (("train", TRAIN_BYTES), ("val", VAL_BYTES)):
            lines = select(corpus / f"{domain}-{split}.jsonl.xz", targets[domain])
            dest = HERE / f"{domain}-{split}.jsonl.xz"
            with lzma.open(dest, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
                f.writelines(lines)
            print(f"{dest.name}: {len(lines)} docs, {dest.stat().st_size / 1e6:.2f} MB xz", flush=True)

    sys.path.insert(0, str(HERE.parents[2]))
    from delphi.data.documents import iter_corpus_texts
    from delphi.data.tokenizers import train_bpe

    files = [HERE / f"{d}-train.jsonl.xz" for d in ("prose", "code", "math")]
    for vocab, name in ((4096, "tokenizer.json"), (1024, "tokenizer-1k.json")):
        tok = train_bpe(iter_corpus_texts(files), vocab_size=vocab)
        tok.save(str(HERE / name))
        print(f"{name} written")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build.py SHARED_CORPUS_DIR | --tokenizer-only")
    main(None if sys.argv[1] == "--tokenizer-only" else Path(sys.argv[1]))
