"""Tokenise documents (read by `delphi.data.documents`) in parallel and cache flat token shards on disk.

One shard per (domain, split): ``tokens.bin`` (a flat uint16 array when the vocabulary fits, else
uint32) holding every document followed by the EOS token, ``offsets.npy`` (int64, ``n_docs + 1``
entries: document ``i`` with its trailing EOS is ``tokens[offsets[i]:offsets[i+1]]``),
``doc_bytes.npy`` (UTF-8 bytes of each document's text) and ``meta.json``.

The cache key is (tokenizer fingerprint, sha256 of every source file's contents, settings), so
preparing the same data twice does no work, and changing a file, the tokenizer or the text field
builds a new shard. A shard is written into a temporary directory and renamed into place only
when complete, so an interrupted prepare never leaves a corrupt cache entry; ``checksums.json``
records the size and sha256 of its files, and a cached shard that no longer matches them
(truncated, corrupted) is rebuilt instead of used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from delphi.config import DataSpec
from delphi.data.documents import BadInput, expand_sources, iter_documents, source_fingerprint
from delphi.data.mixture import Mixture, resolve_mixture
from delphi.data.tokenizers import Tokenizer, load_tokenizer
from delphi.errors import DelphiError
from delphi.files import atomic_write_text, sha256_file

FORMAT_VERSION = 1
CHUNK_CHARS = 2_000_000  # text per worker task: large enough to amortise IPC, small for memory
SMALL_INPUT_BYTES = 4_000_000  # below this (compressed) a worker pool costs more than it saves


# ---- tokenising ---------------------------------------------------------------------------------

_WORKER_TOKENIZER: Tokenizer | None = None


def _worker_init(spec: str) -> None:
    # One tokenizer thread per worker process: the processes are the parallelism.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(spec)


def _encode_texts(tok: Tokenizer, texts: list[str], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of ``texts``, each followed by EOS, as one flat array, plus each document's length."""
    ids = tok.encode_batch(texts)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for x in ids:
        flat[pos:pos + len(x)] = x
        pos += len(x)
        flat[pos] = tok.eos_id
        pos += 1
    return flat, lengths


def _worker_encode(texts: list[str], dtype_name: str) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_TOKENIZER is not None
    return _encode_texts(_WORKER_TOKENIZER, texts, np.dtype(dtype_name))


class WorkerPool:
    """Tokeniser processes, started on first use and shared by every shard of one prepare call
    (starting spawned workers costs seconds on a busy machine; pay it once). If the workers cannot
    start (e.g. a ``__main__`` that spawn cannot re-import), tokenising falls back to this process
    instead of hanging."""

    def __init__(self, tokenizer: Tokenizer, workers: int):
        self.tokenizer, self.workers, self._pool, self.broken = tokenizer, workers, None, False

    def submit(self, texts: list[str], dtype: np.dtype):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may be a multi-threaded trainer (torch, rayon pools).
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init, initargs=(self.tokenizer.spec(),))
        return self._pool.submit(_worker_encode, texts, dtype.name)

    def result(self, future, texts: list[str], dtype: np.dtype):
        from concurrent.futures.process import BrokenProcessPool

        if not self.broken:
            try:
                return future.result()
            except BrokenProcessPool as e:
                self.broken = True
                warnings.warn(f"data: tokeniser worker processes failed ({e}); tokenising in this process",
                              stacklevel=2)
        return _encode_texts(self.tokenizer, texts, dtype)

    def close(self, error: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=error)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(error=exc_type is not None)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class Shard:
    """A finished, read-only token shard (memory-mapped)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.dtype = np.dtype(self.meta["dtype"])
        self.num_tokens = int(self.meta["tokens"])
        self.offsets = np.load(self.path / "offsets.npy")
        self.doc_bytes = np.load(self.path / "doc_bytes.npy")
        if self.num_tokens:
            self.tokens = np.memmap(self.path / "tokens.bin", dtype=self.dtype, mode="r", shape=(self.num_tokens,))
        else:
            self.tokens = np.zeros(0, dtype=self.dtype)

    @property
    def num_docs(self) -> int:
        return len(self.doc_bytes)

    @property
    def num_bytes(self) -> int:
        return int(self.doc_bytes.sum())

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` including its trailing EOS."""
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def __repr__(self) -> str:
        return f"Shard({self.path.name}, docs={self.num_docs}, tokens={self.num_tokens})"


def default_cache_dir() -> Path:
    env = os.environ.get("DELPHI_CACHE")
    return (Path(env).expanduser() / "data") if env else Path.home() / ".cache" / "delphi" / "data"


def _shard_key(tokenizer: Tokenizer, files: list[str], text_field: str, dtype: np.dtype) -> str:
    desc = {
        "format": FORMAT_VERSION,
        "tokenizer": tokenizer.fingerprint,
        "sources": [source_fingerprint(f) for f in files],
        "text_field": text_field,
        "dtype": dtype.name,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


class _Progress:
    """A rich progress bar over compressed input bytes, showing docs, tokens and MB/s of text."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(
                TextColumn("{task.description:<18}"), BarColumn(),
                TextColumn("{task.fields[docs]:>8,} docs {task.fields[tokens]:>12,} tokens {task.fields[mbps]:>6.1f} MB/s"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int):
        if self._p is None:
            return None
        return self._p.add_task(description, total=total, docs=0, tokens=0, mbps=0.0)

    def update(self, task, **kw):
        if self._p is not None and task is not None:
            self._p.update(task, **kw)


def build_shard(files: list[str], tokenizer: Tokenizer, out_dir: Path, *, text_field: str = "text",
                workers: int | None = None, skip_bad: bool = False, progress: _Progress | None = None,
                description: str = "", pool: WorkerPool | None = None) -> Shard:
    """Tokenise ``files`` into a shard at ``out_dir`` (atomically: temp directory + rename)."""
    dtype = token_dtype(tokenizer.vocab_size)
    workers = max(1, int(workers or os.cpu_count() or 1))
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    progress = progress or _Progress(False)
    total_in = sum(os.path.getsize(f) for f in files if not f.startswith("hf:"))
    task = progress.task(description, total_in or None)
    state = {"read": 0, "docs": 0, "tokens": 0, "text_bytes": 0, "t0": time.perf_counter()}

    def on_read(n):
        state["read"] += n

    bad = BadInput()
    lengths_all: list[np.ndarray] = []
    doc_bytes: list[int] = []
    own_pool = None
    parallel = workers > 1 and total_in > SMALL_INPUT_BYTES
    if parallel and pool is None:
        pool = own_pool = WorkerPool(tokenizer, workers)
    try:
        with open(tmp / "tokens.bin", "wb") as out:
            pending: deque = deque()

            def write(result):
                flat, lengths = result
                out.write(flat.tobytes())
                lengths_all.append(lengths)
                state["tokens"] += len(flat)
                state["docs"] += len(lengths)
                elapsed = max(time.perf_counter() - state["t0"], 1e-9)
                progress.update(task, completed=state["read"], docs=state["docs"], tokens=state["tokens"],
                                mbps=state["text_bytes"] / elapsed / 1e6)

            def drain():
                fut, texts = pending.popleft()
                write(pool.result(fut, texts, dtype))

            def submit(texts):
                if not parallel or pool.broken:
                    write(_encode_texts(tokenizer, texts, dtype))
                    return
                pending.append((pool.submit(texts, dtype), texts))
                while len(pending) >= 2 * workers:  # bounded: never hold the whole corpus in memory
                    drain()

            chunk: list[str] = []
            chunk_chars = 0
            for f in files:
                for doc in iter_documents(f, text_field, skip_bad, bad, on_read):
                    chunk.append(doc.text)
                    doc_bytes.append(doc.nbytes)
                    state["text_bytes"] += doc_bytes[-1]
                    chunk_chars += len(doc.text)
                    if chunk_chars >= CHUNK_CHARS:
                        submit(chunk)
                        chunk, chunk_chars = [], 0
            if chunk:
                submit(chunk)
            while pending:
                drain()
        if own_pool is not None:
            own_pool.close()
        meta = {"tokenizer": tokenizer.name, "tokenizer_fingerprint": tokenizer.fingerprint, "dtype": dtype.name,
                "sources": files, "text_field": text_field, "skipped_bad": bad.count, "bad_examples": bad.examples,
                "eos_id": tokenizer.eos_id, "seconds": round(time.perf_counter() - state["t0"], 3),
                "workers": workers if parallel else 1}
        _finish_shard(tmp, out_dir, lengths_all, doc_bytes, meta)
        progress.update(task, completed=total_in)
    except BaseException:
        if pool is not None:
            pool.close(error=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Shard(out_dir)


def _finish_shard(tmp: Path, out_dir: Path, lengths_all: list[np.ndarray], doc_bytes: list[int], meta: dict) -> None:
    """Write the document index and meta.json into the temporary shard `tmp`, then move it to
    `out_dir` (a concurrent prepare that finished first wins; this copy is dropped)."""
    lengths = np.concatenate(lengths_all) if lengths_all else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "doc_bytes.npy", np.asarray(doc_bytes, dtype=np.int64))
    meta = {"format": FORMAT_VERSION, **meta, "tokens": int(offsets[-1]), "docs": len(doc_bytes),
            "bytes": int(sum(doc_bytes))}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _write_checksums(tmp)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not (out_dir / "meta.json").exists():  # not a concurrent prepare that finished first
            raise
        shutil.rmtree(tmp, ignore_errors=True)


# ---- cache integrity ----------------------------------------------------------------------------

CHECKSUMS = "checksums.json"
SHARD_FILES = ("tokens.bin", "offsets.npy", "doc_bytes.npy", "meta.json")
_HOST = "".join(c if c.isalnum() or c in "_." else "_" for c in (os.uname().nodename or "host"))
# .<shard>.tmp-<host>-<pid>-<8 hex> (a build in progress), .<shard>.tmp-<pid>-<8 hex> (older
# versions), .<shard>.bad-<pid>-<8 hex> (a damaged shard being removed)
_TMP_DIR = re.compile(r"\..+\.tmp-(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)-[0-9a-f]{8}")
_BAD_DIR = re.compile(r"\..+\.bad-\d+-[0-9a-f]{8}")
_VERIFIED: dict[str, tuple] = {}  # shard path -> file stats when last verified by this process


def _write_checksums(shard_dir: Path) -> None:
    """Record size and sha256 of every shard file (``checksums.json``), atomically."""
    sums = {name: {"bytes": (shard_dir / name).stat().st_size, "sha256": sha256_file(shard_dir / name)}
            for name in SHARD_FILES}
    atomic_write_text(shard_dir / CHECKSUMS, json.dumps({"files": sums}, indent=1, sort_keys=True))


def _stat_key(shard_dir: Path) -> tuple:
    out = []
    for name in (*SHARD_FILES, CHECKSUMS):
        st = (shard_dir / name).stat()
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _consistent(shard_dir: Path) -> str | None:
    """None when the files agree with each other (token count, offsets, documents), else why."""
    try:
        meta = json.loads((shard_dir / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        tokens, docs = int(meta["tokens"]), int(meta["docs"])
        size = (shard_dir / "tokens.bin").stat().st_size
        if size != tokens * dtype.itemsize:
            return f"tokens.bin holds {size} bytes, meta.json says {tokens * dtype.itemsize}"
        offsets = np.load(shard_dir / "offsets.npy")
        doc_bytes = np.load(shard_dir / "doc_bytes.npy")
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} missing"
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if len(offsets) != docs + 1 or int(offsets[-1]) != tokens or len(doc_bytes) != docs:
        return "offsets.npy and doc_bytes.npy do not match meta.json"
    return None


def verify_shard(shard_dir: Path) -> str | None:
    """None when the cached shard is intact (every file matches the size and sha256 recorded when
    it was written), else why not. A shard written before checksums were recorded is checked for
    consistency and its checksums are recorded then. Within one process a shard whose files are
    unchanged since it was last verified is not hashed again."""
    shard_dir = Path(shard_dir)
    key = str(shard_dir)
    try:
        if _VERIFIED.get(key) == _stat_key(shard_dir):
            return None
    except OSError:
        pass
    _VERIFIED.pop(key, None)
    if not shard_dir.is_dir():
        return "not a directory"
    try:
        recorded = json.loads((shard_dir / CHECKSUMS).read_text())["files"]
    except FileNotFoundError:
        why = _consistent(shard_dir)
        if why is None:
            with contextlib.suppress(OSError):  # a read-only cache: verified, just not recorded
                _write_checksums(shard_dir)
        return why
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{CHECKSUMS} unreadable ({type(e).__name__})"
    if not isinstance(recorded, dict) or set(recorded) != set(SHARD_FILES):
        return f"{CHECKSUMS} does not list the shard's files"
    for name in SHARD_FILES:
        p = shard_dir / name
        try:
            size = p.stat().st_size
            if size != recorded[name]["bytes"]:
                return f"{name} is {size} bytes, {recorded[name]['bytes']} were written (truncated or replaced)"
            if sha256_file(p) != recorded[name]["sha256"]:
                return f"{name} checksum mismatch (corrupted)"
        except FileNotFoundError:
            return f"{name} missing"
        except (OSError, KeyError, TypeError) as e:
            return f"{name} unreadable ({type(e).__name__})"
    with contextlib.suppress(OSError):
        _VERIFIED[key] = _stat_key(shard_dir)
    return None


def _discard_shard(shard_dir: Path) -> None:
    """Move a damaged shard aside (one rename, so a concurrent reader never sees half of it),
    then delete it."""
    _VERIFIED.pop(str(shard_dir), None)
    if shard_dir.is_symlink() or not shard_dir.is_dir():
        with contextlib.suppress(FileNotFoundError):
            shard_dir.unlink()
        return
    aside = shard_dir.parent / f".{shard_dir.name}.bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(shard_dir, aside)
    except FileNotFoundError:  # another process moved it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_orphans(root: Path) -> list[str]:
    """Remove temporary shard directories left by killed prepares on this machine (their process
    is gone) and damaged shards whose removal was interrupted; return their names. Temporaries
    of a prepare still running, or written by another machine sharing the cache, are kept."""
    removed = []
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(".") or not p.is_dir() or p.is_symlink():
            continue
        m = _TMP_DIR.fullmatch(p.name)
        orphan = bool(_BAD_DIR.fullmatch(p.name)) or (
            m is not None and (m["host"] in (None, _HOST)) and not _pid_alive(int(m["pid"])))
        if orphan:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


# ---- prepare_data -------------------------------------------------------------------------------

@dataclass
class PreparedData:
    """A tokenised mixture: one train and one validation shard per domain."""

    spec: DataSpec
    mixture: Mixture
    tokenizer: Tokenizer
    train: dict[str, Shard]
    validation: dict[str, Shard]
    built: list[str] = field(default_factory=list)  # "domain/split" shards built by this call

    @property
    def domains(self) -> list[str]:
        return [d.name for d in self.mixture.domains]

    @property
    def weights(self) -> dict[str, float]:
        return self.mixture.weights

    @property
    def train_tokens(self) -> dict[str, int]:
        return {d: s.num_tokens for d, s in self.train.items()}

    @property
    def validation_tokens(self) -> dict[str, int]:
        return {d: s.num_tokens for d, s in self.validation.items()}

    @property
    def total_train_tokens(self) -> int:
        return sum(self.train_tokens.values())

    def first_to_repeat(self) -> str:
        """The domain a loader drawing by the mixture weights runs out of first."""
        return min(self.weights, key=lambda d: self.train[d].num_tokens / self.weights[d])

    def tokens_before_repeat(self) -> int:
        """Tokens a loader drawing by the mixture weights yields before any domain repeats."""
        d = self.first_to_repeat()
        return int(self.train[d].num_tokens / self.weights[d])

    def summary(self) -> list[dict]:
        rows = []
        for d in self.domains:
            for split, sh in (("train", self.train[d]), ("validation", self.validation[d])):
                rows.append({"domain": d, "split": split, "weight": self.weights[d], "docs": sh.num_docs,
                             "tokens": sh.num_tokens, "bytes": sh.num_bytes,
                             "bytes_per_token": sh.num_bytes / max(sh.num_tokens, 1),
                             "skipped_bad": sh.meta.get("skipped_bad", 0),
                             "cached": f"{d}/{split}" not in self.built, "path": str(sh.path)})
        return rows

    def print_summary(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console(stderr=True)
        t = Table(title=f"mixture {self.mixture.name} · tokenizer {self.tokenizer.name}")
        for col in ("domain", "split", "weight", "docs", "tokens", "MB", "B/tok", "bad", "cache"):
            t.add_column(col, justify="left" if col in ("domain", "split", "cache") else "right")
        for r in self.summary():
            t.add_row(r["domain"], "val" if r["split"] == "validation" else r["split"], f"{r['weight']:.3f}",
                      f"{r['docs']:,}", f"{r['tokens']:,}", f"{r['bytes'] / 1e6:.1f}", f"{r['bytes_per_token']:.2f}",
                      str(r["skipped_bad"]), "hit" if r["cached"] else "built")
        console.print(t)
        console.print(f"train tokens {self.total_train_tokens:,}; tokens before any domain repeats "
                      f"at these weights: {self.tokens_before_repeat():,}")


def cache_root(spec: DataSpec) -> Path:
    return Path(spec.cache_dir).expanduser() if spec.cache_dir else default_cache_dir()


def _plan(data: DataSpec):
    """(mixture, tokenizer, shard root, [(domain, split, files, shard directory)])."""
    mixture = resolve_mixture(data.mixture)
    tokenizer = load_tokenizer(data.tokenizer)
    root = cache_root(data) / "shards"
    dtype = token_dtype(tokenizer.vocab_size)
    items = []
    for dom in mixture.domains:
        for split in ("train", "validation"):
            files = expand_sources(getattr(dom, split))
            key = _shard_key(tokenizer, files, dom.text_field, dtype)
            items.append((dom, split, files, root / f"{_safe(dom.name)}-{split}-{key[:20]}"))
    return mixture, tokenizer, root, items


def cached_data(data: DataSpec | None = None) -> PreparedData | None:
    """The prepared data if every shard is already cached, else None; never tokenises."""
    data = data or DataSpec()
    mixture, tokenizer, _, items = _plan(data)
    if not all(verify_shard(out) is None for *_, out in items):
        return None
    shards: dict[str, dict[str, Shard]] = {"train": {}, "validation": {}}
    for dom, split, _, out in items:
        shards[split][dom.name] = Shard(out)
    return PreparedData(data, mixture, tokenizer, shards["train"], shards["validation"])


def prepare_data(data: DataSpec | None = None, progress: bool = True, *, workers: int | None = None,
                 skip_bad: bool = False) -> PreparedData:
    """Resolve the mixture, tokenise every (domain, split) into cached shards, return them.

    A second call with the same sources, tokenizer and settings finds every shard in the cache
    and does no tokenising. ``workers`` defaults to the number of CPU cores. With ``progress``, a
    progress bar and a per-domain summary go to stderr when anything is tokenised.
    """
    data = data or DataSpec()
    mixture, tokenizer, root, items = _plan(data)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DelphiError(f"data cache {root}: cannot create it ({e.strerror or e}); set cache_dir or DELPHI_CACHE") from None
    clean_orphans(root)
    shards: dict[str, dict[str, Shard]] = {"train": {}, "validation": {}}
    built: list[str] = []
    workers = max(1, int(workers or os.cpu_count() or 1))
    with _Progress(progress) as bar, WorkerPool(tokenizer, workers) as pool:
        for dom, split, files, out in items:
            shard = None
            if out.exists() or out.is_symlink():
                why = verify_shard(out)
                if why is None:
                    shard = Shard(out)
                else:
                    warnings.warn(f"data: cached shard {dom.name}/{split} ({out.name}) is damaged ({why}); "
                                  f"rebuilding it", RuntimeWarning, stacklevel=2)
                    _discard_shard(out)
            if shard is None:
                shard = build_shard(files, tokenizer, out, text_field=dom.text_field, workers=workers,
                                    skip_bad=skip_bad, progress=bar, description=f"{dom.name}/{split}", pool=pool)
                built.append(f"{dom.name}/{split}")
            skipped = shard.meta.get("skipped_bad", 0)
            if skipped and not skip_bad and f"{dom.name}/{split}" not in built:
                warnings.warn(f"{dom.name}/{split}: this cached shard was prepared with --skip-bad and "
                              f"is missing {skipped} bad record(s), e.g. {shard.meta['bad_examples'][0]}",
                              stacklevel=2)
            if shard.num_tokens < 2:
                raise DelphiError(f"mixture {mixture.name}: domain {dom.name!r} {split} split has no text")
            shards[split][dom.name] = shard
    prepared = PreparedData(data, mixture, tokenizer, shards["train"], shards["validation"], built)
    if progress and built:  # quiet when everything came from the cache (every run of a suite)
        prepared.print_summary()
    return prepared


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
