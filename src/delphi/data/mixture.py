"""Mixtures: named domains, each with a weight, train sources and validation sources.

A mixture is a TOML or JSON file::

    # my-mixture.toml
    [domains.web]
    weight = 0.7
    train = ["web/train/"]            # files or directories, relative to this file
    validation = ["web/val.jsonl.zst"]

    [domains.code]
    weight = 0.3
    train = ["/data/code-train.parquet"]
    validation = ["/data/code-val.parquet"]
    text_field = "content"            # JSON key / Parquet column holding the text (default "text")

Sources are local paths (``.jsonl``, ``.jsonl.gz``, ``.jsonl.xz``, ``.jsonl.zst``, ``.txt``,
``.parquet``, or directories searched recursively for those), or ``hf:<dataset>[:<split>]`` for a
Hugging Face dataset when online (never used in tests). Weights are normalised to sum to 1.

Built-in names: ``"embedded"`` (the corpus shipped in the package, see
``embedded/mixture.toml``) and ``"shared-corpus"`` (the larger three-domain corpus the embedded
one was cut from, found through ``$DELPHI_CORPUS_DIR`` or a ``shared/data/corpus`` directory
beside the repository; weights in ``embedded/shared-corpus.toml``).
"""

from __future__ import annotations

import json
import math
import tomllib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.validate import Problems, key_name, show

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_MIXTURE = EMBEDDED_DIR / "mixture.toml"
SHARED_MIXTURE = EMBEDDED_DIR / "shared-corpus.toml"  # file names relative to the corpus directory
_DOMAIN_KEYS = {"weight", "train", "validation", "text_field"}


@dataclass(frozen=True)
class Domain:
    name: str
    weight: float  # normalised: the domain weights of a mixture sum to 1
    train: tuple[str, ...]  # absolute paths or "hf:..." names
    validation: tuple[str, ...]
    text_field: str = "text"


@dataclass(frozen=True)
class Mixture:
    name: str
    domains: tuple[Domain, ...]
    source: str | None = None  # the file it was read from

    @property
    def weights(self) -> dict[str, float]:
        return {d.name: d.weight for d in self.domains}

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(name)


def _load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise DelphiError(f"mixture file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DelphiError(f"mixture file {path}: cannot read it ({e.strerror or e})") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DelphiError(f"mixture file {path}: not valid JSON at line {e.lineno} ({e.msg})") from None
        except RecursionError:
            raise DelphiError(f"mixture file {path}: not valid JSON (nested too deeply)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DelphiError(f"mixture file {path}: not valid TOML ({e})") from None
    except RecursionError:
        raise DelphiError(f"mixture file {path}: not valid TOML (nested too deeply)") from None


def mixture_from_dict(d: dict[str, Any], *, base_dir: Path, name: str, source: str | None = None,
                      check_sources: bool = True) -> Mixture:
    """Validate a parsed mixture definition; relative paths are resolved against ``base_dir``.

    Every problem is reported at once, each under its key path (``[domains.web] weight``); with
    ``check_sources``, local sources must exist (files or directories)."""
    where = source or name
    problems = Problems(f"mixture {where}")
    domains = d.get("domains") if isinstance(d, dict) else None
    if not isinstance(domains, dict) or not domains:
        raise DelphiError(f"mixture {where}: needs a 'domains' table with at least one domain, e.g. "
                          "[domains.web] with weight, train and validation")
    if isinstance(d, dict):
        problems.unknown_keys("", [k for k in d if k != "domains"], ["domains"], what="top-level key")
    parsed = []
    for dname, dd in domains.items():
        key = f"[domains.{key_name(dname)}]"
        if not dname.strip() or "/" in dname:
            problems.add(key, "has a bad domain name: use a non-empty name without '/' (it names the metric "
                              "columns loss/<domain> and bpb/<domain>)")
        if not isinstance(dd, dict):
            problems.add("", f"domain {dname!r} must be a table with weight, train, validation")
            continue
        unknown = sorted(set(dd) - _DOMAIN_KEYS)
        if unknown:
            problems.add(key, f"domain {dname!r} has unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(_DOMAIN_KEYS))}")
        w = dd.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w > 0 and math.isfinite(w)):
            problems.add(key, f"domain {dname!r} needs a positive number 'weight', got {show(w)}")
            w = None
        splits = {}
        for split in ("train", "validation"):
            srcs = dd.get(split)
            if isinstance(srcs, str):
                srcs = [srcs]
            if not isinstance(srcs, list) or not srcs or not all(isinstance(s, str) and s.strip() for s in srcs):
                problems.add(key, f"domain {dname!r} needs '{split}' as a list of paths, got {show(srcs)}")
                continue
            resolved = []
            for s in srcs:
                if s.startswith("hf:"):
                    resolved.append(s)
                    continue
                try:
                    p = (base_dir / os.path.expanduser(s)).resolve()
                    exists = p.exists()
                except (OSError, RuntimeError, ValueError) as e:
                    problems.add(f"{key} {split}", f"{show(s)} is not a usable path ({e})")
                    continue
                if check_sources and not exists:
                    problems.add(f"{key} {split}:", f"data source {p} does not exist (paths are relative to the "
                                                   "mixture file)")
                resolved.append(str(p))
            splits[split] = tuple(resolved)
        tf = dd.get("text_field", "text")
        if not isinstance(tf, str) or not tf:
            problems.add(key, f"domain {dname!r} text_field must be a non-empty string, got {show(tf)}")
        if w is not None and len(splits) == 2:
            parsed.append((str(dname), float(w), splits["train"], splits["validation"], tf))
    problems.raise_if_any()
    total = sum(p[1] for p in parsed)
    if not math.isfinite(total):
        raise DelphiError(f"mixture {where}: the domain weights are too large to add up; use weights like 0.5")
    doms = tuple(Domain(n, w / total, tr, va, tf) for n, w, tr, va, tf in parsed)
    return Mixture(name=name, domains=doms, source=source)


def find_shared_corpus() -> Path | None:
    """The shared three-domain corpus directory, if this machine has one."""
    env = os.environ.get("DELPHI_CORPUS_DIR")
    if env:  # an explicit choice: never silently fall back to another directory
        return Path(env).resolve() if (Path(env) / "prose-train.jsonl.xz").exists() else None
    candidates = []
    for base in (Path.cwd(), Path(__file__).resolve()):
        for parent in [base, *base.parents]:
            candidates.append(parent / "shared" / "data" / "corpus")
            candidates.append(parent.parent / "shared" / "data" / "corpus")
    for c in candidates:
        if (c / "prose-train.jsonl.xz").exists():
            return c.resolve()
    return None


def resolve_mixture(name_or_path: str | os.PathLike) -> Mixture:
    """A built-in mixture name (``"embedded"``, ``"shared-corpus"``) or a mixture file path."""
    key = str(name_or_path)
    if key == "embedded":
        return mixture_from_dict(_load_file(EMBEDDED_MIXTURE), base_dir=EMBEDDED_DIR, name="embedded",
                                 source=str(EMBEDDED_MIXTURE))
    if key == "shared-corpus":
        corpus = find_shared_corpus()
        if corpus is None:
            raise DelphiError("mixture 'shared-corpus': no shared/data/corpus directory found; "
                              "set DELPHI_CORPUS_DIR to the directory holding prose-train.jsonl.xz")
        d = _load_file(SHARED_MIXTURE)
        return mixture_from_dict(d, base_dir=corpus, name="shared-corpus", source=str(corpus))
    path = Path(key).expanduser()
    if not path.is_file():
        raise DelphiError(f"unknown mixture {key!r}: not 'embedded' or 'shared-corpus', and no mixture file "
                          f"(.toml or .json) at that path")
    name = path.resolve().parent.name if path.stem == "mixture" else path.stem  # dir/mixture.toml → "dir"
    return mixture_from_dict(_load_file(path), base_dir=path.resolve().parent, name=name, source=str(path.resolve()))
