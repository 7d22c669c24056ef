"""Small file helpers every stage shares: atomic writes, JSON text, a file's SHA-256.

- `atomic_write_text(path, text)` / `atomic_write_json(path, obj)`: write `path.tmp`, then rename
  it over `path`, so a reader (or a crash) never sees half a file.
- `json_text(obj)`: strict JSON (no NaN), indented, with lists of numbers and strings kept on one
  line, so a file holding bootstrap draws stays readable.
- `sha256_file(path)`: hex SHA-256 of a file's bytes, read in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

_SCALARS = (str, int, float, bool, type(None))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the bytes of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (as UTF-8, whatever the locale) to `path` through `path.tmp` and a rename
    (readers see the old or the new file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def json_text(obj: Any, indent: int = 2, default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON text of `obj` (NaN and infinity refused), `indent`-indented, each list of
    scalars on one line; ends with a newline. `default` converts what JSON has no form for (as in
    `json.dumps`), e.g. numpy scalars."""

    def enc(o: Any, level: int) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {enc(v, level + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, (list, tuple)):
            if all(isinstance(v, _SCALARS) for v in o):
                return json.dumps(list(o), allow_nan=False)
            return "[\n" + ",\n".join(inner + enc(v, level + 1) for v in o) + "\n" + pad + "]"
        return json.dumps(o, allow_nan=False, default=default)

    return enc(obj, 0) + "\n"


def atomic_write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """`atomic_write_text(path, json_text(obj, default=default))`."""
    return atomic_write_text(path, json_text(obj, default=default))


def schema_version(d: dict, what: str, newest: int) -> int:
    """The `schema_version` of the artefact dict `d` (1 when it has none: written before
    artefacts carried one); a DelphiError when it is newer than `newest`, the one this code writes."""
    from delphi.errors import DelphiError

    v = d.get("schema_version", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DelphiError(f"{what}: schema_version must be a positive integer, got {v!r}")
    if v > newest:
        raise DelphiError(f"{what} has schema version {v}, newer than this delphi reads ({newest}); upgrade delphi")
    return v


__all__ = ["atomic_write_json", "atomic_write_text", "json_text", "schema_version", "sha256_file"]
