"""What the report draws of the fit, read from fit.json (`delphi.fit.record.FitRecord`).

fit.json carries everything the figures need: each IsoFLOP bucket with its runs, parabola and
vertex, the allocation laws, and the loss law with the bootstrap draws its interval is read from,
so the band drawn is the registered forecast's own prediction interval. The report reads it and
fits nothing.

Two cases are fitted here, each with a note in the report:

- a fit.json written before it carried the law's draws (no `schema_version`, docs/artefacts.md):
  the band is recomputed from the law's points with its recorded settings, and a missing
  parabola from runs.csv;
- no fit.json yet (or one that is not a fit record): the IsoFLOP fit and a loss law through its
  optima are computed from runs.csv as a preview, which is not a registered forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from delphi import fmt
from delphi.errors import DelphiError
from delphi.fit.flags import flag_text
from delphi.fit.isoflop import IsoFlopFit
from delphi.fit.loss_law import LossLaw
from delphi.fit.plots import Band, law_band
from delphi.fit.record import FitRecord

PREVIEW_BOOTSTRAP = 1000  # resamples of a preview law's band (fit.json's law brings its own)


@dataclass
class Bucket:
    flops: float
    n_runs: int | None = None
    optimal_tokens: float | None = None
    optimal_params: float | None = None
    optimal_loss: float | None = None
    flags: list[str] = field(default_factory=list)
    # loss = a·x² + b·x + c with x = log10(tokens); None when no parabola is known
    coeffs: tuple[float, float, float] | None = None
    skipped: str | None = None  # why no optimum (too few runs, a < 0, ...)


@dataclass
class PowerLaw:
    """y = A · C^alpha."""

    A: float
    alpha: float

    def __call__(self, C):
        return self.A * np.asarray(C, dtype=float) ** self.alpha

    def text(self, y: str) -> str:
        return f"{y} = {fmt.sci(self.A)} · C^{self.alpha:.3f}"


@dataclass
class LossLawView:
    """The fitted loss law as drawn (`delphi.fit.loss_law.LossLaw`), with an optional bootstrap
    band lo(C), hi(C)."""

    law: LossLaw
    band: Band | None = None
    band_level: str = "95%"
    extra: dict = field(default_factory=dict)  # the law's `LossLaw.to_dict()` (n_points, rmse, seed, ...)

    @property
    def ceiling(self) -> float | None:
        return self.law.ceiling

    def __call__(self, C):
        return self.law.predict(C)

    def text(self, digits: int = 4) -> str:
        law = self.law
        if law.ceiling is not None:
            return f"1/L*(C) = 1/{law.ceiling:.{digits}f} + C^{law.alpha:.{digits}f} / {fmt.sci(law.A)}"
        return f"L*(C) = {law.E:.{digits}f} + {fmt.sci(law.A)} · C^(−{law.alpha:.{digits}f})"


@dataclass
class FitView:
    metric: str = "loss"
    buckets: list[Bucket] = field(default_factory=list)
    tokens_law: PowerLaw | None = None
    params_law: PowerLaw | None = None
    loss_law: LossLawView | None = None
    source: str = ""  # where the numbers came from, for the report's caption
    notes: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> list[Bucket]:
        return [b for b in self.buckets if b.optimal_loss is not None and b.optimal_tokens is not None]


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _bucket(b) -> Bucket:
    """A `delphi.fit.isoflop.BucketFit` as the report draws it."""
    coeffs = b.coeffs if b.coeffs is not None and all(math.isfinite(v) for v in b.coeffs) else None
    return Bucket(flops=b.flops, n_runs=b.n_runs, optimal_tokens=_num(b.optimal_tokens),
                  optimal_params=_num(b.optimal_params), optimal_loss=_num(b.optimal_loss),
                  flags=[flag_text(f) for f in b.flags], coeffs=coeffs,
                  skipped=b.skipped or (None if math.isfinite(b.optimal_loss) else "no optimum"))


def _from_isoflop(iso: IsoFlopFit, view: FitView) -> None:
    view.buckets = sorted((_bucket(b) for b in iso.buckets), key=lambda b: b.flops)
    view.tokens_law = None if iso.tokens_law is None else PowerLaw(iso.tokens_law.A, iso.tokens_law.alpha)
    view.params_law = None if iso.params_law is None else PowerLaw(iso.params_law.A, iso.params_law.alpha)


def _law_view(law: LossLaw, band_from: LossLaw | None = None) -> LossLawView:
    """The law as drawn; its band from `band_from`'s draws (default: the law's own)."""
    src = law if band_from is None else band_from
    extra = {**law.to_dict(), "n_bootstrap": src.to_dict()["n_bootstrap"]}
    return LossLawView(law=law, extra=extra, band=law_band(src), band_level=f"{src.confidence:.0%}")


def _no_band_note(law: LossLaw) -> str:
    return "no bootstrap band: " + (law.note or "the loss law was fitted without bootstrap resamples")


def _usable(table: Any, metric: str) -> bool:
    return table is not None and not table.empty and metric in table


def _preview(view: FitView, ok_table: Any, why: str) -> FitView:
    """The IsoFLOP fit and a loss law on its optima, computed from the runs table for this report."""
    from delphi.fit.isoflop import fit_isoflop
    from delphi.fit.loss_law import fit_loss_law

    if not _usable(ok_table, view.metric):
        return view
    try:
        iso = fit_isoflop(ok_table, metric=view.metric)
    except DelphiError as e:
        view.notes.append(f"no IsoFLOP fit: {why} and runs.csv could not be fitted here ({e})")
        return view
    _from_isoflop(iso, view)
    view.source = "computed from runs.csv for this report"
    opt = iso.optima()
    if len(opt["flops"]) < 3:
        return view
    try:
        law = fit_loss_law(opt["flops"], opt["loss"], bootstrap=PREVIEW_BOOTSTRAP if len(opt["flops"]) >= 4 else 0)
    except DelphiError as e:
        view.notes.append(f"no loss law: {why} and it could not be fitted here ({e})")
        return view
    view.loss_law = _law_view(law)
    view.notes.append(f"the IsoFLOP curves and the loss law were fitted for this report ({why}); they are not a "
                      "registered forecast")
    return view


def _legacy(view: FitView, record: FitRecord, n_boot: int, ok_table: Any) -> None:
    """A version-1 fit.json: recompute what it does not carry (the band, from the law's points
    with its `n_boot` resamples, seed and confidence; a missing parabola, from runs.csv)."""
    from delphi.fit.loss_law import MIN_BOOTSTRAP_POINTS, fit_loss_law

    redone = []
    if any(b.coeffs is None for b in view.fitted) and _usable(ok_table, view.metric):
        from delphi.fit.isoflop import fit_isoflop

        try:
            fresh = fit_isoflop(ok_table, metric=view.metric, compute=record.compute)
        except DelphiError as e:
            view.notes.append(f"IsoFLOP parabolas could not be recomputed from runs.csv ({e})")
        else:
            for b in view.buckets:
                match = min(fresh.buckets, key=lambda f: abs(math.log(f.flops / b.flops)), default=None)
                if b.coeffs is None and match is not None and abs(math.log(match.flops / b.flops)) < 0.05:
                    b.coeffs = _bucket(match).coeffs
            redone.append("the parabolas")
    law = record.loss_law
    if n_boot < 1:
        view.notes.append("no bootstrap band: the loss law was fitted without bootstrap resamples")
    elif len(law.flops) < MIN_BOOTSTRAP_POINTS:
        view.notes.append(f"no bootstrap band: the loss law has {len(law.flops)} points and a bootstrap needs at "
                          f"least {MIN_BOOTSTRAP_POINTS}")
    else:
        try:
            refit = fit_loss_law(law.flops, law.values, bootstrap=n_boot, seed=law.seed, confidence=law.confidence,
                                 asymptote=law.asymptote, ceiling=law.ceiling)
        except DelphiError as e:
            view.notes.append(f"the loss law's bootstrap band could not be recomputed ({e})")
        else:
            view.loss_law = _law_view(law, band_from=refit)
            redone.append("the loss law's bootstrap band")
    if redone:
        view.notes.append(f"fit.json was written by an earlier version of delphi (no schema_version): "
                          f"{' and '.join(redone)} {'were' if len(redone) > 1 else 'was'} recomputed for this "
                          "report")


def build_fit_view(fit: dict | None, table: Any, *, ok_table: Any = None) -> FitView:
    """Gather the fit for drawing from fit.json's record `fit` (None: no fit.json). `ok_table` is
    the runs table restricted to completed grid runs (for a preview without fit.json)."""
    view = FitView()
    if fit is None:
        return _preview(view, ok_table, "there is no fit.json yet")
    try:
        record = FitRecord.from_dict(fit)
    except DelphiError as e:
        view.notes.append(f"{e}; the fit it holds is not drawn")
        return _preview(view, ok_table, "fit.json is not readable")
    view.metric = record.metric
    _from_isoflop(record.isoflop, view)
    view.source = "fit.json"
    view.loss_law = _law_view(record.loss_law)
    if record.legacy:
        # the resamples asked for (the law keeps those that stayed positive, and below a ceiling)
        n_boot = record.settings.get("bootstrap", fit["loss_law"].get("n_bootstrap"))
        _legacy(view, record, int(n_boot or 0), ok_table)
    elif view.loss_law.band is None:
        view.notes.append(_no_band_note(record.loss_law))
    return view


__all__ = ["Bucket", "FitView", "LossLawView", "PowerLaw", "build_fit_view"]
