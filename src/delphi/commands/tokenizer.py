"""`delphi tokenizer train` (byte-level BPE) and `delphi tokenizer export` (Hugging Face files)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer or export one for transformers",
                       description="Train a byte-level BPE (Llama 3 split regex, <|endoftext|> as EOS) on a "
                                   "corpus, or write a tokenizer's Hugging Face files.")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    tr = tsub.add_parser("train", help="train a byte-level BPE on a corpus; writes tokenizer.json")
    tr.add_argument("--corpus", nargs="+", required=True,
                    help="files or directories (.jsonl[.gz|.xz|.zst], .txt, .parquet)")
    tr.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size incl. the EOS token (default 4096)")
    tr.add_argument("--out", required=True, help="output tokenizer.json, or a directory to write it into")
    tr.add_argument("--text-field", default="text", help="JSON key / Parquet column with the text")
    tr.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge (default 2)")
    tr.set_defaults(func=run_train)
    ex = tsub.add_parser("export", help="write tokenizer.json + configs loadable by transformers.AutoTokenizer")
    ex.add_argument("--tokenizer", default="embedded-bpe", help="'embedded-bpe', 'llama3' or a tokenizer.json")
    ex.add_argument("--out", required=True, help="output directory")
    ex.set_defaults(func=run_export)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from delphi.data.documents import expand_sources, iter_corpus_texts
    from delphi.data.tokenizers import load_tokenizer, train_bpe
    from delphi.errors import DelphiError
    from delphi.files import atomic_write_text

    if args.vocab_size < 257:
        raise DelphiError(f"--vocab-size must be at least 257 (256 bytes + EOS), got {args.vocab_size}")
    files = expand_sources(args.corpus)
    out = Path(args.out)
    if out.is_dir() or not out.suffix:
        out = out / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(iter_corpus_texts(files, text_field=args.text_field), vocab_size=args.vocab_size,
                    min_frequency=args.min_frequency)
    atomic_write_text(out, tok.to_str(pretty=True))  # the bytes `Tokenizer.save` writes
    loaded = load_tokenizer(out)
    print(f"wrote {out}: vocab {loaded.vocab_size:,}, eos {loaded.eos_token} = {loaded.eos_id}, "
          f"trained on {len(files)} file(s)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from delphi.data.tokenizers import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    tok.save_hf(args.out)
    print(f"wrote {args.out}: tokenizer.json, tokenizer_config.json, special_tokens_map.json ({tok.name})")
    return 0
