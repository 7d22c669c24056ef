"""Atomic, verifiable checkpoints.

Layout: ``checkpoints/step-00000040/`` holding ``rank-0.pt`` (one file per rank: under FSDP2
each rank keeps its own shards) and ``manifest.json`` (step, world size, size and SHA-256 of every
file). Every rank writes into ``step-XXXXXXXX.tmp/``; once all files are flushed and fsynced the
manifest is written and the directory renamed into place in one `os.rename`, so a checkpoint
directory without `.tmp` is complete — a crash mid-write leaves only a `.tmp` directory, which
is ignored and removed on the next save.

`latest_valid(dir)` walks checkpoints newest first and returns the first whose manifest matches
its files (size and hash) and whose payload loads; truncated or corrupt ones are skipped with a
warning, so a run resumes from the newest checkpoint that is really intact.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch

from delphi.files import sha256_file

MANIFEST = "manifest.json"
PREFIX = "step-"
_STEP_DIR = re.compile(r"step-\d{8,}")  # only directories named like ours are ever pruned or removed
_STEP_TMP = re.compile(r"step-\d{8,}\.tmp")


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_rank_file(ckpt_root: Path, step: int, rank: int, payload: dict) -> Path:
    """Serialise one rank's payload into the step's temporary directory (flushed and fsynced)."""
    tmp = Path(ckpt_root) / (step_dir_name(step) + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = tmp / f"rank-{rank}.pt"
    with open(path, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    return path


def commit(ckpt_root: Path, step: int, world_size: int, keep: int = 2) -> Path:
    """Write the manifest and rename the temporary directory into place (rank 0, after all ranks
    wrote their files). Keeps the newest `keep` checkpoints."""
    root = Path(ckpt_root)
    tmp = root / (step_dir_name(step) + ".tmp")
    files = {}
    for r in range(world_size):
        p = tmp / f"rank-{r}.pt"
        files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {"step": step, "world_size": world_size, "files": files}
    with open(tmp / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = root / step_dir_name(step)
    if final.exists():  # re-saving a step (e.g. final == periodic): replace atomically enough
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)),
                  key=lambda p: int(p.name[len(PREFIX):]))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def clean_partial(ckpt_root: Path) -> None:
    """Remove leftovers of interrupted saves (our `step-XXXXXXXX.tmp` directories, nothing else)."""
    root = Path(ckpt_root)
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and not p.is_symlink() and _STEP_TMP.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)


def verify(step_dir: Path, world_size: int) -> str | None:
    """None if the checkpoint directory is intact, else why not."""
    mpath = step_dir / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        return "manifest.json missing"
    except (OSError, ValueError) as e:
        return f"manifest.json unreadable ({e})"
    if manifest.get("world_size") != world_size:
        return f"written by {manifest.get('world_size')} processes, this run has {world_size}"
    for name, meta in manifest.get("files", {}).items():
        p = step_dir / name
        if not p.exists():
            return f"{name} missing"
        if p.stat().st_size != meta["bytes"]:
            return f"{name} truncated ({p.stat().st_size} of {meta['bytes']} bytes)"
        if sha256_file(p) != meta["sha256"]:
            return f"{name} corrupt (checksum mismatch)"
    return None


def candidates(ckpt_root: Path) -> list[tuple[int, Path]]:
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp"):
            try:
                out.append((int(p.name[len(PREFIX):]), p))
            except ValueError:
                continue
    return sorted(out, reverse=True)


def latest_valid(ckpt_root: Path, rank: int = 0, world_size: int = 1) -> tuple[int, dict] | None:
    """(step, this rank's payload) of the newest intact checkpoint, or None."""
    for step, path in candidates(ckpt_root):
        why = verify(path, world_size)
        if why is None:
            try:
                payload = torch.load(path / f"rank-{rank}.pt", map_location="cpu", weights_only=False)
                return step, payload
            except Exception as e:  # noqa: BLE001 — any unreadable payload is a corrupt checkpoint
                why = f"unreadable ({type(e).__name__}: {e})"
        warnings.warn(f"skipping checkpoint {path}: {why}", RuntimeWarning, stacklevel=2)
    return None
