"""One validation layer for every spec Delphi reads (suite TOML, RunSpec JSON, mixture TOML,
recipe TOML).

A reader walks its document with a `Problems` collector: each field is checked against a rule
(type and range), every problem is recorded with its key path (`[executor] workers`,
`optimizer.beta2`, `[domains.web] weight`), and `Problems.raise_if_any()` reports them all at
once as one `DelphiError` line, before any work starts:

    suite.toml: [executor] workers must be an integer ≥ 1, got "two"; [train] checkpoint_every_minutes
    must be a non-negative number, got "soon"

Rules have a strict form (readers of files a person wrote) and a lenient one (dataclasses built
by code): strict adds sanity bounds such as a learning rate ≤ 10, which code may exceed on
purpose (a divergence test), but a spec file never should.
"""

from __future__ import annotations

import abc
import json
import math
import numbers
from typing import Any, Iterable

from delphi.errors import DelphiError

MAX_SEED = 2**63 - 1
_MAX_SHOWN = 20  # problems listed in one message; the rest are counted


def show(value: Any, limit: int = 60) -> str:
    """A value as the person wrote it (TOML/JSON spelling), shortened to `limit` characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float):
        text = ("nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf
                else repr(value))
    elif isinstance(value, (list, tuple, dict)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
        if isinstance(value, dict):
            text = "a table " + text
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_name(name: Any) -> str:
    """A key as it may appear in a key path: bare when it is a plain TOML key, else quoted."""
    text = str(name)
    if text and all(c.isascii() and (c.isalnum() or c in "_-") for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


class Problems:
    """Problems found in one document, each with its key path; raised together."""

    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key} {message}".strip() if key else message)

    def add_error(self, key: str, error: DelphiError) -> None:
        """A DelphiError raised by a nested reader, recorded under `key`."""
        self.add(f"{key}:" if key else "", str(error))

    def check(self, key: str, value: Any, rule: "Rule", *, strict: bool = True) -> bool:
        msg = rule.problem(value, strict)
        if msg is not None:
            self.add(key, msg)
        return msg is None

    def unknown_keys(self, key: str, given: Iterable[str], allowed: Iterable[str], what: str = "key") -> bool:
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            self.add(key, f"unknown {what}{plural} {', '.join(key_name(u) for u in unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
        return not unknown

    def message(self) -> str:
        shown = self.items[:_MAX_SHOWN]
        more = len(self.items) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more problem(s)" if more else "")
        return _one_line(f"{self.where}: {text}" if self.where else text)

    def raise_if_any(self) -> None:
        if self.items:
            raise DelphiError(self.message())


# ---- rules -------------------------------------------------------------------------------------

class Rule(abc.ABC):
    """One field's check: `problem` returns what is wrong with `value` (None when it is fine)."""

    @abc.abstractmethod
    def problem(self, value: Any, strict: bool = True) -> str | None:
        """strict: also apply the sanity bounds meant for files a person wrote."""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class Int(Rule):
    """An integer in [lo, hi]; lenient mode also takes integral floats (e.g. 64.0)."""

    def __init__(self, lo: int | None = 0, hi: int | None = None, note: str = ""):
        self.lo, self.hi, self.note = lo, hi, note

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            text = f"an integer in [{self.lo}, {self.hi}]" if self.hi < 10**6 else f"an integer ≥ {self.lo}"
        elif self.lo is not None:
            text = f"an integer ≥ {self.lo}"
        elif self.hi is not None:
            text = f"an integer ≤ {self.hi}"
        else:
            text = "an integer"
        return text + (f" ({self.note})" if self.note else "")

    def problem(self, value, strict=True):
        ok = _is_int(value) or (not strict and isinstance(value, float) and value.is_integer())
        if ok and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi):
            return None
        if ok and self.hi is not None and value > self.hi and self.hi >= 10**6:
            return f"must be at most {self.hi}, got {show(value)}"
        return f"must be {self.describe()}, got {show(value)}"


class Num(Rule):
    """A finite real number in a range; `sane_hi` is an upper bound checked by readers only."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, sane_hi: float | None = None, allow_inf: bool = False, unit: str = "",
                 note: str = ""):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.sane_hi, self.allow_inf, self.unit, self.note = sane_hi, allow_inf, unit, note

    def describe(self, strict: bool = True) -> str:
        hi, hi_open = self.hi, self.hi_open
        if strict and self.sane_hi is not None and (hi is None or self.sane_hi < hi):
            hi, hi_open = self.sane_hi, False
        unit = f" {self.unit}" if self.unit else ""
        if self.lo is not None and hi is not None:
            if self.lo == 0 and self.lo_open and not hi_open:
                text = f"a positive number{unit} ≤ {hi:g}"
            else:
                text = f"a number{unit} in {'(' if self.lo_open else '['}{self.lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif self.lo == 0:
            text = f"a positive number{unit}" if self.lo_open else f"a non-negative number{unit}"
        elif self.lo is not None:
            text = f"a number{unit} {'>' if self.lo_open else '≥'} {self.lo:g}"
        elif hi is not None:
            text = f"a number{unit} {'<' if hi_open else '≤'} {hi:g}"
        else:
            text = f"a finite number{unit}"
        return text + (f" ({self.note})" if self.note else "")

    def problem(self, value, strict=True):
        if not _is_number(value):
            return f"must be {self.describe(strict)}, got {show(value)}"
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not (self.allow_inf and v > 0)):
            return f"must be {self.describe(strict)}, got {show(v)}"
        lo_bad = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        hi_bad = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        sane_bad = strict and self.sane_hi is not None and v > self.sane_hi
        if lo_bad or hi_bad or sane_bad:
            return f"must be {self.describe(strict)}, got {show(value)}"
        return None


class Str(Rule):
    def __init__(self, choices: Iterable[str] | None = None, *, name_like: bool = False,
                 what: str = "a non-empty string"):
        self.choices = tuple(choices) if choices is not None else None
        self.name_like, self.what = name_like, what

    def problem(self, value, strict=True):
        if self.choices is not None:
            if isinstance(value, str) and value in self.choices:
                return None
            return f"must be one of {', '.join(self.choices)}, got {show(value)}"
        if not isinstance(value, str) or not value.strip():
            return f"must be {self.what}, got {show(value)}"
        if "\0" in value:
            return f"must not contain a NUL character, got {show(value)}"
        if self.name_like and ("/" in value or "\\" in value or value.startswith(".") or value != value.strip()
                               or any(ord(c) < 32 for c in value)):
            return (f"must be a name usable as a directory name (no '/', '\\', control characters, leading '.' "
                    f"or surrounding spaces), got {show(value)}")
        return None


class Bool(Rule):
    def problem(self, value, strict=True):
        return None if isinstance(value, bool) else f"must be true or false, got {show(value)}"


class Optional(Rule):
    """`rule`, or absent (None / JSON null)."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def problem(self, value, strict=True):
        return None if value is None else self.rule.problem(value, strict)


class ListOf(Rule):
    def __init__(self, rule: Rule, *, nonempty: bool = False, unique: bool = False, what: str = "a list",
                 example: str = ""):
        self.rule, self.nonempty, self.unique, self.what, self.example = rule, nonempty, unique, what, example

    def problem(self, value, strict=True):
        eg = f", e.g. {self.example}" if self.example else ""
        if not isinstance(value, (list, tuple)) or (self.nonempty and not value):
            return f"must be {'a non-empty ' + self.what[2:] if self.nonempty else self.what}{eg}, got {show(value)}"
        for v in value:
            msg = self.rule.problem(v, strict)
            if msg is not None:
                return f"entry {show(v)} {msg.split(', got ')[0]}"
        if self.unique:
            seen, dups = set(), []
            for v in value:
                if v in seen and v not in dups:
                    dups.append(v)
                seen.add(v)
            if dups:
                return f"lists {', '.join(show(d) for d in dups)} more than once; give each entry once"
        return None


class StrDict(Rule):
    def problem(self, value, strict=True):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return f"must be a table of strings (name = \"value\"), got {show(value)}"
        return None


def check_fields(problems: Problems, doc: dict[str, Any], rules: dict[str, Rule], *, key: Any,
                 strict: bool = True) -> None:
    """Every present field of `doc` against its rule; `key(name)` is the field's key path."""
    for name, rule in rules.items():
        if name in doc:
            problems.check(key(name), doc[name], rule, strict=strict)


def dataclass_problems(obj: Any, rules: dict[str, Rule], what: str, *, strict: bool = False) -> None:
    """Raise one DelphiError listing every field of a dataclass instance that breaks its rule."""
    problems = Problems(what)
    check_fields(problems, {n: getattr(obj, n) for n in rules}, rules, key=lambda n: n, strict=strict)
    problems.raise_if_any()
