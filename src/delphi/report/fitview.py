"""What the report draws of the fit, gathered from fit.json and, where it falls short, `delphi.fit`.

`fit.json` holds the IsoFLOP buckets (optima, flags), the allocation laws and the loss law's
coefficients. Drawing also needs each bucket's parabola and the loss law's bootstrap band at every
C on the plot, which a JSON summary may not carry; those are recomputed here with the fitting
engineer's own functions (`delphi.fit.isoflop.fit_isoflop`, `delphi.fit.loss_law.fit_loss_law`) on
the same runs table, so the report never re-implements a fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from delphi.report import fmt


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
    """L*(C) = E + A · C^(−alpha), with an optional bootstrap band lo(C), hi(C)."""

    E: float
    A: float
    alpha: float
    band: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    band_level: str = "95%"
    extra: dict = field(default_factory=dict)
    ceiling: float | None = None  # the ceiling form 1/L = 1/H + C^alpha/A (`delphi.fit.loss_law`)

    def __call__(self, C):
        C = np.asarray(C, dtype=float)
        if self.ceiling is not None:
            return 1.0 / (1.0 / self.ceiling + C ** self.alpha / self.A)
        return self.E + self.A * C ** (-self.alpha)

    def text(self) -> str:
        if self.ceiling is not None:
            return f"1/L*(C) = 1/{self.ceiling:.4f} + C^{self.alpha:.4f} / {fmt.sci(self.A)}"
        return f"L*(C) = {self.E:.4f} + {fmt.sci(self.A)} · C^(−{self.alpha:.4f})"


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


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First present key/attribute among `names` (dicts and dataclasses alike)."""
    for n in names:
        if isinstance(obj, dict):
            if n in obj and obj[n] is not None:
                return obj[n]
        elif getattr(obj, n, None) is not None:
            return getattr(obj, n)
    return default


def _coeffs(b: Any) -> tuple[float, float, float] | None:
    c = _get(b, "coeffs", "coefficients", "parabola", "coef")
    if isinstance(c, dict):
        c = [c.get("a"), c.get("b"), c.get("c")]
    if c is None and all(_get(b, k) is not None for k in ("a", "b", "c")):
        c = [_get(b, "a"), _get(b, "b"), _get(b, "c")]
    if c is None:
        return None
    try:
        a, bb, cc = (float(v) for v in c)
    except (TypeError, ValueError):
        return None
    return (a, bb, cc) if all(math.isfinite(v) for v in (a, bb, cc)) else None


def _flag_text(code: str) -> str:
    """The fitting area's explanation of a flag code, or the code made readable."""
    from delphi.fit.flags import flag_text

    return flag_text(code)


def _bucket(b: Any) -> Bucket | None:
    flops = fmt.num(_get(b, "flops", "budget", "compute"))
    if flops is None:
        return None
    flags = _get(b, "flags", default=[]) or []
    if isinstance(flags, str):
        flags = [flags]
    flags = [_flag_text(str(f)) for f in flags]
    return Bucket(
        flops=flops, n_runs=_get(b, "n_runs", "n"),
        optimal_tokens=fmt.num(_get(b, "optimal_tokens", "tokens", "D")),
        optimal_params=fmt.num(_get(b, "optimal_params", "params", "N")),
        optimal_loss=fmt.num(_get(b, "optimal_loss", "loss", "L")),
        flags=flags, coeffs=_coeffs(b),
        skipped=_get(b, "skipped", "skip_reason", "reason"),
    )


def _law(d: Any) -> PowerLaw | None:
    if d is None:
        return None
    A, alpha = fmt.num(_get(d, "A", "a", "coef")), fmt.num(_get(d, "alpha", "exponent"))
    return PowerLaw(A, alpha) if A is not None and alpha is not None else None


def _from_isoflop(obj: Any, view: FitView) -> None:
    # fit.json lists usable buckets under "buckets" and the ones without an optimum under "skipped".
    buckets = list(_get(obj, "buckets", default=[]) or []) + list(_get(obj, "skipped", default=[]) or [])
    view.buckets = sorted((bk for bk in (_bucket(b) for b in buckets) if bk is not None), key=lambda b: b.flops)
    for bk in view.buckets:
        if bk.optimal_loss is None and not bk.skipped:
            bk.skipped = "no optimum"
    alloc = _get(obj, "allocation", default={}) or {}
    view.tokens_law = _law(_get(alloc, "tokens", "D")) or _law(_get(obj, "tokens_law", "data_law"))
    view.params_law = _law(_get(alloc, "params", "N")) or _law(_get(obj, "params_law"))


def _loss_law(d: Any) -> LossLawView | None:
    if d is None:
        return None
    E, A, alpha = (fmt.num(_get(d, k)) for k in ("E", "A", "alpha"))
    if A is None or alpha is None:
        return None
    return LossLawView(E=E or 0.0, A=A, alpha=alpha, ceiling=fmt.num(_get(d, "ceiling")))


def _try_isoflop_refit(table: Any, metric: str, view: FitView) -> None:
    """Parabola coefficients from `delphi.fit.isoflop` when fit.json does not carry them."""
    try:
        from delphi.fit.isoflop import fit_isoflop
    except ImportError:
        view.notes.append("IsoFLOP parabolas are not drawn: delphi.fit.isoflop is not available")
        return
    try:
        refit = fit_isoflop(table, metric=metric)
    except Exception as e:  # noqa: BLE001 — a refit failure only costs the curves, never the report
        view.notes.append(f"IsoFLOP parabolas could not be recomputed from runs.csv ({e})")
        return
    fresh = FitView()
    _from_isoflop(refit.to_dict() if hasattr(refit, "to_dict") else refit, fresh)
    # Attribute-level coefficients may exist even when to_dict() leaves them out.
    for fb, raw in zip(fresh.buckets, _get(refit, "buckets", default=[]) or []):
        fb.coeffs = fb.coeffs or _coeffs(raw)
    if not view.buckets:
        view.buckets, view.tokens_law, view.params_law = fresh.buckets, fresh.tokens_law, fresh.params_law
        view.source = view.source or "refitted from runs.csv with delphi.fit"
        return
    for b in view.buckets:
        match = min(fresh.buckets, key=lambda f: abs(math.log(f.flops / b.flops)), default=None)
        if match is not None and abs(math.log(match.flops / b.flops)) < 0.05:
            b.coeffs = b.coeffs or match.coeffs


def _try_band(view: FitView, ll_dict: dict | None) -> None:
    """The loss law's bootstrap band over C, refitted on the fit's bucket optima with delphi.fit."""
    if view.loss_law is None:
        return
    d = ll_dict or {}
    # The law's own input points when fit.json records them (flagged buckets may have been left
    # out of the fit), else the bucket optima.
    pts = [(fmt.num(p.get("flops")), fmt.num(p.get("loss"))) for p in d.get("points") or [] if isinstance(p, dict)]
    pts = [p for p in pts if p[0] and p[1] is not None] or [(b.flops, b.optimal_loss) for b in view.fitted]
    if len(pts) < 4:
        view.notes.append(f"no bootstrap band: the loss law has {len(pts)} points and a bootstrap needs at least 4")
        return
    try:
        from delphi.fit.loss_law import fit_loss_law
    except ImportError:
        view.notes.append("the loss law's bootstrap band is not drawn: delphi.fit.loss_law is not available")
        return
    kwargs = {}
    n_boot = fmt.num(_get(d, "n_bootstrap", "bootstrap", "bootstrap_samples"))
    seed = fmt.num(_get(d, "seed", "bootstrap_seed"))
    conf = fmt.num(_get(d, "confidence"))
    if n_boot is not None:
        if n_boot < 1:
            view.notes.append("no bootstrap band: the loss law was fitted without bootstrap resamples")
            return
        kwargs["bootstrap"] = int(n_boot)
    if seed is not None:
        kwargs["seed"] = int(seed)
    if conf is not None:
        kwargs["confidence"] = conf
        view.loss_law.band_level = f"{conf:.0%}"
    if view.loss_law.ceiling is not None:
        kwargs["ceiling"] = view.loss_law.ceiling
    flops = np.array([p[0] for p in pts])
    loss = np.array([p[1] for p in pts])
    try:
        law = fit_loss_law(flops, loss, **kwargs)
    except Exception as e:  # noqa: BLE001
        view.notes.append(f"the loss law's bootstrap band could not be recomputed ({e})")
        return

    view.loss_law.band = _band_of(law)


def _band_of(law) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def band(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        C = np.asarray(C, dtype=float)
        lo, hi = law.interval(C)
        return (np.broadcast_to(np.asarray(lo, dtype=float), C.shape),
                np.broadcast_to(np.asarray(hi, dtype=float), C.shape))

    return band


def build_fit_view(fit: dict | None, table: Any, *, ok_table: Any = None) -> FitView:
    """Gather the fit for drawing. `ok_table` is the runs table restricted to completed grid runs."""
    view = FitView()
    metric = str((fit or {}).get("metric") or "loss")
    view.metric = metric
    ll = None
    if fit:
        iso = fit.get("isoflop")
        if isinstance(iso, dict):
            _from_isoflop(iso, view)
            view.source = "fit.json"
        ll = fit.get("loss_law") if isinstance(fit.get("loss_law"), dict) else None
        view.loss_law = _loss_law(ll)
        if view.loss_law is not None and ll is not None:
            view.loss_law.extra = ll
    usable = ok_table is not None and not ok_table.empty and metric in ok_table
    if (not view.buckets or any(b.coeffs is None for b in view.fitted)) and usable:
        _try_isoflop_refit(ok_table, metric, view)
    if view.loss_law is None and len(view.fitted) >= 3:
        # No fit.json (or no loss law in it): fit the law on the optima so the plot still has it.
        try:
            from delphi.fit.loss_law import fit_loss_law

            law = fit_loss_law(np.array([b.flops for b in view.fitted]),
                               np.array([b.optimal_loss for b in view.fitted]),
                               bootstrap=1000 if len(view.fitted) >= 4 else 0)
            view.loss_law = _loss_law(law.to_dict())
            if getattr(law, "bootstrap_params", None) is not None:
                view.loss_law.band = _band_of(law)
            view.notes.append("the loss law was fitted for this report (fit.json has none); it is not a "
                              "registered forecast")
        except Exception as e:  # noqa: BLE001
            view.notes.append(f"no loss law: fit.json has none and it could not be fitted here ({e})")
        return view
    _try_band(view, ll)
    return view


__all__ = ["Bucket", "FitView", "LossLawView", "PowerLaw", "build_fit_view"]
