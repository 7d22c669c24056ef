"""Read documents from corpus sources: JSONL (plain or gzip/xz/zstd-compressed), plain text,
Parquet and streamed Hugging Face datasets (``hf:name[:split]``).

`expand_sources` turns files and directories into a sorted file list, `iter_documents` yields the
documents of one source (bad records raise a `DelphiError` naming file and line, or are counted
when skipped), `source_fingerprint` is the hash the shard cache keys on, and `iter_corpus_texts`
streams the texts of many sources (for tokenizer training).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from delphi.errors import DelphiError
from delphi.files import sha256_file

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.xz", ".jsonl.zst", ".ndjson")
TEXT_SUFFIXES = (".txt",)
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = JSONL_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES


@dataclass
class Document:
    text: str
    where: str  # "file:line" for error messages
    nbytes: int  # UTF-8 bytes of the text


def _document(text: str, where: str, fail) -> Document | None:
    try:
        return Document(text, where, len(text.encode("utf-8")))
    except UnicodeEncodeError:  # e.g. an unpaired surrogate escaped in JSON ("\ud800")
        fail(f"{where}: text is not valid Unicode (unpaired surrogate)")
        return None


@dataclass
class BadInput:
    """Counts of skipped bad records (``skip_bad=True``) and the first few locations."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(message)


def _has_suffix(name: str, suffixes: Sequence[str]) -> bool:
    return any(name.endswith(s) for s in suffixes)


def expand_sources(sources: Iterable[str | os.PathLike]) -> list[str]:
    """Files (sorted within each directory) for a list of files, directories and ``hf:`` names."""
    out: list[str] = []
    for src in sources:
        s = str(src)
        if s.startswith("hf:"):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and _has_suffix(f.name, SUPPORTED))
            if not found:
                raise DelphiError(f"data source {p}: directory holds no {', '.join(SUPPORTED)} files")
            out.extend(found)
        elif p.is_file():
            if not _has_suffix(p.name, SUPPORTED):
                raise DelphiError(f"data source {p}: unsupported file type; use one of {', '.join(SUPPORTED)}")
            out.append(str(p))
        else:
            raise DelphiError(f"data source {p} does not exist")
    return out


class _CountingReader(io.RawIOBase):
    """Wraps a binary file and counts the (compressed) bytes read, for the progress bar."""

    def __init__(self, f, on_read):
        self._f, self._on_read = f, on_read

    def readable(self):
        return True

    def readinto(self, b):
        n = self._f.readinto(b)
        if n:
            self._on_read(n)
        return n

    def close(self):
        self._f.close()
        super().close()


def _open_binary(path: str, on_read=None):
    raw = open(path, "rb")
    f = _CountingReader(raw, on_read) if on_read else raw
    if path.endswith(".gz"):
        return gzip.open(f, "rb")
    if path.endswith(".xz"):
        return lzma.open(f, "rb")
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, closefd=True))
    return io.BufferedReader(f) if on_read else f


def iter_documents(path: str, text_field: str = "text", skip_bad: bool = False,
                   bad: BadInput | None = None, on_read=None) -> Iterator[Document]:
    """Documents of one source. Bad records raise a `DelphiError` naming file and line, or are
    counted in ``bad`` when ``skip_bad``. Empty documents are skipped (they carry no text)."""
    bad = bad if bad is not None else BadInput()

    def fail(msg: str):
        if not skip_bad:
            raise DelphiError(msg + " (fix the input, or pass --skip-bad to skip bad records)")
        bad.add(msg)

    if path.startswith("hf:"):
        yield from _iter_hf(path, text_field, fail)
        return
    try:
        if _has_suffix(path, PARQUET_SUFFIXES):
            yield from _iter_parquet(path, text_field, fail, on_read)
        elif _has_suffix(path, TEXT_SUFFIXES):
            with _open_binary(path, on_read) as f:
                data = f.read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                fail(f"{path}: not valid UTF-8 at byte {e.start}")
                return
            doc = _document(text, f"{path}:1", fail) if text else None
            if doc:
                yield doc
        else:
            with _open_binary(path, on_read) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except UnicodeDecodeError:
                        fail(f"{path}:{lineno}: not valid UTF-8")
                        continue
                    except json.JSONDecodeError as e:
                        fail(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})")
                        continue
                    if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                        keys = ", ".join(sorted(rec)[:8]) if isinstance(rec, dict) else type(rec).__name__
                        fail(f"{path}:{lineno}: no string field {text_field!r} (found: {keys})")
                        continue
                    doc = _document(rec[text_field], f"{path}:{lineno}", fail) if rec[text_field] else None
                    if doc:
                        yield doc
    except DelphiError:
        raise
    except (OSError, EOFError, lzma.LZMAError) as e:
        msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise DelphiError(f"{path}: cannot read file ({msg})") from None
    except Exception as e:  # zstandard / pyarrow raise their own error types for corrupt files
        if type(e).__module__.split(".")[0] in ("zstandard", "pyarrow", "_zstd"):
            raise DelphiError(f"{path}: cannot read file ({e})") from None
        raise


def _iter_parquet(path: str, text_field: str, fail, on_read) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DelphiError(f"{path}: no column {text_field!r} (columns: {', '.join(names[:12])}); "
                          f"set text_field in the mixture")
    row = 0
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if not isinstance(value, str):
                fail(f"{path}: row {row}: column {text_field!r} is {type(value).__name__}, not text")
                continue
            doc = _document(value, f"{path}:row {row}", fail) if value else None
            if doc:
                yield doc
    if on_read:
        on_read(os.path.getsize(path))


def _iter_hf(name: str, text_field: str, fail) -> Iterator[Document]:
    dataset, _, split = name[3:].partition(":")
    try:
        import datasets
    except ImportError:
        raise DelphiError(f"data source {name}: Hugging Face datasets need 'pip install datasets'") from None
    try:
        ds = datasets.load_dataset(dataset, split=split or "train", streaming=True)
    except Exception as e:
        raise DelphiError(f"data source {name}: cannot load ({str(e).splitlines()[0]}); are you online?") from None
    for i, rec in enumerate(ds, 1):
        value = rec.get(text_field)
        if not isinstance(value, str):
            fail(f"{name}: record {i}: no string field {text_field!r}")
            continue
        doc = _document(value, f"{name}:{i}", fail) if value else None
        if doc:
            yield doc


def source_fingerprint(path: str) -> str:
    """sha256 of a source file's bytes (``hf:`` sources: the name; they cannot be hashed offline)."""
    if path.startswith("hf:"):
        return "name:" + path
    try:
        return sha256_file(path)
    except OSError as e:
        raise DelphiError(f"{path}: cannot read file ({e.strerror or e})") from None


def iter_corpus_texts(paths: Sequence[str | os.PathLike], text_field: str = "text") -> Iterator[str]:
    """Texts of every document in ``paths`` (any source format `iter_documents` reads)."""
    for f in expand_sources(paths):
        for doc in iter_documents(f, text_field=text_field):
            yield doc.text
