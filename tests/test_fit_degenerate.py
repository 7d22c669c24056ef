"""Degenerate but well-formed data: the fits refuse it or say what is wrong with machine-readable
flags (`delphi.fit.flags`) and the line a person reads, and healthy data gets no flag."""

import json

import numpy as np
import pandas as pd
import pytest

from delphi.cli import main
from delphi.errors import DelphiError
from delphi.fit import health as H
from delphi.fit.isoflop import fit_bucket, fit_isoflop, fit_law_on_optima
from delphi.fit.loss_law import fit_loss_law
from delphi.fit.parametric import fit_parametric
from delphi.fit.runs_table import validate_table

E, A, B, AL, BE = 1.7, 400.0, 1500.0, 0.34, 0.36
G = (AL * A / (BE * B)) ** (1 / (AL + BE))
BUDGETS = (1e17, 3e17, 1e18, 3e18, 1e19)
# A small grid of starts for the parametric fit (the flags do not depend on the grid).
QUICK = {"a": (0.0, 5.0), "b": (0.0, 5.0), "e": (0.0, 0.5), "alpha": (0.0, 0.5), "beta": (0.0, 0.5)}


def grid(ms=np.geomspace(0.25, 4, 7), noise=0.003, seed=0, budgets=BUDGETS):
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        for m in ms:
            N = G * (C / 6) ** (BE / (AL + BE)) * m
            D = C / (6 * N)
            rows.append({"name": f"r{len(rows)}", "status": "completed", "budget": C, "flops": C, "params": N,
                         "tokens": D, "hidden_size": round(64 * m ** 0.5),
                         "loss": E + A / N ** AL + B / D ** BE + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def healthy():
    return grid()


def test_healthy_data_gets_no_flag(healthy):
    iso = fit_isoflop(healthy)
    assert iso.flag_codes() == [] and iso.to_dict()["flags"] == []
    assert all(b.curvature_t > 50 for b in iso.buckets)
    law = fit_law_on_optima(iso, bootstrap=200)
    assert law.flags == () and law.to_dict()["flags"] == []
    h = H.fit_health(iso, law, table=healthy, target_compute=1e20, factor=10.0, bootstrap=200)
    data = {c.name: c for c in h.checks}["data"]
    assert data.status == "pass" and h.to_dict()["flags"] == []
    par = fit_parametric(healthy["params"], healthy["tokens"], healthy["loss"], bootstrap=0, grid=QUICK)
    assert par.alpha == pytest.approx(AL, abs=0.03) and par.beta == pytest.approx(BE, abs=0.03)
    assert par.flags == () and par.to_dict()["flags"] == []


# ---- the runs table: non-positive losses, repeated runs ------------------------------------------

def test_non_positive_losses_are_refused_naming_the_rows(healthy, tmp_path, capsys):
    t = healthy.copy()
    t.loc[3, "loss"], t.loc[9, "loss"] = -1.0, 0.0
    with pytest.raises(DelphiError) as e:
        validate_table(t, where="runs.csv")
    msg = str(e.value)
    assert msg.startswith("runs.csv: row 4 (run r3) = -1.0, row 10 (run r9) = 0.0: 'loss' must be positive")
    assert "\n" not in msg
    p = tmp_path / "neg.csv"
    t.to_csv(p, index=False)
    code, _, err = run(capsys, "fit", "isoflop", str(p))
    assert code == 2 and "row 4 (line 5) (run r3) = -1.0" in err and "must be positive" in err


def test_repeated_rows_are_removed_with_a_note_and_flag(tmp_path, capsys):
    # One run per side beyond the optimum at every budget: vertex_one_sided. Doubled rows would
    # put two runs on that side and hide the flag.
    t = grid(ms=(0.25, 0.4, 0.63, 0.8, 1.6), noise=0.0005)
    iso = fit_isoflop(t)
    assert "vertex_one_sided" in iso.flag_codes()
    doubled = pd.concat([t, t], ignore_index=True)
    v = validate_table(doubled, where="runs.csv")
    assert len(v) == len(t) and len(v.attrs["duplicates"]) == len(t)
    iso2 = fit_isoflop(v)
    assert [b.n_runs for b in iso2.buckets] == [5] * 5
    assert [b.flags for b in iso2.buckets] == [b.flags for b in iso.buckets]  # the bracketing flags are back
    (flag,) = iso2.flags
    assert flag.code == "duplicate_runs"
    assert flag.text.startswith(f"removed {len(t)} repeated rows (same run name, or the same sizes and loss to "
                                "the last digit): row 26 repeats row 1, row 27 repeats row 2")
    # Same sizes and loss under another name: a copied row too.
    renamed = pd.concat([t, t.iloc[:1].assign(name="copy")], ignore_index=True)
    assert validate_table(renamed).attrs["duplicates"] == [{"kept": "row 1", "dropped": ["row 26"], "name": "r0"}]
    # Through the CLI: the warning on stderr, the flag in the JSON, the runs counted once.
    p = tmp_path / "dup.csv"
    doubled.to_csv(p, index=False)
    code, out, err = run(capsys, "fit", "isoflop", str(p), "--json")
    assert code == 0 and json.loads(out)["flags"][0]["code"] == "duplicate_runs"
    assert f"warning: removed {len(t)} repeated rows" in err and "[duplicate_runs]" in err
    code, out, err = run(capsys, "fit", "isoflop", str(p))
    assert code == 0 and f"({len(t)} runs, 5 buckets)" in out and "warning: removed" in err


def test_one_run_name_with_two_results_is_refused(healthy):
    t = pd.concat([healthy, healthy.iloc[[2]].assign(loss=9.9)], ignore_index=True)
    with pytest.raises(DelphiError) as e:
        validate_table(t, where="runs.csv")
    assert str(e.value).startswith("runs.csv: run 'r2' appears in row 3 and row 36 with different values "
                                   f"(loss {float(healthy['loss'].iloc[2])!r} vs 9.9); keep one row per run")


# ---- IsoFLOP buckets: flat curves, single runs ---------------------------------------------------

def test_a_flat_table_gives_no_allocation_law(tmp_path, capsys):
    t = grid().assign(loss=3.0)  # every run the same loss: a is float round-off, of either sign
    iso = fit_isoflop(t)
    assert iso.tokens_law is None and not iso.used
    assert {b.flags for b in iso.buckets} == {("flat_curve",)}
    assert all(b.skipped.startswith("flat: the loss does not change across the runs") for b in iso.buckets)
    (flag,) = iso.flags
    assert flag.code == "no_allocation_law"
    assert flag.text.startswith("no allocation law: 0 of 5 budgets give an optimum and the law needs 2: flat "
                                "(curvature within the runs' noise) at 1e+17, 3e+17, 1e+18, 3e+18, 1e+19; the loss "
                                "barely changes across the sizes there: widen the range of widths")
    with pytest.raises(DelphiError, match="no allocation law: 0 of 5 budgets"):
        iso.predict(1e21)
    p = tmp_path / "flat.csv"
    t.to_csv(p, index=False)
    code, out, err = run(capsys, "fit", "isoflop", str(p))
    assert code == 0 and "rmse" not in out
    assert "allocation laws: none (fewer than two budgets with a minimum; see the warning below)" in out
    assert "warning: no allocation law" in err and "[no_allocation_law]" in err
    code, out, _ = run(capsys, "fit", "isoflop", str(p), "--json")
    d = json.loads(out)
    assert d["allocation"] is None and d["buckets"] == [] and [f["code"] for f in d["flags"]] == ["no_allocation_law"]
    assert d["skipped"][0]["flags"] == ["flat_curve"]
    code, _, err = run(capsys, "fit", "loss-law", str(p))
    assert code == 2 and "no budget gave an optimum (flat (curvature within the runs' noise)" in err


def test_noise_without_curvature_is_flat():
    t = grid().assign(loss=3.0 + np.random.default_rng(1).normal(0, 0.003, 35))
    iso = fit_isoflop(t)
    assert iso.tokens_law is None and set(iso.flag_codes()) <= {"flat_curve", "no_minimum", "no_allocation_law"}
    b = next(b for b in iso.buckets if b.flags == ("flat_curve",) and b.coeffs[0] > 0)
    assert "is not distinguishable from the runs' noise" in b.skipped and b.curvature_t < 2.78
    assert b.to_dict()["curvature"]["noise_dof"] == 4
    # A bucket of 4 runs (1 residual degree of freedom) is judged by the table's noise, not its own.
    few = grid(ms=np.geomspace(0.25, 4, 4))
    assert [b.noise_dof for b in fit_isoflop(few).buckets] == [5] * 5 and fit_isoflop(few).flag_codes() == []


def test_single_runs_per_budget(tmp_path, capsys):
    t = grid().groupby("budget").nth(3).reset_index(drop=True)  # the optimal size only
    iso = fit_isoflop(t)
    assert {b.flags for b in iso.buckets} == {("too_few_runs",)} and iso.tokens_law is None
    assert iso.flags[0].text.endswith("each budget needs >= 3 runs of different sizes (a table of one optimum per "
                                      "budget is fitted with `delphi fit loss-law`)")
    p = tmp_path / "single.csv"
    t.to_csv(p, index=False)
    code, out, err = run(capsys, "fit", "loss-law", str(p), "--bootstrap", "0")
    assert code == 0 and "on 5 optima" in out
    assert "note: every budget has a single run: the rows are read as the optima themselves" in err


def test_budget_line_names_a_flat_budget():
    x = np.linspace(9.0, 10.0, 7)
    b = fit_bucket(1e18, 10 ** x, [1e8] * 7, 3.0 + np.array([1, -1, 1, -1, 1, -1, 1]) * 0.002)
    assert b.flags == ("flat_curve",) and not b.usable
    assert H.bucket_line(b).startswith("budget 1e+18: no optimum (flat: the curve's depth across its runs")


def test_two_budgets_do_not_pretend_a_residual(tmp_path, capsys):
    p = tmp_path / "two.csv"
    grid(budgets=(1e17, 1e18)).to_csv(p, index=False)
    code, out, _ = run(capsys, "fit", "isoflop", str(p))
    assert code == 0 and "through 2 budgets exactly: no residual to judge it by" in out and "rmse" not in out


# ---- the loss law and the parametric fit: rising losses --------------------------------------------

def test_optima_that_rise_between_budgets_are_flagged(tmp_path, capsys):
    C = np.array([1e17, 3e17, 1e18, 3e18, 1e19])
    L = np.array([3.9, 3.5, 3.55, 2.9, 2.7])
    law = fit_loss_law(C, L, bootstrap=0)
    (flag,) = [f for f in law.flags if f.code == "loss_rises"]
    assert flag.text.startswith("loss law: the metric rises with compute (3.55 at 1e+18 > 3.5 at 3e+17)")
    assert flag.detail["rises"] == [{"flops_low": 3e17, "flops_high": 1e18, "low": 3.5, "high": 3.55}]
    with pytest.raises(DelphiError, match="does not decrease with compute"):  # an overall rise: refused as before
        fit_loss_law(C, L[::-1], bootstrap=0)
    p = tmp_path / "optima.csv"
    pd.DataFrame({"flops": C, "loss": L}).to_csv(p, index=False)
    code, out, err = run(capsys, "fit", "loss-law", str(p), "--bootstrap", "0", "--json")
    assert code == 0 and "loss_rises" in [f["code"] for f in json.loads(out)["flags"]]
    assert "warning: loss law: the metric rises with compute" in err


def test_a_rising_optimum_reaches_the_fit_health_gate():
    t = grid()
    t.loc[t["budget"] == 1e18, "loss"] += 0.4  # one budget's curve far above its neighbours
    iso = fit_isoflop(t)
    law = fit_law_on_optima(iso, bootstrap=100)
    h = H.fit_health(iso, law, table=t, target_compute=1e20, factor=10.0, bootstrap=100)
    data = {c.name: c for c in h.checks}["data"]
    assert data.status == "warn" and "the metric rises with compute" in data.summary
    assert data.advice.startswith("re-check the budgets where the optimum rises")
    d = h.to_dict()
    assert "loss_rises" in d["flags"] and d["advice"][0] == data.advice
    lines = H.health_lines(d)
    assert any(x.startswith("  - data: loss law: the metric rises") for x in lines)
    assert lines[-1].startswith("  flags: ") and "loss_rises" in lines[-1]


def test_parametric_fit_on_rising_losses_warns(tmp_path, capsys, monkeypatch):
    from delphi.fit import parametric

    monkeypatch.setattr(parametric, "CHINCHILLA_GRID", QUICK)  # the CLI's grid of starts, made small
    t = grid()
    t["loss"] = 7.0 - t["loss"]  # larger models and more data -> higher loss
    fit = fit_parametric(t["params"], t["tokens"], t["loss"], bootstrap=0, grid=QUICK)
    codes = [f.code for f in fit.flags]
    assert "loss_rises" in codes and "exponent_not_positive" in codes
    rise = next(f for f in fit.flags if f.code == "loss_rises")
    assert rise.text.startswith("the losses rise with compute (log L against log N·D: slope +")
    p = tmp_path / "rising.csv"
    t.to_csv(p, index=False)
    code, out, err = run(capsys, "fit", "parametric", str(p), "--bootstrap", "0")
    assert code == 0 and "L(N, D) = E + A/N^alpha" in out
    code, out, _ = run(capsys, "fit", "parametric", str(p), "--bootstrap", "0", "--json")
    assert {"loss_rises", "exponent_not_positive"} <= {f["code"] for f in json.loads(out)["flags"]}
    assert "warning: the losses rise with compute" in err and "<= 0: the fitted loss does not fall with" in err
    assert "[exponent_not_positive]" in err
    code, _, err = run(capsys, "fit", "parametric", str(p), "--bootstrap", "0", "--optimal", "1e21")
    assert code == 2 and "--optimal: the fit has an exponent <= 0" in err


def test_parametric_flags_implausible_exponents():
    from delphi.fit.parametric import parametric_flags

    N = np.array([1e7, 2e7, 4e7, 1e7, 2e7, 4e7])
    D = np.array([1e9, 1e9, 1e9, 2e9, 2e9, 2e9])
    L = 2 + 1 / N ** 0.3 + 1 / D ** 0.3
    (f,) = parametric_flags(N, D, L, 1.33, 0.5)
    assert f.code == "exponent_implausible" and f.text.startswith("alpha = 1.33 above 1, far steeper than published")
    assert parametric_flags(N, D, L, 0.34, 0.36) == []
