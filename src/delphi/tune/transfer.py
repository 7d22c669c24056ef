"""`delphi tune transfer`: does the recipe's LR transfer away from the reference point?

Delphi's sanity test: at settings (width, batch, horizon) away from where the constants were
tuned, a local 1-D sweep of the projection LR around the recipe's value; the recipe passes at a
setting when its LR lands in the sweep's low-loss region — its loss within `tolerance` (0.5%) of
the sweep's best. The region reported is the range of swept LRs whose loss is within the
tolerance (model-free: measured points only).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, atomic_write_text

DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class TransferCheck:
    hidden: int
    batch: int
    tokens: float
    recipe_lr: float
    lrs: tuple[float, ...]
    losses: tuple[float, ...]  # inf: diverged or failed
    best_lr: float
    best_loss: float
    recipe_loss: float
    gap: float  # recipe_loss / best_loss − 1
    region: tuple[float, float]  # smallest and largest swept LR within tolerance of the best
    best_at_edge: bool  # the best LR is the grid's smallest or largest: the true optimum may lie beyond
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["losses"] = [v if math.isfinite(v) else None for v in self.losses]
        d["recipe_loss"] = self.recipe_loss if math.isfinite(self.recipe_loss) else None
        d["gap"] = self.gap if math.isfinite(self.gap) else None
        d["region"] = list(self.region)
        d["lr_ratio"] = self.recipe_lr / self.best_lr
        return d


def check_transfer(lrs: Sequence[float], losses: Sequence[float], recipe_lr: float, *,
                   tolerance: float = DEFAULT_TOLERANCE, hidden: int = 0, batch: int = 0,
                   tokens: float = 0.0) -> TransferCheck:
    """Judge one sweep. `recipe_lr` must be one of the swept LRs (the grid is centred on it)."""
    if len(lrs) != len(losses) or len(lrs) < 2:
        raise DelphiError("a transfer check needs an LR sweep of two or more runs, one loss per LR")
    if not tolerance >= 0:
        raise DelphiError(f"tolerance must be non-negative, got {tolerance}")
    pairs = sorted(zip((float(x) for x in lrs), (float(y) if math.isfinite(y) else math.inf for y in losses)))
    lr_s = [p[0] for p in pairs]
    loss_s = [p[1] for p in pairs]
    match = [i for i, lr in enumerate(lr_s) if math.isclose(lr, recipe_lr, rel_tol=1e-9)]
    if not match:
        raise DelphiError(f"the recipe's LR {recipe_lr:.4g} is not among the swept LRs; centre the grid on it")
    finite = [i for i, y in enumerate(loss_s) if math.isfinite(y)]
    if not finite:
        raise DelphiError("every run of the LR sweep diverged or failed")
    i_best = min(finite, key=lambda i: loss_s[i])
    best = loss_s[i_best]
    limit = best * (1 + tolerance)
    inside = [lr_s[i] for i in finite if loss_s[i] <= limit]
    recipe_loss = loss_s[match[0]]
    gap = recipe_loss / best - 1 if math.isfinite(recipe_loss) else math.inf
    return TransferCheck(
        hidden=hidden, batch=batch, tokens=float(tokens), recipe_lr=float(recipe_lr), lrs=tuple(lr_s),
        losses=tuple(loss_s), best_lr=lr_s[i_best], best_loss=best, recipe_loss=recipe_loss, gap=gap,
        region=(min(inside), max(inside)), best_at_edge=i_best in (0, len(lr_s) - 1), tolerance=tolerance,
        ok=recipe_loss <= limit,
    )


def parse_settings(text: str) -> list[tuple[int, int, float]]:
    """'128x16x2e6,64x32x8e6' → [(hidden, batch, tokens), ...]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.lower().split("x")
        try:
            if len(parts) != 3:
                raise ValueError
            out.append((int(parts[0]), int(parts[1]), float(parts[2])))
        except ValueError:
            raise DelphiError(f"--settings entry {item!r}: write WIDTHxBATCHxTOKENS, e.g. 128x16x2e6") from None
    if not out:
        raise DelphiError("--settings is empty; give WIDTHxBATCHxTOKENS entries separated by commas")
    return out


def default_settings(hidden: int, batch: int, tokens: float, head_dim: int) -> list[tuple[int, int, float]]:
    """One step away from the reference along each axis: 2× width, 2× batch, 4× horizon."""
    wide = 2 * hidden
    wide += (-wide) % head_dim
    return [(wide, batch, tokens), (hidden, 2 * batch, tokens), (hidden, batch, 4 * tokens)]


def run_transfer(recipe, recipe_source: dict[str, Any], *, points_list: Sequence[tuple[int, int, float]], out_dir,
                 settings, points: int = 5, step: float = 2.0, extend: int = 2,
                 tolerance: float = DEFAULT_TOLERANCE, plot: bool = True) -> dict[str, Any]:
    """Sweep the projection LR at each (width, batch, tokens) (extending a sweep past its edge up
    to `extend` times while its best loss sits there: the true best may be further out, and the
    verdict is relative to it); write transfer.json / .csv / .md / .png."""
    from delphi.tune.common import SWEEP_PREFIX, adaptive_sweeps, check_point, completed_loss, lr_grid, prepare, say

    out = Path(out_dir)
    if len(set(points_list)) != len(points_list):
        raise DelphiError("two --settings entries are the same point; list each (width, batch, tokens) once")
    recipe_lrs = []
    for hidden, batch, tokens in points_list:
        check_point(recipe, hidden, batch, tokens)
        recipe_lrs.append(recipe.hyperparams(batch, tokens, hidden).lr)
    lr_grid(recipe_lrs[0], points, step)  # validate the grid before any work
    say(settings, f"transfer check: {len(points_list)} settings × {points} LRs = {len(points_list) * points} runs")
    prepare(settings, recipe)
    results = adaptive_sweeps(recipe, prefix=SWEEP_PREFIX, points=list(points_list), centers=recipe_lrs,
                              grid_points=points, step=step, extend=extend, runs_dir=out / "runs",
                              settings=settings, label="transfer")
    checks = []
    for (hidden, batch, tokens), recipe_lr, (specs, sums) in zip(points_list, recipe_lrs, results):
        losses = [completed_loss(x) for x in sums]
        checks.append(check_transfer([s.optimizer.lr for s in specs], losses, recipe_lr, tolerance=tolerance,
                                     hidden=hidden, batch=batch, tokens=tokens))
    record = {"recipe": recipe_source, "tolerance": tolerance, "points": points, "step": step, "extend": extend,
              "passed": sum(c.ok for c in checks), "total": len(checks),
              "checks": [c.to_dict() for c in checks]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "transfer.json", record)
    atomic_write_text(out / "transfer.csv", _csv(checks))
    atomic_write_text(out / "transfer.md", format_transfer(record) + "\n")
    if plot:
        from delphi.tune.plots import plot_transfer

        record["plot"] = str(plot_transfer(checks, out / "transfer.png"))
    return record


def _csv(checks: Sequence[TransferCheck]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["hidden", "batch", "tokens", "recipe_lr", "best_lr", "lr_ratio", "recipe_loss", "best_loss", "gap",
                "region_lo", "region_hi", "best_at_edge", "ok"])
    for c in checks:
        w.writerow([c.hidden, c.batch, f"{c.tokens:.6g}", f"{c.recipe_lr:.6g}", f"{c.best_lr:.6g}",
                    f"{c.recipe_lr / c.best_lr:.4g}", f"{c.recipe_loss:.6f}", f"{c.best_loss:.6f}", f"{c.gap:.6f}",
                    f"{c.region[0]:.6g}", f"{c.region[1]:.6g}", c.best_at_edge, c.ok])
    return buf.getvalue()


def format_transfer(record: dict[str, Any]) -> str:
    tol = record["tolerance"]
    lines = [f"| width | batch | tokens | recipe LR | best LR | recipe loss | best loss | gap | "
             f"low-loss LRs (≤ {tol:.1%}) | verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in record["checks"]:
        gap = "diverged" if c["gap"] is None else f"{c['gap']:+.2%}"
        rl = "—" if c["recipe_loss"] is None else f"{c['recipe_loss']:.4f}"
        verdict = "pass" if c["ok"] else "FAIL"
        if c["best_at_edge"]:
            verdict += " (best at grid edge)"
        lines.append(f"| {c['hidden']} | {c['batch']} | {c['tokens']:.3g} | {c['recipe_lr']:.4g} | "
                     f"{c['best_lr']:.4g} | {rl} | {c['best_loss']:.4f} | {gap} | "
                     f"{c['region'][0]:.4g} – {c['region'][1]:.4g} | {verdict} |")
    lines.append(f"\n{record['passed']}/{record['total']} settings: the recipe's LR is within {tol:.1%} "
                 "of the sweep's best loss")
    return "\n".join(lines)
