"""Run directories that are safe to point anywhere.

* **One trainer per directory.** `RunDirLock` holds an exclusive `fcntl.flock` on ``.lock``
  inside the run directory for the whole run (the kernel releases it when the process dies, so a
  killed run never leaves a stale lock). A second trainer on the same directory stops at once,
  naming the process that holds it.
* **Only our own directories.** `check_out_dir` refuses a non-empty directory that holds no
  ``run.json`` of ours, so pointing ``--out`` at a directory of the user's never overwrites its
  files.
* **Only our own files are deleted.** `discard_outputs` (``--no-resume``) removes the metrics,
  the summary and the checkpoint directories whose names match the trainer's own pattern, nothing
  else; `clean_temporaries` removes only the temporary files the trainer and the sweep write
  atomically (left behind when a process is killed mid-write).
* **Readable summaries.** `read_summary` treats a truncated or corrupt ``summary.json`` as absent
  (with a warning), so the run resumes from its checkpoints instead of failing.

No torch here: the sweep executor uses these helpers in the coordinating process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import warnings
from pathlib import Path

from delphi.errors import DelphiError
from delphi.files import atomic_write_text

LOCK = ".lock"
RUN_JSON = "run.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
# Temporary files written next to their target and renamed over it (an orphan is a killed write).
TEMPORARIES = ("run.json.tmp", "summary.json.tmp", "metrics.jsonl.tmp", "metrics.tmp", "started.json.tmp")
CHECKPOINT_NAME = re.compile(r"step-\d{8,}(\.tmp)?")  # as delphi.train.checkpoint names them
# The fields every RunSpec has: a run.json holding them was written by Delphi.
_RUN_SPEC_KEYS = {"name", "shape", "optimizer", "batch_size", "train_steps"}


def is_run_spec_file(path: Path) -> bool:
    """True when `path` holds a JSON RunSpec (the mark of a Delphi run directory)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and _RUN_SPEC_KEYS <= set(obj)


def check_out_dir(out: Path, hint: str = "choose a new or empty --out directory") -> None:
    """Refuse a path that is not a directory, or a non-empty directory that is not a run directory."""
    out = Path(out)
    if not out.exists():
        if out.is_symlink():
            raise DelphiError(f"{out} is a broken symbolic link; {hint}")
        return
    if not out.is_dir():
        raise DelphiError(f"{out} exists and is not a directory; {hint}")
    try:
        # the lock and a run.json write cut by a kill are all a run leaves before its run.json
        entries = [p.name for p in out.iterdir() if p.name not in (LOCK, RUN_JSON + ".tmp")]
    except OSError as e:
        raise DelphiError(f"{out}: cannot read the directory ({e.strerror or e}); {hint}") from None
    if not entries or is_run_spec_file(out / RUN_JSON):
        return
    what = "its run.json is not a Delphi run spec" if RUN_JSON in entries else "it has no run.json"
    shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
    raise DelphiError(f"{out} is not empty and is not a Delphi run directory ({what}; it holds {shown}); "
                      f"nothing was written there; {hint}")


def check_same_run(run_dir: Path, spec: dict) -> None:
    """Refuse to resume a directory whose run.json holds another run than `spec` (a RunSpec's
    JSON object); its trackers (`tracking`) do not change the run and are not compared."""
    try:
        old = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except ValueError:
        old = None
    same = lambda d: {k: v for k, v in d.items() if k != "tracking"} if isinstance(d, dict) else d  # noqa: E731
    if same(old) != same(spec):
        raise DelphiError(f"{run_dir} already holds a different run ({RUN_JSON} differs); use another --out "
                          f"directory or pass --no-resume to start over there")


def make_run_dir(out: Path, hint: str = "choose another --out directory") -> None:
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DelphiError(f"cannot create the run directory {out} ({e.strerror or e}); {hint}") from None


class RunDirLock:
    """An exclusive lock on a run directory (``.lock``, `fcntl.flock`), held until `release`.

    The lock file is never deleted: deleting it would let a third process lock a new file while
    the second still holds the old one. It records the holder's pid for the message others see."""

    def __init__(self, run_dir: Path, hint: str = "wait for it or use another --out"):
        import fcntl

        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DelphiError(f"cannot create the lock file {self.path} ({e.strerror or e}); "
                              f"check the directory's permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DelphiError(f"cannot lock {self.path} ({e.strerror or e}); the file system may not "
                                  f"support locks, use a local --out directory") from None
            holder = lock_holder_pid(run_dir)
            raise DelphiError(f"{run_dir} is being trained by another process "
                              f"(pid {holder if holder is not None else 'unknown'}); {hint}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def lock_holder_pid(run_dir: Path) -> int | None:
    try:
        return int((Path(run_dir) / LOCK).read_text().strip())
    except (OSError, ValueError):
        return None


def is_locked(run_dir: Path) -> bool:
    """True when another open file (this process's or another's) holds the run directory's lock."""
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def check_not_locked(run_dir: Path, hint: str = "wait for it or use another --out") -> None:
    if is_locked(run_dir):
        holder = lock_holder_pid(run_dir)
        raise DelphiError(f"{run_dir} is being trained by another process "
                          f"(pid {holder if holder is not None else 'unknown'}); {hint}")


def clean_temporaries(run_dir: Path) -> list[str]:
    """Remove the orphaned temporaries of killed writes (ours only); return their names.
    Call with the directory's lock held: nobody else is writing them then."""
    run_dir = Path(run_dir)
    removed = []
    for name in TEMPORARIES:
        p = run_dir / name
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(name)
    ck = run_dir / CHECKPOINTS
    if ck.is_dir() and not ck.is_symlink():
        for p in ck.iterdir():
            if p.is_dir() and not p.is_symlink() and p.name.endswith(".tmp") and CHECKPOINT_NAME.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(f"{CHECKPOINTS}/{p.name}")
    return removed


def discard_outputs(run_dir: Path) -> None:
    """Start over (``--no-resume``): remove the metrics, the summary and our checkpoint
    directories. Files the run did not write (anything else under ``checkpoints/``) are kept."""
    run_dir = Path(run_dir)
    for name in (METRICS, SUMMARY):
        p = run_dir / name
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)
    ck = run_dir / CHECKPOINTS
    if ck.is_dir() and not ck.is_symlink():
        for p in ck.iterdir():
            if p.is_dir() and not p.is_symlink() and CHECKPOINT_NAME.fullmatch(p.name):
                shutil.rmtree(p)
        with contextlib.suppress(OSError):
            ck.rmdir()  # only when nothing else is left in it


def write_run_spec(run_dir: Path, spec) -> None:
    """run.json: the RunSpec's JSON (`spec.to_json()`), through a temporary file and a rename."""
    atomic_write_text(Path(run_dir) / RUN_JSON, spec.to_json() + "\n")


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, through a temporary file and a rename: strict JSON (a non-finite number is a
    bug upstream, not a value to store), keys sorted. The trainer writes it, and so does a sweep for
    a run whose process died before it could."""
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(Path(run_dir) / SUMMARY, text)


def read_summary(run_dir: Path, *, warn: bool = True) -> dict | None:
    """The run's summary, or None when there is none; a truncated or corrupt ``summary.json`` is
    treated as absent (with a warning): the run is then resumed from its checkpoints."""
    path = Path(run_dir) / SUMMARY
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
    else:
        try:
            obj = json.loads(text)
        except ValueError as e:
            why = f"not valid JSON: {e}"
        else:
            if isinstance(obj, dict) and isinstance(obj.get("status"), str):
                return obj
            why = "not a run summary"
    if warn:
        warnings.warn(f"{path} is unreadable ({why}); ignoring it: the run resumes from its newest "
                      f"intact checkpoint", RuntimeWarning, stacklevel=2)
    return None
