"""The pre-registration ledger: an append-only, hash-chained JSON Lines file.

Each entry records a forecast *before* the run it predicts starts. An entry's `hash` is the
sha256 of its canonical JSON (sorted keys, no whitespace) without the `hash` field; it includes
`prev_hash` (the previous entry's hash, "" for the first) and `index`, so editing, removing or
reordering any entry breaks the chain. A sidecar `<ledger>.head` stores the count and last hash,
which catches a truncated tail; held-out runs also record the hash of the entry they test, so a
removed entry is caught by `check` (and by `verify` given the runs directory) too.

Anyone who can write the files can still rewrite the whole chain and its `.head`. Two anchors
make that detectable:

- the head digest `COUNT:HASH` (`Ledger.head`, `delphi ledger head`): the last entry's hash
  commits to every entry before it, so once the digest is published somewhere others can see it,
  `verify(expect_head=...)` proves the ledger still extends it;
- signatures made with the user's own SSH key (`ssh-keygen -Y sign`, namespace
  `delphi-ledger`) over each entry's head digest, kept in the `<ledger>.sig` sidecar (JSON Lines:
  index, hash, principal, signature) and checked against an allowed-signers file
  (`ssh-keygen -Y verify`). Setting `DELPHI_LEDGER_KEY` to a private key signs every entry as it
  is appended.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.files import atomic_write_text

SIGNATURE_NAMESPACE = "delphi-ledger"
KEY_ENV = "DELPHI_LEDGER_KEY"
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CHAIN_KEYS = ("index", "prev_hash", "timestamp", "hash")


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def head_digest(count: int, last_hash: str) -> str:
    """The digest to publish for a ledger of `count` entries ending in `last_hash`."""
    return f"{count}:{last_hash}"


def parse_head(text: str) -> tuple[int | None, str]:
    """`COUNT:HASH` (as `delphi ledger head` prints it) or a bare entry hash → (count or None, hash)."""
    raw = str(text).strip()
    count_s, sep, h = raw.rpartition(":")
    h = h.lower()
    if not _HASH_RE.fullmatch(h) or (sep and not (count_s.isdigit() and int(count_s) > 0)):
        raise DelphiError(f"published head {raw!r} is not COUNT:HASH (a positive count and a 64-hex-digit sha256), "
                          "as `delphi ledger head` prints it")
    return (int(count_s) if sep else None), h


def referenced_entries(runs_dir: str | Path) -> dict[str, tuple[str, Path]]:
    """{run name: (ledger entry hash, run directory)} for every run under `runs_dir` whose
    run.json names a ledger entry (the `ledger_entry` tag every held-out run carries)."""
    out: dict[str, tuple[str, Path]] = {}
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return out
    for run_json in sorted(runs_dir.glob("*/run.json")):
        try:
            spec = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # an unreadable run.json is reported where the run is scored
        tags = spec.get("tags") if isinstance(spec, dict) else None
        ref = tags.get("ledger_entry") if isinstance(tags, dict) else None
        if isinstance(ref, str) and ref:
            out[str(spec.get("name") or run_json.parent.name)] = (ref, run_json.parent)
    return out


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise DelphiError("ledger signatures need ssh-keygen (OpenSSH 8.1 or newer), which is not on PATH; "
                          "install the OpenSSH client tools")
    return exe


def _principal_of(key: Path) -> str:
    """The comment of KEY.pub (usually user@host), else the user name: who signs."""
    import getpass

    try:
        parts = key.with_name(key.name + ".pub").read_text().split(None, 2)
        if len(parts) == 3 and parts[2].strip():
            return parts[2].strip().split()[0]
    except OSError:
        pass
    return getpass.getuser()


def allowed_signers_line(key: str | Path, principal: str | None = None) -> str:
    """The allowed-signers line (`PRINCIPAL KEYTYPE KEY`) for the private key `key`."""
    key = Path(key).expanduser()
    pub = key.with_name(key.name + ".pub")
    try:
        parts = pub.read_text().split()
    except OSError:
        p = subprocess.run([_ssh_keygen(), "-y", "-f", str(key)], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        parts = p.stdout.split() if p.returncode == 0 else []
    if len(parts) < 2:
        raise DelphiError(f"cannot read the public key of {key} (neither {pub.name} nor `ssh-keygen -y` gave it)")
    return f"{principal or _principal_of(key)} {parts[0]} {parts[1]}"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    problems: tuple[str, ...]
    head: str | None = None  # COUNT:HASH of the last entry (None when the ledger is empty or unreadable)
    signed: int = 0  # entries covered by a verified signature (when signatures were checked)


class Ledger:
    """Append-only ledger at `path` (JSON Lines) with `.head` and `.sig` sidecars."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.sig_path = self.path.with_name(self.path.name + ".sig")

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> list[dict[str, Any]]:
        """The entries. A line that is not UTF-8, not JSON, not an object or cut short is a
        DelphiError naming the file, the entry and the line."""
        if not self.path.exists():
            return []
        entries: list[dict[str, Any]] = []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        fix = "(restore it from a copy: a ledger must never be edited)"
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{self.path}: entry {len(entries)} (line {lineno})"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DelphiError(f"{where} is not valid UTF-8: the ledger was edited or damaged {fix}") from None
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                if lineno == len(lines):  # the last line, without its newline
                    raise DelphiError(f"{where} is cut short: the ledger was truncated {fix}") from None
                raise DelphiError(f"{where} is not valid JSON: the ledger was edited or damaged {fix}") from None
            if not isinstance(entry, dict):
                raise DelphiError(f"{where} is not a JSON object: the ledger was edited or damaged {fix}")
            entries.append(entry)
        return entries

    def find(self, hash_: str) -> dict[str, Any] | None:
        return next((e for e in self.read() if e.get("hash") == hash_), None)

    def head(self) -> str:
        """The digest to publish (`COUNT:HASH`); refuses an empty or broken ledger."""
        res = self.verify()
        if not res.ok:
            raise DelphiError(f"{self.path} fails verification ({res.problems[0]}); a broken ledger's head is not "
                              "worth publishing")
        if res.head is None:
            raise DelphiError(f"{self.path} has no entries yet: register a forecast (`delphi run`) before "
                              "publishing its head")
        return res.head

    # -- writing ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` (any JSON object) as a new entry; returns the entry with its hash.
        With DELPHI_LEDGER_KEY set, the entry is also signed with that SSH key."""
        check = self.verify()
        if not check.ok:
            raise DelphiError(f"ledger {self.path} fails verification ({check.problems[0]}); refusing to append")
        key = os.environ.get(KEY_ENV)
        if key:  # fail before writing, not after
            _ssh_keygen()
            if not Path(key).expanduser().is_file():
                raise DelphiError(f"{KEY_ENV}={key}: no such private key; point it at your SSH key or unset it")
        entries = self.read()
        entry = dict(record)
        entry["index"] = len(entries)
        entry["prev_hash"] = entries[-1]["hash"] if entries else ""
        entry.setdefault("timestamp", utc_now())
        entry["hash"] = entry_hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"
        if self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            line = "\n" + line  # a last line that lost only its line end: keep it a line of its own
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        head = {"entries": entry["index"] + 1, "last_hash": entry["hash"]}
        atomic_write_text(self.head_path, json.dumps(head) + "\n")
        if key:
            try:
                self.sign(key)
            except DelphiError as e:
                raise DelphiError(f"{e}; entry {entry['index']} was registered unsigned: sign it with "
                                  "`delphi ledger sign DIR --key KEY`") from None
        return entry

    # -- signatures ------------------------------------------------------------------------------
    def read_signatures(self) -> list[dict[str, Any]]:
        if not self.sig_path.exists():
            return []
        out = []
        try:
            text = self.sig_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DelphiError(f"{self.sig_path} is not valid UTF-8: the signatures were edited or damaged") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if not (isinstance(rec, dict) and isinstance(rec.get("index"), int) and isinstance(rec.get("hash"), str)
                    and isinstance(rec.get("principal"), str) and isinstance(rec.get("signature"), str)):
                raise DelphiError(f"{self.sig_path}:{lineno}: not a signature record (index, hash, principal, "
                                  "signature): the signatures were edited or damaged")
            out.append(rec)
        return out

    def sign(self, key: str | Path, *, principal: str | None = None) -> list[int]:
        """Sign every entry that has no signature yet with the SSH private key `key`
        (`ssh-keygen -Y sign`); returns the indices signed."""
        exe = _ssh_keygen()
        key = Path(key).expanduser()
        if not key.is_file():
            raise DelphiError(f"signing key {key} does not exist; give your SSH private key (e.g. ~/.ssh/id_ed25519)")
        res = self.verify()
        if not res.ok:
            raise DelphiError(f"{self.path} fails verification ({res.problems[0]}); refusing to sign it")
        entries = self.read()
        records = self.read_signatures()
        done = set()
        for rec in records:
            i = rec["index"]
            if not 0 <= i < len(entries) or entries[i]["hash"] != rec["hash"]:
                raise DelphiError(f"{self.sig_path}: the signature of entry {i} does not match the ledger (the ledger "
                                  "was rewritten after it was signed); refusing to sign over it")
            done.add(i)
        principal = principal or _principal_of(key)
        new = []
        for e in entries:
            if e["index"] in done:
                continue
            msg = head_digest(e["index"] + 1, e["hash"])
            p = subprocess.run([exe, "-Y", "sign", "-q", "-f", str(key), "-n", SIGNATURE_NAMESPACE],
                               input=msg.encode(), capture_output=True)
            if p.returncode != 0 or b"BEGIN SSH SIGNATURE" not in p.stdout:
                err = p.stderr.decode(errors="replace").strip().splitlines()
                raise DelphiError(f"ssh-keygen could not sign with {key}: {err[-1] if err else 'no reason given'}")
            new.append({"index": e["index"], "hash": e["hash"], "principal": principal,
                        "signature": p.stdout.decode()})
        if new:
            with open(self.sig_path, "a", encoding="utf-8") as f:
                for rec in new:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return [r["index"] for r in new]

    def _signature_problems(self, entries: list[dict[str, Any]], allowed_signers: str | Path) -> tuple[list[str], int]:
        exe = _ssh_keygen()
        allowed = Path(allowed_signers).expanduser()
        if not allowed.is_file():
            raise DelphiError(f"allowed-signers file {allowed} does not exist; it lists `PRINCIPAL KEYTYPE KEY` "
                              "lines (see `delphi ledger sign`, which prints the line for your key)")
        try:
            records = self.read_signatures()
        except DelphiError as e:
            return [str(e)], 0
        if not records:
            return [f"no signatures ({self.sig_path.name} is missing or empty): sign the ledger with "
                    "`delphi ledger sign DIR --key KEY`"], 0
        problems, covered = [], -1
        with tempfile.TemporaryDirectory() as tmp:
            sig_file = Path(tmp) / "entry.sig"
            for rec in records:
                i = rec["index"]
                if not 0 <= i < len(entries):
                    problems.append(f"entry {i} is signed, but the ledger has {len(entries)} entries "
                                    "(entries removed)")
                    continue
                if entries[i].get("hash") != rec["hash"]:
                    now = str(entries[i].get("hash"))[:12]
                    problems.append(f"entry {i} was signed as {rec['hash'][:12]}…, the ledger's entry {i} is "
                                    f"{now}…: the ledger was rewritten after it was signed")
                    continue
                sig_file.write_text(rec["signature"])
                p = subprocess.run([exe, "-Y", "verify", "-f", str(allowed), "-I", rec["principal"],
                                    "-n", SIGNATURE_NAMESPACE, "-s", str(sig_file)],
                                   input=head_digest(i + 1, rec["hash"]).encode(), capture_output=True)
                if p.returncode != 0:
                    problems.append(f"entry {i}: the signature of {rec['principal']!r} does not verify against "
                                    f"{allowed.name} (forged, or signed with a key that file does not allow)")
                    continue
                covered = max(covered, i)
        last = len(entries) - 1
        if not problems and covered < last:
            problems.append(f"entr{'y' if covered + 1 == last else 'ies'} {covered + 1}"
                            f"{'' if covered + 1 == last else f'–{last}'} not signed: sign them with "
                            "`delphi ledger sign DIR --key KEY`")
        return problems, covered + 1

    # -- verification ----------------------------------------------------------------------------
    def verify(self, *, expect_head: str | None = None, allowed_signers: str | Path | None = None,
               runs_dir: str | Path | None = None) -> VerifyResult:
        """Check the hash chain, the `.head` sidecar and each entry's required fields; with
        `expect_head`, that the ledger still extends that published digest; with
        `allowed_signers`, the entries' SSH signatures (the last entry must be signed); with
        `runs_dir`, that every entry a run's run.json names is in the ledger."""
        expected = parse_head(expect_head) if expect_head is not None else None
        problems: list[str] = []
        try:
            entries = self.read()
        except DelphiError as e:
            return VerifyResult(False, 0, (str(e),))
        prev = ""
        for i, e in enumerate(entries):
            where = f"entry {i}"
            missing = [k for k in _CHAIN_KEYS if k not in e]
            if e.get("kind") == "forecast" and not (isinstance(e.get("forecast"), dict) and "run" in e["forecast"]):
                missing.append("forecast")
            if missing:
                problems.append(f"{where} has no {', '.join(repr(k) for k in missing)} (entry edited or damaged)")
            if e.get("index") != i:
                problems.append(f"{where}: index {e.get('index')!r} out of order (entries removed or reordered)")
            if e.get("prev_hash") != prev:
                problems.append(f"{where}: prev_hash does not match the previous entry (entries removed or reordered)")
            try:
                same = e.get("hash") == entry_hash(e)
            except (TypeError, ValueError):  # NaN or other non-JSON values
                same = False
            if not same:
                problems.append(f"{where}: content does not match its hash (entry edited)")
            prev = e.get("hash", "")
        if self.head_path.exists():
            try:
                head = json.loads(self.head_path.read_text())
                if not isinstance(head, dict):
                    raise ValueError
                if head.get("entries") != len(entries) or head.get("last_hash") != (prev or None):
                    problems.append(f"ledger head records {head.get('entries')} entries ending in "
                                    f"{str(head.get('last_hash'))[:12]}…, the file has {len(entries)} "
                                    "(entries removed from the end)")
            except (ValueError, OSError, UnicodeDecodeError):
                problems.append(f"{self.head_path}: unreadable")
        elif entries:
            problems.append(f"{self.head_path} is missing")
        if expected is not None:
            problems += self._anchor_problems(entries, *expected)
        if runs_dir is not None:
            hashes = {e.get("hash") for e in entries if isinstance(e.get("hash"), str)}
            for run, (ref, _) in sorted(referenced_entries(runs_dir).items()):
                if ref not in hashes:
                    problems.append(f"run {run} names ledger entry {ref[:12]}…, which is not in the ledger "
                                    "(entry removed or rewritten)")
        signed = 0
        if allowed_signers is not None:
            sig_problems, signed = self._signature_problems(entries, allowed_signers)
            problems += sig_problems
        head = head_digest(len(entries), prev) if entries and isinstance(prev, str) and prev else None
        return VerifyResult(not problems, len(entries), tuple(problems), head, signed)

    @staticmethod
    def _anchor_problems(entries: list[dict[str, Any]], count: int | None, h: str) -> list[str]:
        if count is None:  # a bare hash: anywhere in the chain
            if any(e.get("hash") == h for e in entries):
                return []
            return [f"the published head {h[:12]}… is not in the ledger: the ledger was rewritten or cut short "
                    "after that head was published"]
        if count > len(entries):
            return [f"the published head {count}:{h[:12]}… is entry {count - 1}, but the ledger has only "
                    f"{len(entries)} entries: entries were removed after that head was published"]
        have = str(entries[count - 1].get("hash"))
        if have != h:
            return [f"entry {count - 1} is {have[:12]}…, not the published head {count}:{h[:12]}…: the ledger was "
                    "rewritten after that head was published"]
        return []
