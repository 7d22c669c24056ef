"""Suite reports: figures, the HTML/Markdown report and Delphi-style model cards.

    from delphi.report import build_report
    paths = build_report("runs/tiny")      # {"html": ..., "markdown": ..., "figure:isoflop": ..., "card:<run>": ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: matplotlib and pandas load only when a report is built
    from delphi.report.model_card import ModelCard  # noqa: F401


def build_report(suite_dir, out_dir=None):
    from delphi.report.report import build_report as _build

    return _build(suite_dir, out_dir)


def model_card(spec, summary=None, *, suite=None, role=None):
    from delphi.report.model_card import model_card as _card

    return _card(spec, summary, suite=suite, role=role)


__all__ = ["build_report", "model_card"]
