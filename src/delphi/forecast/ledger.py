"""The pre-registration ledger: an append-only, hash-chained JSON Lines file.

Each entry records a forecast *before* the run it predicts starts. An entry's `hash` is the
sha256 of its canonical JSON (sorted keys, no whitespace) without the `hash` field; it includes
`prev_hash` (the previous entry's hash, "" for the first) and `index`, so editing, removing or
reordering any entry breaks the chain. A sidecar `<ledger>.head` stores the count and last hash,
which catches a truncated tail; held-out runs also record the hash of the entry they test, so a
removed entry is caught by `check` too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    problems: tuple[str, ...]


class Ledger:
    """Append-only ledger at `path` (JSON Lines) with a `.head` sidecar."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DelphiError(f"{self.path}:{lineno}: not valid JSON; the ledger was edited or damaged") from None
        return entries

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` (any JSON object) as a new entry; returns the entry with its hash."""
        check = self.verify()
        if not check.ok:
            raise DelphiError(f"ledger {self.path} fails verification ({check.problems[0]}); refusing to append")
        entries = self.read()
        entry = dict(record)
        entry["index"] = len(entries)
        entry["prev_hash"] = entries[-1]["hash"] if entries else ""
        entry.setdefault("timestamp", utc_now())
        entry["hash"] = entry_hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        tmp.write_text(json.dumps({"entries": entry["index"] + 1, "last_hash": entry["hash"]}) + "\n")
        os.replace(tmp, self.head_path)
        return entry

    def verify(self) -> VerifyResult:
        problems: list[str] = []
        try:
            entries = self.read()
        except DelphiError as e:
            return VerifyResult(False, 0, (str(e),))
        prev = ""
        for i, e in enumerate(entries):
            where = f"entry {i}"
            if e.get("index") != i:
                problems.append(f"{where}: index {e.get('index')!r} out of order (entries removed or reordered)")
            if e.get("prev_hash") != prev:
                problems.append(f"{where}: prev_hash does not match the previous entry (entries removed or reordered)")
            if e.get("hash") != entry_hash(e):
                problems.append(f"{where}: content does not match its hash (entry edited)")
            prev = e.get("hash", "")
        if self.head_path.exists():
            try:
                head = json.loads(self.head_path.read_text())
                if head.get("entries") != len(entries) or head.get("last_hash") != (prev or None):
                    problems.append(f"ledger head records {head.get('entries')} entries ending in "
                                    f"{str(head.get('last_hash'))[:12]}…, the file has {len(entries)} "
                                    "(entries removed from the end)")
            except (json.JSONDecodeError, OSError):
                problems.append(f"{self.head_path}: unreadable")
        elif entries:
            problems.append(f"{self.head_path} is missing")
        return VerifyResult(not problems, len(entries), tuple(problems))

    def find(self, hash_: str) -> dict[str, Any] | None:
        return next((e for e in self.read() if e.get("hash") == hash_), None)
