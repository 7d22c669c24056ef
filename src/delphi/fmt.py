"""Number formatting shared by the report, its tables and model cards, and the fit figures (pure Python)."""

from __future__ import annotations

import math
from typing import Any

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def num(x: Any) -> float | None:
    """`x` as a finite float, or None (missing, NaN, text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def dash(x: Any, fmt: str = "{}") -> str:
    """Format `x`, or an en dash when it is missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, str):
        return x or "–"
    try:
        return fmt.format(x)
    except (ValueError, TypeError):
        return str(x)


def integer(x: Any) -> str:
    v = num(x)
    return "–" if v is None else f"{int(round(v)):,}"


def sci(x: Any, digits: int = 3) -> str:
    """3.000e+18 style, compact: 3.00e18."""
    v = num(x)
    if v is None:
        return "–"
    m, e = f"{v:.{digits - 1}e}".split("e")
    return f"{m}e{int(e)}"


def pretty_flops(x: Any) -> str:
    """Delphi's card style: 9 × 10¹⁸ (one or two significant digits)."""
    v = num(x)
    if v is None or v <= 0:
        return "–"
    e = int(math.floor(math.log10(v)))
    m = v / 10**e
    if m >= 9.95:  # rounding pushed the mantissa to 10
        m, e = m / 10, e + 1
    mant = f"{m:.1f}".rstrip("0").rstrip(".")
    return f"{mant} × 10{str(e).translate(_SUPERSCRIPT)}"


def short(x: Any) -> str:
    """Delphi's model-name style: 358M, 9.7B, 18.2B, 160B, 2.3K."""
    v = num(x)
    if v is None:
        return "–"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= div:
            q = v / div
            break
    else:
        return f"{v:.0f}"
    if q >= 100:
        return f"{q:.0f}{unit}"
    return f"{q:.1f}".rstrip("0").rstrip(".") + unit


def budget_tag(x: Any) -> str:
    """9e18, 2e19 (Delphi's run names round the budget to one digit)."""
    return sci(x, digits=1)


def duration(seconds: Any) -> str:
    v = num(seconds)
    if v is None:
        return "–"
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60):02d} s"
    return f"{int(v // 3600)} h {int(v % 3600 // 60):02d} min"


def pct(x: Any, digits: int = 2, signed: bool = True) -> str:
    v = num(x)
    if v is None:
        return "–"
    return f"{v:+.{digits}f}%" if signed else f"{v:.{digits}f}%"


def fixed(x: Any, digits: int = 4) -> str:
    v = num(x)
    return "–" if v is None else f"{v:.{digits}f}"


def general(x: Any, digits: int = 3) -> str:
    v = num(x)
    return "–" if v is None else f"{v:.{digits}g}"
