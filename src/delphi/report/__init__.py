"""Suite reports: figures, the HTML/Markdown report and Delphi-style model cards.

    from delphi.report import build_report
    paths = build_report("runs/tiny")   # {"html": ..., "markdown": ..., "figure:isoflop": ..., "card:<run>": ...}

Imports are lazy so that `import delphi.report` (and the `delphi` CLI) stays instant; matplotlib
and pandas load only when a report is built.
"""

from __future__ import annotations

from pathlib import Path


def build_report(suite_dir: str | Path, out_dir: str | Path | None = None, *, force: bool = False) -> dict[str, Path]:
    """Write report.html, report.md and figures/ for a suite directory (see delphi.report.report)."""
    from delphi.report.report import build_report as _build

    return _build(suite_dir, out_dir, force=force)


def model_card(spec, summary: dict | None = None, *, suite: str | None = None, role: str | None = None):
    """The Delphi-style model card (a `ModelCard`) of one run; see delphi.report.model_card."""
    from delphi.report.model_card import model_card as _card

    return _card(spec, summary, suite=suite, role=role)


__all__ = ["build_report", "model_card"]
