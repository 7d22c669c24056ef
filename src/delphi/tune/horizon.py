"""`delphi tune horizon`: measure the token-horizon exponent of the projection LR.

Delphi's recipe scales the AdamH LR as (T0/T)^0.3 with the token horizon T; the 0.3 came from a
small grid (Bjorck et al. and Ren et al. report similar values). Here, at several horizons
(default T0/4, T0, 4·T0) at the reference width and batch, the projection LR is swept on a log
grid centred on the recipe's LR there (every other hyperparameter as the recipe gives it); per
horizon the optimal LR is the vertex of a parabola in log LR through the sweep's lowest points;
log η*(T) is then fitted as a line in log T, whose slope is −exponent.

Interval: a parametric bootstrap. Each replicate perturbs every measured loss with Gaussian noise
of the run-to-run size σ (per horizon: the residual spread of a parabola through the sweep's 5
lowest points, never below `loss_noise` × loss, the seed-to-seed noise one assumes — pass a
measured seed spread), re-finds each optimum and refits the power law. The 2.5–97.5 percentiles of the
exponent are reported. An optimum at the edge of its grid is flagged: the grid should be widened.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, atomic_write_text

DELPHI_EXPONENT = 0.3


@dataclass(frozen=True)
class Optimum:
    lr: float
    loss: float
    method: str  # "parabola" (vertex of the fit) or "argmin" (lowest grid point)
    at_edge: bool  # the lowest grid point is the smallest or largest LR swept


def optimum_lr(lrs: Sequence[float], losses: Sequence[float], fit_points: int = 3) -> Optimum:
    """The loss-minimising LR of one sweep: vertex of a parabola in log LR through the
    `fit_points` lowest finite losses (least squares when more than 3); the lowest grid point when
    the parabola opens downwards or its vertex falls outside the points it was fitted to."""
    lr = np.asarray(lrs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if lr.shape != y.shape or lr.ndim != 1:
        raise DelphiError("an LR sweep needs one loss per LR")
    if np.any(lr <= 0):
        raise DelphiError("LRs must be positive")
    order = np.argsort(lr)
    lr, y = lr[order], y[order]
    ok = np.isfinite(y)
    if not ok.any():
        raise DelphiError("every run of the LR sweep diverged or failed; lower the LR grid")
    i_min = int(np.nanargmin(np.where(ok, y, np.nan)))
    at_edge = i_min == 0 or i_min == len(lr) - 1
    fallback = Optimum(float(lr[i_min]), float(y[i_min]), "argmin", bool(at_edge))
    k = max(3, int(fit_points))
    if ok.sum() < 3:
        return fallback
    idx = np.flatnonzero(ok)[np.argsort(y[ok], kind="stable")[:k]]
    x = np.log(lr[idx])
    a, b, c = np.polyfit(x, y[idx], 2)
    if not a > 0:
        return fallback
    xv = -b / (2 * a)
    if not (x.min() <= xv <= x.max()):
        return fallback
    return Optimum(float(math.exp(xv)), float(c - b * b / (4 * a)), "parabola", bool(at_edge))


def _residual_sigma(lrs: np.ndarray, losses: np.ndarray, fit_points: int) -> float:
    """Residual spread of a least-squares parabola through the max(fit_points, 5) lowest points
    (0 with fewer than 4). It counts the parabola's misfit as noise too, which errs towards a
    wider interval: the bootstrap should not be more confident than the sweep's bumpiness allows."""
    ok = np.isfinite(losses)
    k = max(5, int(fit_points))
    idx = np.flatnonzero(ok)[np.argsort(losses[ok], kind="stable")[:k]]
    if len(idx) <= 3:
        return 0.0
    x = np.log(lrs[idx])
    coef = np.polyfit(x, losses[idx], 2)
    r = losses[idx] - np.polyval(coef, x)
    return float(np.sqrt(np.sum(r * r) / (len(idx) - 3)))


@dataclass(frozen=True)
class HorizonFit:
    """η*(T) = lr_at_ref · (T_ref / T)^exponent, fitted on per-horizon optima."""

    tokens: tuple[float, ...]
    lr_opt: tuple[float, ...]
    loss_opt: tuple[float, ...]
    methods: tuple[str, ...]
    at_edge: tuple[bool, ...]
    exponent: float
    interval: tuple[float, float]  # bootstrap 2.5–97.5 percentiles of the exponent
    exponent_se: float | None  # OLS standard error (None with 2 horizons)
    lr_at_ref: float
    ref_tokens: float
    noise: tuple[float, ...]  # σ used per horizon in the bootstrap
    bootstrap: int
    fit_points: int

    def predict(self, tokens):
        return self.lr_at_ref * (self.ref_tokens / np.asarray(tokens, dtype=float)) ** self.exponent

    def contains(self, exponent: float) -> bool:
        return self.interval[0] <= exponent <= self.interval[1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["interval"] = list(self.interval)
        d["contains_delphi_0.3"] = self.contains(DELPHI_EXPONENT)
        return d


def _power_law(tokens: np.ndarray, lr_opt: np.ndarray) -> tuple[float, float, float | None]:
    """Least-squares line log η* = a + b·log T → (exponent = −b, a, standard error of b)."""
    x, y = np.log(tokens), np.log(lr_opt)
    A = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    se = None
    if len(x) > 2:
        r = y - A @ coef
        s2 = float(r @ r) / (len(x) - 2)
        se = float(math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2))))
    return float(-coef[1]), float(coef[0]), se


def fit_horizon_exponent(tokens: Sequence[float], lrs: Sequence[Sequence[float]], losses: Sequence[Sequence[float]],
                         *, ref_tokens: float | None = None, fit_points: int = 3, bootstrap: int = 1000,
                         loss_noise: float = 1e-3, seed: int = 0) -> HorizonFit:
    """Fit the LR-vs-horizon power law on LR sweeps at ≥ 2 horizons (non-finite loss = diverged)."""
    T = np.asarray(tokens, dtype=float)
    if T.ndim != 1 or len(T) < 2 or len(lrs) != len(T) or len(losses) != len(T):
        raise DelphiError("the horizon fit needs LR sweeps at two or more token horizons")
    if len(set(T.tolist())) != len(T) or np.any(T <= 0):
        raise DelphiError("token horizons must be positive and distinct")
    if not (loss_noise >= 0 and bootstrap >= 0):
        raise DelphiError("loss noise and bootstrap count must be non-negative")
    sweeps = [(np.asarray(l, dtype=float), np.asarray(y, dtype=float)) for l, y in zip(lrs, losses)]
    optima = [optimum_lr(l, y, fit_points) for l, y in sweeps]
    lr_opt = np.array([o.lr for o in optima])
    exponent, a, se = _power_law(T, lr_opt)
    ref = float(ref_tokens if ref_tokens is not None else math.exp(np.mean(np.log(T))))
    lr_at_ref = float(math.exp(a) * ref ** (-exponent))

    sigmas = []
    for (l, y), o in zip(sweeps, optima):
        sigmas.append(max(_residual_sigma(l, y, fit_points), loss_noise * o.loss))
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(int(bootstrap)):
        opt_b = []
        for (l, y), s in zip(sweeps, sigmas):
            yb = y + rng.normal(0.0, s, size=y.shape) if s > 0 else y
            opt_b.append(optimum_lr(l, yb, fit_points).lr)
        reps.append(_power_law(T, np.array(opt_b))[0])
    if reps:
        lo, hi = np.percentile(reps, [2.5, 97.5])
        interval = (float(lo), float(hi))
    else:
        interval = (exponent, exponent)
    return HorizonFit(
        tokens=tuple(float(t) for t in T), lr_opt=tuple(float(v) for v in lr_opt),
        loss_opt=tuple(o.loss for o in optima), methods=tuple(o.method for o in optima),
        at_edge=tuple(o.at_edge for o in optima), exponent=exponent, interval=interval, exponent_se=se,
        lr_at_ref=lr_at_ref, ref_tokens=ref, noise=tuple(float(s) for s in sigmas), bootstrap=int(bootstrap),
        fit_points=int(fit_points),
    )


# ---- the measurement -----------------------------------------------------------------------------

def run_horizon(recipe, recipe_source: dict[str, Any], *, hidden: int, batch: int, tokens: float, out_dir,
                settings, multipliers: Sequence[float] = (0.25, 1.0, 4.0), points: int = 5, step: float = 2.0,
                extend: int = 2, fit_points: int = 3, bootstrap: int = 1000, loss_noise: float = 1e-3,
                seed: int = 0, plot: bool = True) -> dict[str, Any]:
    """Sweep the projection LR at `tokens × multipliers` (extending a sweep past its edge up to
    `extend` times while its lowest loss sits there), fit the exponent, write horizon.json /
    horizon.csv / horizon.png in `out_dir`; returns the horizon.json record."""
    from delphi.tune.common import SWEEP_PREFIX, adaptive_sweeps, check_point, completed_loss, lr_grid, prepare, say

    if len(multipliers) < 2 or len(set(multipliers)) != len(multipliers) or any(not m > 0 for m in multipliers):
        raise DelphiError("--horizons needs two or more distinct positive multipliers of --tokens, e.g. 0.25,1,4")
    out = Path(out_dir)
    horizons = [tokens * m for m in multipliers]
    recipe_lrs = []
    for T in horizons:
        check_point(recipe, hidden, batch, T)
        recipe_lrs.append(recipe.hyperparams(batch, T, hidden).lr)
    lr_grid(recipe_lrs[0], points, step)  # validate the grid before any work
    say(settings, f"horizon sweep: {len(horizons)} horizons × {points} LRs = {len(horizons) * points} runs "
                  f"(hidden {hidden}, batch {batch}; up to {extend} more per horizon if its optimum is at an edge)")
    prepare(settings, recipe)
    results = adaptive_sweeps(recipe, prefix=SWEEP_PREFIX, points=[(hidden, batch, T) for T in horizons],
                              centers=recipe_lrs, grid_points=points, step=step, extend=extend,
                              runs_dir=out / "runs", settings=settings, label="horizon sweep")

    rows, lrs, losses, actual_tokens = [], [], [], []
    for T, recipe_lr, (specs, sums) in zip(horizons, recipe_lrs, results):
        ls = [completed_loss(x) for x in sums]
        lrs.append([s.optimizer.lr for s in specs])
        losses.append(ls)
        actual_tokens.append(float(specs[0].tokens))
        for s, loss, sm in zip(specs, ls, sums):
            rows.append({"run": s.name, "target_tokens": T, "tokens": s.tokens, "steps": s.train_steps,
                         "lr": s.optimizer.lr, "recipe_lr": recipe_lr, "status": sm.get("status"),
                         "loss": loss if math.isfinite(loss) else None})
    fit = fit_horizon_exponent(actual_tokens, lrs, losses, ref_tokens=float(tokens),
                               fit_points=fit_points, bootstrap=bootstrap, loss_noise=loss_noise, seed=seed)
    record = {
        "recipe": recipe_source, "hidden": hidden, "batch": batch, "ref_tokens": tokens,
        "multipliers": list(multipliers), "points": points, "step": step, "fit": fit.to_dict(),
        "recipe_exponent": recipe.horizon_exponent,
        "recipe_lr": recipe_lrs, "extend": extend,
        "runs": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "horizon.json", record, default=_json_default)
    _write_csv(out / "horizon.csv", rows)
    if plot:
        from delphi.tune.plots import plot_horizon

        record["plot"] = str(plot_horizon(fit, lrs, losses, recipe_lrs, out / "horizon.png"))
    return record


def format_horizon(record: dict[str, Any]) -> str:
    fit = record["fit"]
    lines = ["horizon   tokens        η*(T)      loss*    recipe η   note"]
    for T, lr, loss, r, m, edge in zip(fit["tokens"], fit["lr_opt"], fit["loss_opt"], record["recipe_lr"],
                                        fit["methods"], fit["at_edge"]):
        note = "optimum at the grid edge: widen the grid" if edge else ("" if m == "parabola" else "lowest point")
        lines.append(f"          {T:<12.4g}  {lr:<9.4g}  {loss:<7.4f}  {r:<9.4g}  {note}")
    lo, hi = fit["interval"]
    lines.append(f"exponent {fit['exponent']:.3f}  (95% bootstrap interval {lo:.3f} – {hi:.3f}"
                 + (f", OLS s.e. {fit['exponent_se']:.3f}" if fit.get("exponent_se") is not None else "")
                 + f"); recipe uses {record['recipe_exponent']}, Delphi 0.3 "
                 + ("inside" if fit["contains_delphi_0.3"] else "outside") + " the interval")
    lines.append(f"η*(T0 = {fit['ref_tokens']:.4g}) = {fit['lr_at_ref']:.4g}")
    edges = sum(fit["at_edge"])
    if edges:
        lines.append(f"warning: {edges} of {len(fit['at_edge'])} horizon(s) still have their lowest loss at the grid "
                     "edge (after extending); there the optimum is only a bound and the exponent is not measured — "
                     "widen --step/--points or raise --extend")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o).__name__)
