"""`check`: score held-out runs against the forecasts registered for them.

A run is scored only if (a) its ledger entry exists and the ledger verifies, (b) its run.json
is the registered RunSpec (plus the `ledger_entry` tag naming that entry), and (c) it started
after the entry's timestamp. Otherwise the row says why it was refused.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.forecast.ledger import Ledger


def check_suite(suite_dir: str | Path) -> dict[str, Any]:
    suite_dir = Path(suite_dir)
    ledger = Ledger(suite_dir / "ledger.jsonl")
    if not ledger.path.exists():
        raise DelphiError(f"{suite_dir} has no ledger.jsonl: no forecast was registered (run `delphi run` first)")
    verified = ledger.verify()
    entries = ledger.read()
    latest: dict[str, dict] = {}
    for e in entries:  # the newest forecast registered for each held-out run
        if e.get("kind") == "forecast":
            latest[e["forecast"]["run"]] = e
    results = []
    for name, entry in latest.items():
        f = entry["forecast"]
        row = {**{k: f[k] for k in ("run", "seed", "budget", "flops", "extrapolation", "metric")},
               "forecast": f["loss"], "ci_low": f["ci_low"], "ci_high": f["ci_high"], "loo_min": f["loo_min"],
               "loo_max": f["loo_max"], "ledger_entry": entry["hash"], "registered_at": entry["timestamp"],
               "actual": None, "residual_pct": None, "inside": None,
               # the fit-health verdict registered with the forecast (None for entries from before the gate)
               "fit_health": entry.get("health"), "compute_definition": f.get("compute_definition", "total")}
        row["status"] = _score(suite_dir / "runs" / name, entry, row, verified.ok)
        results.append(row)
    return {"ledger_ok": verified.ok, "ledger_problems": list(verified.problems), "results": results,
            "seed_spread": seed_spread(results)}


def seed_spread(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per held-out budget with ≥ 2 scored seeds: how far apart the seeds' actual losses are
    (range and sample standard deviation, as % of their mean) — the noise floor any forecast
    residual at that budget has to be read against."""
    by_budget: dict[float, list[float]] = {}
    for r in results:
        if r["actual"] is not None:
            by_budget.setdefault(r["budget"], []).append(r["actual"])
    out = []
    for budget, losses in sorted(by_budget.items()):
        if len(losses) < 2:
            continue
        mean, std = statistics.mean(losses), statistics.stdev(losses)
        out.append({"budget": budget, "seeds": len(losses), "mean": mean, "min": min(losses), "max": max(losses),
                    "range_pct": 100.0 * (max(losses) - min(losses)) / mean, "std_pct": 100.0 * std / mean})
    return out


def _score(run_dir: Path, entry: dict, row: dict, ledger_ok: bool) -> str:
    if not ledger_ok:
        return "refused: the ledger fails verification"
    try:
        spec = RunSpec.from_json((run_dir / "run.json").read_text())
        started = json.loads((run_dir / "started.json").read_text())["started_at"]
    except (OSError, KeyError, json.JSONDecodeError):
        return "pending: not started"
    tags = dict(spec.tags)
    if tags.pop("ledger_entry", None) != entry["hash"]:
        return "refused: the run does not name this forecast's ledger entry"
    registered = RunSpec.from_dict(entry["run_spec"])
    if RunSpec.from_dict({**spec.to_dict(), "tags": tags}) != registered:
        return "refused: the run's spec differs from the registered one"
    if started < entry["timestamp"]:  # ISO-8601 UTC strings order chronologically
        return "refused: the run started before its forecast was registered"
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "pending: running or interrupted"
    if summary.get("status") != "completed":
        return f"{summary.get('status', 'failed')}: {summary.get('reason') or 'no reason recorded'}"
    metric = row["metric"]
    actual = summary.get(metric)
    if actual is None:
        return f"refused: the summary has no {metric!r}"
    row["actual"] = float(actual)
    row["residual_pct"] = 100.0 * (row["actual"] - row["forecast"]) / row["forecast"]
    row["inside"] = bool(row["ci_low"] <= row["actual"] <= row["ci_high"])
    return "scored"


def format_check(result: dict[str, Any]) -> str:
    lines = []
    if not result["ledger_ok"]:
        lines.append("LEDGER FAILS VERIFICATION: " + "; ".join(result["ledger_problems"]))
    hdr = f"{'run':48s} {'seed':>4s} {'C/Cfit':>7s} {'forecast':>9s} {'95% interval':>19s} {'actual':>8s} {'resid%':>7s} inside"
    lines.append(hdr)
    for r in result["results"]:
        ci = f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        if r["actual"] is None:
            lines.append(f"{r['run']:48s} {r['seed']:>4d} {r['extrapolation']:>6.1f}x {r['forecast']:>9.4f} {ci:>19s} "
                         f"{'-':>8s} {'-':>7s} {r['status']}")
        else:
            lines.append(f"{r['run']:48s} {r['seed']:>4d} {r['extrapolation']:>6.1f}x {r['forecast']:>9.4f} {ci:>19s} "
                         f"{r['actual']:>8.4f} {r['residual_pct']:>+7.2f} {'yes' if r['inside'] else 'NO'}")
    for sp in result.get("seed_spread", []):
        lines.append(f"seed spread at {sp['budget']:.3g} FLOPs: {sp['seeds']} seeds, mean {sp['mean']:.4f}, "
                     f"range {sp['range_pct']:.2f}%, std {sp['std_pct']:.2f}% of the mean")
    lines += health_warning_lines(result["results"])
    return "\n".join(lines)


def health_warning_lines(results: list[dict[str, Any]]) -> list[str]:
    """The fit-health warnings registered with the forecasts, once per distinct verdict."""
    from delphi.fit.health import health_lines

    out, seen = [], []
    for r in results:
        h = r.get("fit_health")
        if not h or h.get("status") != "warn" or h in seen:
            continue
        seen.append(h)
        runs = [x["run"] for x in results if x.get("fit_health") == h]
        out.append(f"forecast{'s' if len(runs) > 1 else ''} registered with fit-health warnings "
                   f"({', '.join(runs)}):")
        out += ["  " + x for x in health_lines(h)[1:]]
    return out
