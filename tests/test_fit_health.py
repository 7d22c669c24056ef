"""The fit-health gate (`delphi.fit.health`) and its place in the suite pipeline, without training:
synthetic runs tables, a suite parsed from the `tiny` preset, fit → register → check."""

import json

import numpy as np
import pandas as pd
import pytest

from delphi.errors import DelphiError
from delphi.fit import health as H
from delphi.fit.isoflop import fit_bucket, fit_isoflop, fit_law_on_optima

E, A, B, AL, BE = 1.7, 400.0, 1500.0, 0.34, 0.36
G = (AL * A / (BE * B)) ** (1 / (AL + BE))


def grid(ms, budgets=(1e17, 3e17, 1e18, 3e18, 1e19), noise=0.002, seed=0, bump=None, shift=None):
    """Chinchilla-like runs at `ms` × the optimal size of each budget (hidden size ∝ sqrt(N)).
    shift {C: k}: that budget's optimum lies at k× the size (same optimal loss)."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        for m in ms:
            N = G * (C / 6) ** (BE / (AL + BE)) * m
            D = C / (6 * N)
            k = (shift or {}).get(C, 1.0)
            loss = E + A / (N / k) ** AL + B / (D * k) ** BE + rng.normal(0, noise) + (bump or {}).get(C, 0.0)
            rows.append({"name": f"r{len(rows)}", "status": "completed", "budget": C, "flops": C, "params": N,
                         "tokens": D, "hidden_size": round(64 * m ** 0.5), "loss": loss})
    return pd.DataFrame(rows)


def health_of(t, factor=10.0, target=1e20):
    iso = fit_isoflop(t, "loss")
    law = fit_law_on_optima(iso, bootstrap=300)
    return H.fit_health(iso, law, table=t, target_compute=target, factor=factor, bootstrap=300)


def by_name(h):
    return {c.name: c for c in h.checks}


def test_a_well_centred_two_decade_grid_passes():
    h = health_of(grid(np.geomspace(0.25, 4, 7)))
    assert h.status == "pass", h.warnings
    assert h.advice() == []
    d = h.to_dict()
    assert d["thresholds"]["min_side_runs"] == 2 and len(d["checks"]) == 6 and d["flags"] == []
    assert H.health_lines(d) == ["fit health: pass (vertices bracketed, range, slope, leave-one-out, backtest, data)"]


def test_off_centre_vertices_say_which_budgets_and_which_way():
    t = grid(np.geomspace(2, 16, 5))  # every run larger than optimal: optima beyond the narrowest width
    h = health_of(t)
    c = by_name(h)["bracketing"]
    assert c.status == "warn" and "beyond the narrowest width" in c.summary
    advice = h.advice()
    assert advice[0].startswith("add narrower widths at budgets 1e+17, 3e+17, 1e+18, 3e+18, 1e+19")
    assert len(advice) <= 2
    iso = fit_isoflop(t, "loss")
    narrowest = int(t["hidden_size"].min())
    at_edge = H._bracketing(iso, narrowest_width=narrowest)
    assert at_edge.advice.startswith("at budgets 1e+17, 3e+17, 1e+18, 3e+18, 1e+19 the optimum is at or beyond "
                                     f"the narrowest width, {narrowest}, and no narrower width exists")
    wide = health_of(grid(np.geomspace(1 / 16, 0.5, 5)))
    assert wide.advice()[0].startswith("add wider widths")


def test_per_side_counts_and_one_sided_vertices():
    b = fit_bucket(1e18, [1e9, 2e9, 4e9, 8e9, 1.6e10], [1, 1, 1, 1, 1], [3.0, 2.9, 2.85, 2.86, 2.95],
                   widths=[128, 96, 64, 48, 32])
    assert (b.n_below, b.n_above) == (3, 2) and H.bucket_problem(b) is None
    assert "bracketed (3 wider and 2 narrower runs)" in H.bucket_line(b)
    x = np.array([9.0, 9.3, 9.6, 9.9, 10.2])  # the vertex at 10.0: one run (10.2) beyond it
    one = fit_bucket(1e18, 10 ** x, [1] * 5, 2.9 + 0.5 * (x - 10.0) ** 2, widths=[128, 96, 64, 48, 32])
    assert one.n_above == 1 and "vertex_one_sided" in one.flags
    assert H.bucket_problem(one) == ("only 1 run narrower than the optimum (narrowest width 32)", "narrower")
    assert H.bucket_line(one).endswith("add narrower widths at this budget")
    # At the narrowest width a model can have (its head dim), the advice says so instead.
    at_edge = H.bucket_line(one, narrowest_width=32)
    assert "add narrower" not in at_edge
    assert at_edge.endswith("no narrower width exists (widths are multiples of the head dim, 32): make the "
                            "narrowest models smaller (a smaller head dim, fewer layers) or move the budgets up")
    assert H.bucket_line(one, narrowest_width=16).endswith("add narrower widths at this budget")


def test_a_range_shorter_than_the_extrapolation_warns():
    t = grid(np.geomspace(0.25, 4, 7), budgets=(1e17, 1.5e17, 2e17, 3e17, 5e17))
    c = by_name(health_of(t, factor=30.0, target=1.5e19))["range"]
    assert c.status == "warn" and c.detail["needed"] == pytest.approx(np.log10(30))
    assert c.advice.startswith("add budgets below 1e+17")


def test_slope_steepening_and_stability():
    C = np.array([1e17, 3e17, 1e18, 3e18, 1e19])
    flattening = E + 50 * C ** -0.1
    assert H._slope(C, C, flattening).status == "pass"
    lc = np.log10(C / 1e17)
    steepening = 3.0 * np.exp(-0.02 * lc - 0.03 * lc ** 2)  # |d log L/d log C| grows with C
    c = H._slope(C, C, steepening)
    assert c.status == "warn" and "still steepens" in c.summary and c.detail["steepening_ratio"] > 1.25
    assert c.advice.startswith("add budgets above 1e+19")
    w = H.local_slopes(C, steepening)
    assert len(w) == 3 and w[0]["flops_low"] == pytest.approx(1e17)
    assert H._slope(C[:3], C[:3], flattening[:3]).status == "warn"  # too few optima for two windows


def test_leave_one_out_and_backtest_catch_a_budget_off_the_law():
    t = grid(np.geomspace(0.25, 4, 7), bump={1e19: -0.08})  # the largest budget falls well below the law
    checks = by_name(health_of(t))
    assert checks["backtest"].status == "warn"
    assert checks["backtest"].detail["residual_pct"] < -1
    assert checks["leave-one-out"].status == "warn"
    assert checks["leave-one-out"].detail["budget_dropped"] == 1e19
    assert "add budgets above 1e+19" in checks["leave-one-out"].advice


def test_backtest_catches_an_allocation_law_that_drifts_off_the_optimum():
    t = grid(np.geomspace(0.25, 4, 9), shift={1e19: 4.0})  # the largest budget's optimum: 4x the size
    c = by_name(health_of(t))["backtest"]
    assert abs(c.detail["residual_pct"]) <= 1  # the optimum's loss is on the law ...
    assert c.detail["tokens_ratio"] > 3  # ... but the allocation law gives ~4x its tokens
    assert c.detail["placed_residual_pct"] > 1
    assert c.status == "warn" and "allocation law drifts" in c.advice
    assert "a run placed by the allocation law" in c.summary


def test_too_few_budgets_for_a_backtest_warn_with_advice():
    t = grid(np.geomspace(0.25, 4, 7), budgets=(1e17, 1e18, 1e19, 1e20))
    c = by_name(health_of(t, target=1e21))["backtest"]
    assert c.status == "warn" and c.advice == "add budgets (at least 5 with an optimum)"


def test_an_off_centre_grid_names_the_cause_when_the_law_fails():
    rows = []
    for i, C in enumerate((1e17, 3e17, 1e18, 3e18, 1e19)):
        # exact parabolas whose vertices lie past the largest token count and rise with compute
        x = np.log10([1e9, 2e9, 4e9]) + 0.3 * i
        xs, lmin = x.max() + 0.4, 2.0 + 0.1 * i
        for xi in x:
            rows.append({"budget": C, "flops": C, "params": C / (6 * 10 ** xi), "tokens": 10 ** xi,
                         "loss": lmin + 0.5 * (xi - xs) ** 2})
    iso = fit_isoflop(pd.DataFrame(rows), "loss")
    with pytest.raises(DelphiError) as e:
        fit_law_on_optima(iso, bootstrap=100)
    msg = str(e.value)
    assert "optima sit at the edge of the width range" in msg and "beyond the narrowest width" in msg
    assert "1e+17, 3e+17, 1e+18, 3e+18, 1e+19" in msg
    assert msg.index("edge of the width range") < msg.index("fit its negative")  # the real cause comes first


# ---- the pipeline's pieces, no training ---------------------------------------------------------

def _suite(tmp_path, compute="total", ceiling=None):
    from delphi.sweep.suite import parse_suite, preset_text

    text = preset_text("tiny")
    assert 'ceiling = "unigram"' in text
    text = text.replace('ceiling = "unigram"', "" if ceiling is None else f"ceiling = {ceiling}")
    text = text.replace('\n\n[executor]', f'\ncompute = "{compute}"\n\n[executor]')
    assert f'compute = "{compute}"' in text
    return parse_suite(text, out_dir=str(tmp_path / "suite"))


def _grid_table(suite, scale=1.0):
    rows = []
    for spec in suite.grid_specs():
        s, D = spec.shape, spec.tokens
        N = s.num_params
        loss = 2.0 + scale * (40 / N ** 0.3 + 400 / D ** 0.3)
        rows.append({"name": spec.name, "role": "grid", "status": "completed", "budget": spec.budget,
                     "flops": spec.flops, "params": N, "tokens": D, "hidden_size": s.hidden_size,
                     "num_layers": s.num_layers, "vocab_size": s.vocab_size, "seq_len": s.seq_len, "loss": loss})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("compute", ["total", "non-embedding"])
def test_fit_register_check_carry_health_and_compute(tmp_path, compute):
    from delphi.forecast.check import check_suite, format_check
    from delphi.forecast.ledger import Ledger
    from delphi.sweep.pipeline import fit_suite, register_heldout

    suite = _suite(tmp_path, compute)
    d = tmp_path / "suite"
    d.mkdir()
    csv = d / "fit-input.csv"
    _grid_table(suite).to_csv(csv, index=False)
    fit = fit_suite(suite, csv)
    rec = fit["record"]
    assert rec["compute"] == compute and rec["settings"]["compute"] == compute
    assert rec["health"]["status"] in ("pass", "warn") and len(rec["health"]["checks"]) == 6
    json.dumps(rec, allow_nan=False)  # fit.json stays strict JSON
    specs = register_heldout(suite, d, fit, progress=False)
    (entry,) = Ledger(d / "ledger.jsonl").read()
    assert entry["fit_settings"]["compute"] == compute
    assert entry["forecast"]["compute_definition"] == compute
    assert entry["health"] == {k: rec["health"][k] for k in ("status", "warnings", "advice", "flags")}
    if compute == "total":
        assert entry["forecast"]["compute"] == entry["forecast"]["flops"]
    else:
        assert entry["forecast"]["compute"] < entry["forecast"]["flops"]
    # registering again with the same fit and compute adds nothing, nor does sending metrics elsewhere
    register_heldout(suite, d, fit, progress=False)
    assert len(Ledger(d / "ledger.jsonl").read()) == 1
    import dataclasses

    from delphi.config import TrackingSpec

    register_heldout(dataclasses.replace(suite, tracking=TrackingSpec(backends=("tensorboard",))), d, fit,
                     progress=False)
    assert len(Ledger(d / "ledger.jsonl").read()) == 1
    res = check_suite(d)
    assert res["results"][0]["fit_health"] == entry["health"]
    text = format_check(res)
    if entry["health"]["status"] == "warn":
        assert "registered with fit-health warnings" in text
    assert specs[0].name == res["results"][0]["run"]


def test_fit_with_a_ceiling_records_its_form_and_h(tmp_path):
    from delphi.forecast.ledger import Ledger
    from delphi.sweep.pipeline import fit_suite, register_heldout

    suite = _suite(tmp_path, ceiling=9.5)
    d = tmp_path / "suite"
    d.mkdir()
    csv = d / "fit-input.csv"
    _grid_table(suite, scale=0.1).to_csv(csv, index=False)
    fit = fit_suite(suite, csv)
    rec = fit["record"]
    assert rec["loss_law"]["ceiling"] == 9.5 and rec["loss_law"]["form"] == "1/(1/H + C^alpha/A)"
    assert rec["settings"]["ceiling"] == {"H": 9.5, "source": "suite file"}
    register_heldout(suite, d, fit, progress=False)
    (entry,) = Ledger(d / "ledger.jsonl").read()
    assert entry["fit_settings"]["form"] == "1/(1/H + C^alpha/A)" and entry["fit_settings"]["ceiling"]["H"] == 9.5
    assert entry["forecast"]["loss"] == pytest.approx(float(fit["law"].predict(entry["forecast"]["compute"])))


def test_check_prints_registered_warnings():
    from delphi.forecast.check import health_warning_lines

    h = {"status": "warn", "warnings": ["range: the fit spans 0.50 decades"], "advice": ["add budgets below 1e+17"]}
    lines = health_warning_lines([{"run": "a", "fit_health": h}, {"run": "b", "fit_health": h},
                                  {"run": "c", "fit_health": None}])
    assert lines[0] == "forecasts registered with fit-health warnings (a, b):"
    assert "    to change: add budgets below 1e+17" in lines


def test_budget_lines_report_each_budget_once_its_runs_finish(tmp_path):
    from delphi.sweep.pipeline import budget_lines

    suite = _suite(tmp_path)
    runs = tmp_path / "runs"
    table = _grid_table(suite).set_index("name")
    groups = {}
    for spec in suite.grid_specs():
        groups.setdefault(spec.budget, []).append(spec)
    first, second = list(groups)[:2]
    for spec in groups[first] + groups[second][:-1]:  # the second budget's last run is still training
        r = table.loc[spec.name]
        (runs / spec.name).mkdir(parents=True)
        (runs / spec.name / "summary.json").write_text(json.dumps(
            {"name": spec.name, "status": "completed", "budget": spec.budget, "tokens": float(r["tokens"]),
             "params": float(r["params"]), "hidden_size": int(r["hidden_size"]), "loss": float(r["loss"])}))
    reported: set = set()
    lines = budget_lines(groups, runs, "loss", reported)
    assert reported == {first} and len(lines) == 1 and lines[0].startswith(f"budget {first:.3g}:")
    assert budget_lines(groups, runs, "loss", reported) == []  # reported once
    last = groups[second][-1]
    (runs / last.name).mkdir(parents=True)
    (runs / last.name / "summary.json").write_text(json.dumps({"name": last.name, "status": "diverged"}))
    lines = budget_lines(groups, runs, "loss", reported)
    assert len(lines) == 1 and "1 of" in lines[0] and "did not complete" in lines[0]


def test_suite_compute_key_is_checked(tmp_path):
    from delphi.sweep.suite import parse_suite, preset_text

    assert _suite(tmp_path).fit.compute == "total"
    bad = preset_text("tiny").replace('\n\n[executor]', '\ncompute = "flops"\n\n[executor]')
    assert 'compute = "flops"' in bad
    with pytest.raises(DelphiError, match=r"\[fit\] compute must be one of total, non-embedding, deepseek-m"):
        parse_suite(bad)


def test_report_shows_the_verdict_and_the_checks(tmp_path):
    from delphi.report import build_report
    from delphi.sweep.pipeline import fit_suite

    suite = _suite(tmp_path, "non-embedding")
    d = tmp_path / "suite"
    d.mkdir()
    _grid_table(suite).to_csv(d / "runs.csv", index=False)
    fit = fit_suite(suite, d / "runs.csv")
    (d / "fit.json").write_text(json.dumps(fit["record"], indent=2))
    md = (build_report(d)["markdown"]).read_text()
    assert "Fit health" in md and "what to change" in md
    for name in ("bracketing", "range", "slope", "leave-one-out", "backtest"):
        assert f"| {name} |" in md
    assert "`non-embedding` compute" in md
