"""`check`: score held-out runs against the forecasts registered for them.

A run is scored only if (a) its ledger entry exists and the ledger verifies (with the published
head and the allowed signers when given), (b) its run.json is the registered RunSpec (plus the
`ledger_entry` tag naming that entry), (c) it started after the entry's timestamp and (d) its
summary.json agrees with the final evaluation its metrics.jsonl logged (and, with `recompute`,
with a fresh evaluation of its saved weights). Otherwise the row says why it was refused. Every
run whose run.json names a ledger entry gets a row, so a held-out run whose entry was removed
from the ledger is refused rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.files import schema_version
from delphi.forecast.forecast import ENTRY_SCHEMA_VERSION
from delphi.forecast.ledger import Ledger, referenced_entries

# check.json's `schema_version` (docs/artefacts.md): 2 is written now; a file without the field
# is version 1 (the same fields, some rows without `fit_health`, `compute_definition`).
SCHEMA_VERSION = 2

# forecast fields a row is built from, and their types
_FORECAST_FIELDS = {"run": str, "seed": int, "budget": (int, float), "flops": (int, float),
                    "extrapolation": (int, float), "metric": str, "loss": (int, float), "ci_low": (int, float),
                    "ci_high": (int, float), "loo_min": (int, float), "loo_max": (int, float)}
# relative difference allowed between summary.json and a re-evaluation of the saved weights
RECOMPUTE_TOLERANCE = 1e-4


def check_suite(suite_dir: str | Path, *, expect_head: str | None = None, allowed_signers: str | Path | None = None,
                recompute: bool = False, tolerance: float | None = None) -> dict[str, Any]:
    """Score every held-out run; `ok` is False when the ledger fails or any row is refused.

    expect_head: a published head digest the ledger must still extend; allowed_signers: an
    ssh-keygen allowed-signers file the entries' signatures must verify against; recompute:
    re-evaluate each scored run's saved weights and refuse it when its summary disagrees by
    more than `tolerance` (relative; default RECOMPUTE_TOLERANCE)."""
    suite_dir = Path(suite_dir)
    runs_dir = suite_dir / "runs"
    ledger = Ledger(suite_dir / "ledger.jsonl")
    refs = referenced_entries(runs_dir)
    if not ledger.path.exists():
        if refs:
            raise DelphiError(f"{ledger.path} is missing, but run(s) {', '.join(sorted(refs))} name entries in it: "
                              "the ledger was deleted; restore it from a copy")
        raise DelphiError(f"{suite_dir} has no ledger.jsonl: no forecast was registered (run `delphi run` first)")
    verified = ledger.verify(expect_head=expect_head, allowed_signers=allowed_signers, runs_dir=runs_dir)
    entries = ledger.read()  # unreadable: already a one-line DelphiError naming the file and entry
    problems = list(verified.problems)
    hashes = {e.get("hash") for e in entries if isinstance(e.get("hash"), str)}
    latest: dict[str, dict] = {}
    damaged: dict[str, str] = {}  # entry hash → what is wrong with it
    for e in entries:  # the newest forecast registered for each held-out run
        if e.get("kind") != "forecast":
            continue
        bad = _entry_problem(e)
        if bad:
            damaged[str(e.get("hash"))] = bad
            if bad not in problems and isinstance(e.get("forecast"), dict) and "run" in e["forecast"]:
                problems.append(bad)
            continue
        latest[e["forecast"]["run"]] = e
    ledger_ok = not problems
    results = []
    for name, entry in latest.items():
        f = entry["forecast"]
        row = {**{k: f[k] for k in ("run", "seed", "budget", "flops", "extrapolation", "metric")},
               "forecast": f["loss"], "ci_low": f["ci_low"], "ci_high": f["ci_high"], "loo_min": f["loo_min"],
               "loo_max": f["loo_max"], "ledger_entry": entry["hash"], "registered_at": entry["timestamp"],
               "actual": None, "residual_pct": None, "inside": None,
               # the fit-health verdict registered with the forecast (None for entries from before the gate)
               "fit_health": entry.get("health") if isinstance(entry.get("health"), dict) else None,
               "compute_definition": f.get("compute_definition", "total")}
        row["status"] = _score(runs_dir / name, entry, row, ledger_ok, hashes,
                               recompute=recompute, tolerance=tolerance)
        results.append(row)
    scored = {r["run"] for r in results}
    for name, (ref, run_dir) in sorted(refs.items()):
        if name in scored:
            continue
        if ref in damaged:
            why = f"the ledger entry its run.json names ({ref[:12]}…) is damaged: {damaged[ref]}"
        elif ref in hashes:
            why = f"its run.json names ledger entry {ref[:12]}…, which is not a forecast for this run"
        else:
            why = (f"its run.json names ledger entry {ref[:12]}…, which is not in the ledger "
                   "(entry removed or rewritten)")
        results.append(_unregistered_row(name, run_dir, ref, "refused: " + why))
    refused = [r["run"] for r in results if str(r["status"]).startswith("refused")]
    return CheckResult(ok=ledger_ok and not refused, ledger_ok=ledger_ok, ledger_problems=tuple(problems),
                       ledger_head=verified.head, refused=tuple(refused),
                       results=tuple(CheckRow.from_dict(r) for r in results),
                       seed_spread=tuple(SeedSpread.from_dict(sp) for sp in seed_spread(results))).to_dict()


def _opt(v, kind):
    """`kind(v)`, or None for a missing value."""
    return None if v is None else kind(v)


@dataclass(frozen=True)
class CheckRow:
    """One held-out run scored (or refused) against the forecast registered for it."""

    run: str
    status: str  # "scored", "pending: …", "refused: …", or the run's own status ("diverged: …")
    seed: int | None = None
    budget: float | None = None
    flops: float | None = None
    extrapolation: float | None = None  # flops / the largest fitted budget
    metric: str | None = None
    forecast: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    loo_min: float | None = None
    loo_max: float | None = None
    ledger_entry: str | None = None  # the entry's hash
    registered_at: str | None = None  # the entry's timestamp (ISO 8601, UTC)
    actual: float | None = None
    residual_pct: float | None = None  # 100 · (actual − forecast) / forecast
    inside: bool | None = None  # ci_low <= actual <= ci_high
    fit_health: dict | None = None  # the verdict registered with the forecast (status, warnings, advice, flags)
    compute_definition: str | None = None
    recomputed: float | None = None  # with --recompute: the metric re-evaluated from the saved weights
    recompute: dict | None = None  # with --recompute: device, precision, tolerance

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.recomputed is None and self.recompute is None:
            del d["recomputed"], d["recompute"]
        d["status"] = d.pop("status")  # last, as `delphi check --json` has always printed it
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckRow":
        num = lambda k: _opt(d.get(k), float)  # noqa: E731
        return cls(run=str(d["run"]), status=str(d.get("status") or "unknown"), seed=_opt(d.get("seed"), int),
                   budget=num("budget"), flops=num("flops"), extrapolation=num("extrapolation"),
                   metric=_opt(d.get("metric"), str), forecast=num("forecast"), ci_low=num("ci_low"),
                   ci_high=num("ci_high"), loo_min=num("loo_min"), loo_max=num("loo_max"),
                   ledger_entry=_opt(d.get("ledger_entry"), str), registered_at=_opt(d.get("registered_at"), str),
                   actual=num("actual"), residual_pct=num("residual_pct"), inside=_opt(d.get("inside"), bool),
                   fit_health=d.get("fit_health") if isinstance(d.get("fit_health"), dict) else None,
                   compute_definition=_opt(d.get("compute_definition"), str), recomputed=num("recomputed"),
                   recompute=d.get("recompute") if isinstance(d.get("recompute"), dict) else None)


@dataclass(frozen=True)
class SeedSpread:
    """The held-out seeds' actual losses at one budget: the noise floor of its residuals."""

    budget: float
    seeds: int
    mean: float
    min: float
    max: float
    range_pct: float
    std_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "SeedSpread":
        return cls(budget=float(d["budget"]), seeds=int(d["seeds"]), mean=float(d["mean"]), min=float(d["min"]),
                   max=float(d["max"]), range_pct=float(d["range_pct"]), std_pct=float(d["std_pct"]))


@dataclass(frozen=True)
class CheckResult:
    """check.json: every held-out run's row, the ledger's verdict and the seed spreads."""

    ok: bool  # the ledger verifies and no run was refused
    ledger_ok: bool
    ledger_problems: tuple[str, ...]
    ledger_head: str | None  # COUNT:HASH to publish
    refused: tuple[str, ...]  # names of the refused runs
    results: tuple[CheckRow, ...]
    seed_spread: tuple[SeedSpread, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "ok": self.ok, "ledger_ok": self.ledger_ok,
                "ledger_problems": list(self.ledger_problems), "ledger_head": self.ledger_head,
                "refused": list(self.refused), "results": [r.to_dict() for r in self.results],
                "seed_spread": [sp.to_dict() for sp in self.seed_spread]}

    @classmethod
    def from_dict(cls, d: Any, what: str = "check.json") -> "CheckResult":
        """A DelphiError (one line, naming `what`) when `d` is not a check result. Fields a
        version-1 file may lack take their defaults (`ok`, `refused` follow from the rows)."""
        if not isinstance(d, dict):
            raise DelphiError(f"{what} is not a JSON object")
        schema_version(d, what, SCHEMA_VERSION)
        try:
            rows = tuple(CheckRow.from_dict(r) for r in d.get("results") or ())
            ledger_ok = bool(d.get("ledger_ok", True))
            refused = tuple(map(str, d["refused"])) if isinstance(d.get("refused"), list) else \
                tuple(r.run for r in rows if r.status.startswith("refused"))
            return cls(ok=bool(d.get("ok", ledger_ok and not refused)), ledger_ok=ledger_ok,
                       ledger_problems=tuple(map(str, d.get("ledger_problems") or ())),
                       ledger_head=_opt(d.get("ledger_head"), str), refused=refused, results=rows,
                       seed_spread=tuple(SeedSpread.from_dict(sp) for sp in d.get("seed_spread") or ()))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DelphiError(f"{what} is not a readable check result ({type(e).__name__}: {e})") from None


def _entry_problem(e: dict) -> str | None:
    """What makes a forecast entry unusable for scoring (None: nothing)."""
    where = f"entry {e.get('index', '?')}"
    version = e.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= ENTRY_SCHEMA_VERSION:
        return (f"{where} has schema version {version!r}; this delphi reads versions 1 to {ENTRY_SCHEMA_VERSION} "
                "(upgrade delphi, or the entry was edited)")
    f = e.get("forecast")
    if not isinstance(f, dict) or "run" not in f:
        return f"{where} has no 'forecast' (entry edited or damaged)"
    missing = [k for k in _FORECAST_FIELDS if k not in f]
    if missing:
        return f"{where}: the forecast has no {', '.join(map(repr, missing))} (entry edited or damaged)"

    def bad(k: str, t) -> bool:
        v = f[k]
        if isinstance(v, bool) or not isinstance(v, t):
            return True
        if isinstance(v, float) and not math.isfinite(v):
            return True
        return k == "loss" and v <= 0

    wrong = [k for k, t in _FORECAST_FIELDS.items() if bad(k, t)]
    if wrong:
        return (f"{where}: the forecast's {', '.join(map(repr, wrong))} ha{'s' if len(wrong) == 1 else 've'} the "
                "wrong type or value (entry edited or damaged)")
    for k in ("run_spec", "timestamp", "hash"):
        if k not in e:
            return f"{where} has no {k!r} (entry edited or damaged)"
    if not isinstance(e["run_spec"], dict) or not isinstance(e["timestamp"], str) or not isinstance(e["hash"], str):
        return f"{where}: 'run_spec', 'timestamp' or 'hash' has the wrong type (entry edited or damaged)"
    return None


def _unregistered_row(name: str, run_dir: Path, ref: str, status: str) -> dict[str, Any]:
    """A row for a run that names a ledger entry no usable forecast corresponds to."""
    try:
        spec = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        spec = {}
    spec = spec if isinstance(spec, dict) else {}
    seed = spec.get("seed") if isinstance(spec.get("seed"), int) and not isinstance(spec.get("seed"), bool) else None
    budget = spec.get("budget") if isinstance(spec.get("budget"), (int, float)) else None
    return {"run": name, "seed": seed, "budget": budget, "flops": None, "extrapolation": None,
            "metric": None, "forecast": None, "ci_low": None, "ci_high": None, "loo_min": None, "loo_max": None,
            "ledger_entry": ref, "registered_at": None, "actual": None, "residual_pct": None, "inside": None,
            "fit_health": None, "compute_definition": None, "status": status}


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


def _score(run_dir: Path, entry: dict, row: dict, ledger_ok: bool, hashes: set, *, recompute: bool = False,
           tolerance: float | None = None) -> str:
    if not ledger_ok:
        return "refused: the ledger fails verification"
    if not (run_dir / "run.json").exists():
        return "pending: not started"
    try:
        spec = RunSpec.from_json((run_dir / "run.json").read_text())
    except (DelphiError, OSError, ValueError, TypeError, KeyError) as e:
        return f"refused: its run.json is unreadable ({e})"
    try:
        started = json.loads((run_dir / "started.json").read_text())["started_at"]
    except (OSError, KeyError, TypeError, ValueError):
        if (run_dir / "summary.json").exists():
            return "refused: the run has a summary.json but no readable started.json (its start time is unknown)"
        return "pending: not started"
    tags = dict(spec.tags)
    named = tags.pop("ledger_entry", None)
    if named != entry["hash"]:
        if isinstance(named, str) and named and named not in hashes:
            return (f"refused: the run names ledger entry {named[:12]}…, which is not in the ledger "
                    "(entry removed or rewritten)")
        return "refused: the run does not name this forecast's ledger entry"
    try:
        registered = RunSpec.from_dict(entry["run_spec"])
    except (DelphiError, ValueError, TypeError, KeyError) as e:
        return f"refused: the registered run spec is unreadable ({e})"
    if RunSpec.from_dict({**spec.to_dict(), "tags": tags}) != registered:
        return "refused: the run's spec differs from the registered one"
    if not isinstance(started, str):
        return "refused: its started.json does not record when the run started"
    if started < entry["timestamp"]:  # ISO-8601 UTC strings order chronologically
        return "refused: the run started before its forecast was registered"
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "pending: running or interrupted"
    if not isinstance(summary, dict):
        return "pending: running or interrupted"
    if summary.get("status") != "completed":
        return f"{summary.get('status', 'failed')}: {summary.get('reason') or 'no reason recorded'}"
    metric = row["metric"]
    actual = summary.get(metric)
    if actual is None:
        return f"refused: the summary has no {metric!r}"
    if isinstance(actual, bool) or not isinstance(actual, (int, float)) or not math.isfinite(actual):
        return f"refused: the summary's {metric!r} is {actual!r}, not a number"
    disagreement = _summary_disagrees(run_dir, summary, metric, float(actual))
    if disagreement:
        return "refused: " + disagreement
    if recompute:
        disagreement = _recompute_disagrees(run_dir, summary, metric, float(actual), row, tolerance)
        if disagreement:
            return "refused: " + disagreement
    row["actual"] = float(actual)
    row["residual_pct"] = 100.0 * (row["actual"] - row["forecast"]) / row["forecast"]
    row["inside"] = bool(row["ci_low"] <= row["actual"] <= row["ci_high"])
    return "scored"


def _final_eval(run_dir: Path) -> dict | None:
    """The last evaluation row metrics.jsonl logged (None when it has none or is missing)."""
    last = None
    try:
        with open(run_dir / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a torn line (a run killed mid-write) is no evidence either way
                if isinstance(row, dict) and row.get("kind") == "eval":
                    last = row
    except OSError:
        return None
    return last


def _summary_disagrees(run_dir: Path, summary: dict, metric: str, actual: float) -> str | None:
    """Where summary.json's metric differs from the evaluation it was copied from (its own
    `eval` record, the final eval row of metrics.jsonl); None when they agree or are absent."""
    from delphi.forecast.recompute import EVAL_KEYS

    key = EVAL_KEYS.get(metric)
    if key is None:
        return None
    sources = [("its own eval record", (summary.get("eval") or {}).get(key)
                if isinstance(summary.get("eval"), dict) else None),
               ("the final evaluation in metrics.jsonl", (_final_eval(run_dir) or {}).get(key))]
    for what, logged in sources:
        if isinstance(logged, (int, float)) and not isinstance(logged, bool) and \
                not math.isclose(float(logged), actual, rel_tol=1e-9, abs_tol=0.0):
            return (f"summary.json {metric} {actual:.6g} disagrees with {what} ({float(logged):.6g}): "
                    "the summary was edited")
    return None


def _recompute_disagrees(run_dir: Path, summary: dict, metric: str, actual: float, row: dict,
                         tolerance: float | None) -> str | None:
    from delphi.forecast.recompute import EVAL_KEYS, recompute_eval

    key = EVAL_KEYS.get(metric)
    if key is None:
        row["recomputed"] = None
        return None
    try:
        ev = recompute_eval(run_dir)
    except DelphiError as e:
        row["recomputed"] = None
        return f"--recompute could not re-evaluate the run: {e}"
    value = ev.get(key)
    tol = RECOMPUTE_TOLERANCE if tolerance is None else float(tolerance)
    row["recomputed"] = value
    row["recompute"] = {"device": ev["device"], "precision": ev["precision"], "tolerance": tol}
    if value is None or not math.isfinite(value):
        return f"re-evaluating the saved weights gives {metric} {value!r}"
    rel = abs(value - actual) / abs(value) if value else abs(actual)
    if rel > tol:
        return (f"re-evaluating the saved weights gives {metric} {value:.6g}, summary.json says {actual:.6g} "
                f"({100 * rel:.3g}% apart, tolerance {100 * tol:.3g}%): the summary was edited or the weights "
                f"replaced (on other hardware than the run's, loosen --tolerance)")
    return None


def format_check(result: dict[str, Any]) -> str:
    lines = []
    if not result["ledger_ok"]:
        lines.append("LEDGER FAILS VERIFICATION: " + "; ".join(result["ledger_problems"]))
    hdr = f"{'run':48s} {'seed':>4s} {'C/Cfit':>7s} {'forecast':>9s} {'95% interval':>19s} {'actual':>8s} {'resid%':>7s} inside"
    lines.append(hdr)
    for r in result["results"]:
        seed = "-" if r.get("seed") is None else str(r["seed"])
        extra = "-" if r.get("extrapolation") is None else f"{r['extrapolation']:.1f}x"
        fc = "-" if r.get("forecast") is None else f"{r['forecast']:.4f}"
        ci = "-" if r.get("ci_low") is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        if r["actual"] is None:
            status = "REFUSED (why: below)" if str(r["status"]).startswith("refused") else r["status"]
            lines.append(f"{r['run']:48s} {seed:>4s} {extra:>7s} {fc:>9s} {ci:>19s} "
                         f"{'-':>8s} {'-':>7s} {status}")
        else:
            lines.append(f"{r['run']:48s} {seed:>4s} {extra:>7s} {fc:>9s} {ci:>19s} "
                         f"{r['actual']:>8.4f} {r['residual_pct']:>+7.2f} {'yes' if r['inside'] else 'NO'}")
    for sp in result.get("seed_spread", []):
        lines.append(f"seed spread at {sp['budget']:.3g} FLOPs: {sp['seeds']} seeds, mean {sp['mean']:.4f}, "
                     f"range {sp['range_pct']:.2f}%, std {sp['std_pct']:.2f}% of the mean")
    lines += health_warning_lines(result["results"])
    refused = [r for r in result["results"] if str(r["status"]).startswith("refused")]
    if refused or not result["ledger_ok"]:
        why = [f"{len(refused)} held-out run{'s' if len(refused) != 1 else ''} refused"] if refused else []
        if not result["ledger_ok"]:
            why.append("the ledger fails verification")
        lines.append("check FAILS: " + " and ".join(why))
        lines += [f"  {r['run']}: {r['status']}" for r in refused]
    elif result.get("ledger_head"):
        lines.append(f"ledger head: {result['ledger_head']} (publish it; `delphi ledger verify DIR --expect-head "
                     "HEAD` then proves the ledger still extends it)")
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
