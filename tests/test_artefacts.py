"""Stages hand each other typed artefacts: fit.json and check.json load into the dataclasses that
wrote them (`FitRecord`, `CheckResult`) and back, the report draws a finished suite from them
without fitting anything, and files written before artefacts carried a schema version still load.

The suites here are built by the pipeline's own stages (`fit_suite`, `register_heldout`,
`check_suite`, `write_table`) on a synthetic runs table; only training is left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, json_text, sha256_file
from delphi.fit.isoflop import IsoFlopFit
from delphi.fit.loss_law import LossLaw
from delphi.fit.record import SCHEMA_VERSION, FitRecord
from delphi.forecast.check import CheckResult

DATA = Path(__file__).parent / "data" / "artefacts"
SUITE_V1 = DATA / "suite-v1"  # a suite directory written before artefacts carried schema versions
CEILING = 9.5


def _suite_spec(out: Path, ceiling: float | None):
    from delphi.sweep.suite import parse_suite, preset_text

    text = preset_text("tiny").replace('ceiling = "unigram"', "" if ceiling is None else f"ceiling = {ceiling}")
    return parse_suite(text, out_dir=str(out))


def _grid_table(suite, scale: float) -> pd.DataFrame:
    """Every grid run of the suite with a loss from L(N, D) = 2 + scale·(40/N^0.3 + 400/D^0.3)."""
    rows = []
    for spec in suite.grid_specs():
        s, N, D = spec.shape, spec.shape.num_params, spec.tokens
        rows.append({"name": spec.name, "role": "grid", "status": "completed", "budget": spec.budget,
                     "flops": spec.flops, "params": N, "tokens": D, "hidden_size": s.hidden_size,
                     "num_layers": s.num_layers, "vocab_size": s.vocab_size, "seq_len": s.seq_len,
                     "loss": 2.0 + scale * (40 / N ** 0.3 + 400 / D ** 0.3)})
    return pd.DataFrame(rows)


def build_suite(root: Path, ceiling: float | None) -> dict:
    """A fitted suite directory: suite.toml, runs.csv, fit.json, the ledger and check.json, written
    by the pipeline's stages (the held-out runs are registered but not trained)."""
    from delphi.forecast.check import check_suite
    from delphi.sweep.pipeline import fit_suite, register_heldout
    from delphi.sweep.results import write_table

    suite = _suite_spec(root, ceiling)
    root.mkdir(parents=True)
    (root / "suite.toml").write_text(suite.source)
    table = _grid_table(suite, 0.1 if ceiling is not None else 1.0)
    write_table(table, root / "runs.csv")
    fit = fit_suite(suite, write_table(table, root / "fit-input.csv"))
    atomic_write_json(root / "fit.json", fit["record"])
    specs = register_heldout(suite, root, fit, progress=False)
    atomic_write_json(root / "check.json", check_suite(root))
    return {"suite": suite, "fit": fit, "specs": specs}


@pytest.fixture(scope="module", params=[None, CEILING], ids=["E+A/C^alpha", "ceiling"])
def fitted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("artefacts") / "suite"
    return root, build_suite(root, request.param)


# ---- fit.json --------------------------------------------------------------------------------

def test_fit_json_round_trips_exactly(fitted):
    root, facts = fitted
    iso, law = facts["fit"]["iso"], facts["fit"]["law"]
    raw = json.loads((root / "fit.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    rec = FitRecord.from_dict(raw)
    assert not rec.legacy and rec.to_dict() == raw
    assert rec.runs_table_sha256 == sha256_file(root / "fit-input.csv")
    # The IsoFLOP fit: every bucket with its runs, parabola and vertex, the allocation laws.
    assert rec.isoflop.to_dict() == iso.to_dict()
    assert IsoFlopFit.from_dict(json.loads(json.dumps(iso.to_dict()))).to_dict() == iso.to_dict()
    for a, b in zip(rec.isoflop.buckets, iso.buckets):
        assert (a.tokens, a.params, a.loss, a.coeffs, a.flags, a.skipped) == (b.tokens, b.params, b.loss, b.coeffs,
                                                                              b.flags, b.skipped)
    assert np.array_equal(rec.isoflop.bootstrap_optima(40, seed=3), iso.bootstrap_optima(40, seed=3))
    assert rec.isoflop.predict(1e13) == iso.predict(1e13)
    # The loss law: its form, its predictions and the intervals the forecasts were registered with.
    got = rec.loss_law
    assert (got.form, got.ceiling, got.asymptote) == (law.form, law.ceiling, law.asymptote)
    C = np.geomspace(1e10, 1e14, 9)
    assert np.array_equal(got.predict(C), law.predict(C))
    for kind in ("prediction", "law"):
        assert all(np.array_equal(x, y) for x, y in zip(got.interval(C, kind), law.interval(C, kind)))
    assert all(np.array_equal(x, y) for x, y in zip(got.loo(C), law.loo(C)))
    entry = json.loads((root / "ledger.jsonl").read_text().splitlines()[0])
    lo, hi = got.interval(entry["forecast"]["compute"])
    assert (float(lo), float(hi)) == (entry["forecast"]["ci_low"], entry["forecast"]["ci_high"])


def test_a_law_without_its_draws_predicts_but_has_no_interval(fitted):
    law = fitted[1]["fit"]["law"]
    bare = LossLaw.from_dict(json.loads(json.dumps(law.to_dict())))  # the summary `delphi fit` prints
    assert bare.predict(1e13) == law.predict(1e13)
    assert all(math.isnan(v) for v in bare.interval(1e13))
    assert "bootstrap draws were not stored" in bare.note


def test_fit_json_is_strict_and_readable(fitted):
    root, _ = fitted
    text = (root / "fit.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"fit.json holds {c}"))
    assert len(text.splitlines()) < 1000  # the 2,000 bootstrap draws are one line per column


def test_newer_or_malformed_records_are_one_line_errors(fitted):
    raw = json.loads((fitted[0] / "fit.json").read_text())
    with pytest.raises(DelphiError, match="schema version 3, newer than this delphi reads") as e:
        FitRecord.from_dict({**raw, "schema_version": 3})
    assert "\n" not in str(e.value)
    with pytest.raises(DelphiError, match="no 'loss_law' object"):
        FitRecord.from_dict({k: v for k, v in raw.items() if k != "loss_law"})
    with pytest.raises(DelphiError, match="not a readable fit record"):
        FitRecord.from_dict({**raw, "loss_law": {**raw["loss_law"], "A": "many"}})
    with pytest.raises(DelphiError, match="unknown form"):
        LossLaw.from_dict({**raw["loss_law"], "form": "C^2"})


# ---- the report reads, never fits -------------------------------------------------------------

def _forbid_fitting(monkeypatch) -> None:
    import delphi.fit.isoflop as isoflop
    import delphi.fit.loss_law as loss_law

    def refuse(*args, **kwargs):
        raise AssertionError("the report fitted")

    for mod, name in ((isoflop, "fit_isoflop"), (isoflop, "fit_bucket"), (isoflop, "fit_law_on_optima"),
                      (isoflop, "huber_parabolas"), (loss_law, "fit_loss_law"), (loss_law, "_fit_rows"),
                      (loss_law, "_fit_rows_ceiling")):
        monkeypatch.setattr(mod, name, refuse)


def test_report_of_a_finished_suite_runs_no_fit(fitted, tmp_path, monkeypatch):
    from delphi.report import build_report
    from delphi.report.fitview import build_fit_view

    root, facts = fitted
    law, iso = facts["fit"]["law"], facts["fit"]["iso"]
    _forbid_fitting(monkeypatch)
    paths = build_report(root, tmp_path / "out")
    for key in ("isoflop", "allocation", "loss_law"):
        assert paths[f"figure:{key}"].is_file()
    md = paths["markdown"].read_text()
    assert "recomputed" not in md and "fitted for this report" not in md
    if law.ceiling is not None:
        assert f"1/L*(C) = 1/{CEILING:.4f} + C^{law.alpha:.4f}" in md
    else:
        assert f"L*(C) = {law.E:.4f} + " in md
    assert "bootstrap: 2000 resamples, seed 0, 95% percentile intervals" in md
    # What the figures draw is fit.json's fit: the parabolas, and the registered law's own band.
    view = build_fit_view(json.loads((root / "fit.json").read_text()), pd.read_csv(root / "runs.csv"))
    assert view.source == "fit.json" and not view.notes
    assert [b.coeffs for b in view.buckets] == [b.coeffs for b in iso.buckets]
    (entry,) = [json.loads(line) for line in (root / "ledger.jsonl").read_text().splitlines()]
    c = entry["forecast"]["compute"]
    lo, hi = view.loss_law.band(np.array([c]))
    assert (lo[0], hi[0]) == (entry["forecast"]["ci_low"], entry["forecast"]["ci_high"])
    assert view.loss_law(c) == pytest.approx(entry["forecast"]["loss"], rel=1e-12)


def test_report_of_an_unreadable_or_newer_fit_json_says_so(fitted, tmp_path):
    from delphi.report import build_report

    root = tmp_path / "suite"
    shutil.copytree(fitted[0], root)
    raw = json.loads((root / "fit.json").read_text())
    (root / "fit.json").write_text(json.dumps({**raw, "schema_version": 99}))
    md = build_report(root, tmp_path / "out")["markdown"].read_text()
    assert "fit.json has schema version 99, newer than this delphi reads" in md
    assert "fitted for this report (fit.json is not readable); they are not a registered forecast" in md


# ---- files written before artefacts carried a schema version ---------------------------------

def test_version_1_fit_json_loads_and_renders_with_a_note(tmp_path, monkeypatch):
    import delphi.fit.loss_law as loss_law
    from delphi.report import build_report

    raw = json.loads((SUITE_V1 / "fit.json").read_text())
    assert "schema_version" not in raw
    rec = FitRecord.from_dict(raw)
    assert rec.legacy and rec.loss_law.ceiling == raw["loss_law"]["ceiling"]
    assert rec.loss_law.predict(1e13) == pytest.approx(
        1 / (1 / raw["loss_law"]["ceiling"] + 1e13 ** raw["loss_law"]["alpha"] / raw["loss_law"]["A"]), rel=1e-12)
    assert [b.flops for b in rec.isoflop.buckets] == sorted(b["flops"] for b in raw["isoflop"]["buckets"])
    assert rec.isoflop.tokens_law.alpha == raw["isoflop"]["allocation"]["tokens"]["alpha"]

    calls = []
    real = loss_law.fit_loss_law
    monkeypatch.setattr(loss_law, "fit_loss_law", lambda *a, **k: calls.append(k) or real(*a, **k))
    root = tmp_path / "suite"
    root.mkdir()
    shutil.copy(SUITE_V1 / "fit.json", root / "fit.json")
    shutil.copy(SUITE_V1 / "check.json", root / "check.json")
    paths = build_report(root)
    md = paths["markdown"].read_text()
    assert ("fit.json was written by an earlier version of delphi (no schema_version): the loss law's bootstrap "
            "band was recomputed for this report") in md
    assert paths["figure:loss_law"].is_file() and paths["figure:allocation"].is_file()
    assert "1/L*(C) = 1/6.1558 + C^" in md
    # Only the band was refitted, with the recorded settings and the ceiling form.
    (kw,) = calls
    assert kw["bootstrap"] == 2000 and kw["seed"] == 0 and kw["ceiling"] == raw["loss_law"]["ceiling"]


def test_version_1_check_json_and_ledger_entry_still_load():
    from delphi.forecast.check import _entry_problem

    raw = json.loads((SUITE_V1 / "check.json").read_text())
    res = CheckResult.from_dict(raw)
    assert res.ok and res.ledger_head == raw["ledger_head"]
    (row,) = res.results
    assert (row.run, row.status, row.inside) == (raw["results"][0]["run"], "scored", True)
    assert row.fit_health["status"] == "warn"
    assert res.to_dict() == {"schema_version": 2, **raw}  # the same fields, now versioned
    (entry,) = [json.loads(line) for line in (SUITE_V1 / "ledger.jsonl").read_text().splitlines()]
    assert "schema_version" not in entry and _entry_problem(entry) is None
    assert _entry_problem({**entry, "schema_version": 3}).startswith("entry 0 has schema version 3")


def test_check_json_round_trips(fitted):
    root, facts = fitted
    raw = json.loads((root / "check.json").read_text())
    assert raw["schema_version"] == 2
    res = CheckResult.from_dict(raw)
    assert res.to_dict() == raw
    assert [r.run for r in res.results] == [s.name for s in facts["specs"]]
    assert all(r.status == "pending: not started" for r in res.results)
    with pytest.raises(DelphiError, match="check.json is not a readable check result"):
        CheckResult.from_dict({"results": [{"seed": 0}]})
    with pytest.raises(DelphiError, match="newer than this delphi reads"):
        CheckResult.from_dict({**raw, "schema_version": 3})


# ---- one source of truth ----------------------------------------------------------------------

def test_ledger_entries_record_the_one_code_version(fitted):
    from delphi.version import code_version

    entry = json.loads((fitted[0] / "ledger.jsonl").read_text().splitlines()[0])
    assert entry["code_version"] == code_version() and entry["schema_version"] == 2


def test_sha256_and_json_helpers(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"delphi" * 500_000)  # more than one read block
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    obj = {"a": [1.5, None, "x"], "b": {"c": [{"d": 1}], "e": []}, "f": 2}
    text = json_text(obj)
    assert json.loads(text) == obj and '"a": [1.5, null, "x"]' in text
    with pytest.raises(ValueError):
        json_text({"a": math.nan})
    atomic_write_json(tmp_path / "o.json", obj)
    assert json.loads((tmp_path / "o.json").read_text()) == obj and not list(tmp_path.glob("*.tmp"))


def test_runs_table_rows_have_one_definition(tmp_path):
    """collect (runs.csv) and the report's table without runs.csv build the same row of a run."""
    from delphi.fit.runs_table import RUN_COLUMNS, SHAPE_COLUMNS, summary_row
    from delphi.report.suite import RunData, _table_from_summaries
    from delphi.sweep.results import collect

    suite = _suite_spec(tmp_path / "suite", None)
    spec = suite.grid_specs()[0]
    run = tmp_path / "suite" / "runs" / spec.name
    run.mkdir(parents=True)
    (run / "run.json").write_text(spec.to_json())
    summary = {"name": spec.name, "status": "completed", "budget": spec.budget, "flops": spec.flops,
               "params": spec.shape.num_params, "tokens": spec.tokens, "loss": 3.5, "bpb": 1.2,
               "final_train_loss": 3.4, "tags": {"role": "grid"},
               "eval": {"domains": {"prose": {"loss": 3.4, "bpb": 1.1}, "code": {"loss": 3.6, "bpb": 1.3}}}}
    (run / "summary.json").write_text(json.dumps(summary))
    row = summary_row(summary, json.loads(spec.to_json()))
    assert list(row)[:len(RUN_COLUMNS)] == RUN_COLUMNS
    assert set(SHAPE_COLUMNS) <= set(row) and row["loss/code"] == 3.6 and row["role"] == "grid"
    collected = collect(run.parent).iloc[0].to_dict()
    rebuilt = _table_from_summaries({spec.name: RunData(spec.name, run, spec_dict=json.loads(spec.to_json()),
                                                        summary=summary)}).iloc[0].to_dict()
    for k, v in row.items():
        for got in (collected[k], rebuilt[k]):
            assert got == v or (v is None and pd.isna(got)), k


V1_HELDOUT = "isoflop-1e+13-d80-L1-B62-cpu-heldout-s0"
V1_GRID_RUN = "isoflop-1e+12-d48-L1-B13-cpu"


def test_a_suite_directory_written_before_schema_versions_verifies_checks_and_reports(tmp_path):
    from delphi.forecast.check import check_suite
    from delphi.forecast.ledger import Ledger
    from delphi.report import build_report
    from delphi.report.suite import read_suite_dir

    root = tmp_path / "tiny"
    shutil.copytree(SUITE_V1, root)
    assert Ledger(root / "ledger.jsonl").verify().ok
    recorded = json.loads((root / "check.json").read_text())["results"][0]
    result = check_suite(root)  # today's check of the old ledger and the old held-out summary
    (row,) = result["results"]
    assert (row["run"], row["status"], row["inside"]) == (V1_HELDOUT, "scored", True)
    assert row["forecast"] == pytest.approx(recorded["forecast"], rel=1e-12)
    assert row["residual_pct"] == pytest.approx(recorded["residual_pct"], rel=1e-9)
    suite = read_suite_dir(root)
    assert suite.name == "tiny" and set(suite.runs) == {V1_HELDOUT, V1_GRID_RUN}
    paths = build_report(root)
    assert {"figure:isoflop", "figure:allocation", "figure:loss_law"} <= set(paths)
    md = (root / "report.md").read_text()
    assert "3.1176" in md and "3.1198" in md  # the registered forecast and the held-out actual


def test_a_run_written_before_schema_versions_loads_and_trains(tmp_path, one_thread):
    from delphi.cli import main
    from delphi.config import RunSpec
    from delphi.sweep.results import collect

    old = SUITE_V1 / "runs" / V1_GRID_RUN
    spec = RunSpec.from_dict(json.loads((old / "run.json").read_text()))
    assert (spec.name, spec.shape.hidden_size, spec.batch_size) == (V1_GRID_RUN, 48, 13)
    table = collect(SUITE_V1 / "runs")  # old summaries make today's runs-table rows
    row = table.set_index("name").loc[V1_GRID_RUN]
    assert row["loss"] == pytest.approx(json.loads((old / "summary.json").read_text())["loss"], rel=1e-12)
    assert row["hidden_size"] == 48 and row["role"] == "grid"
    out = tmp_path / "retrain"
    assert main(["train", str(old / "run.json"), "--out", str(out), "--steps", "3", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == V1_GRID_RUN and math.isfinite(summary["loss"])
