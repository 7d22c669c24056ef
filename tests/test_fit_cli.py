"""`delphi fit ...`: the JSON contract other tools rely on, tables, plots, errors, start-up."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from delphi.cli import main

E, A, B, AL, BE = 1.7, 400.0, 1500.0, 0.34, 0.36


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    G = (AL * A / (BE * B)) ** (1 / (AL + BE))
    rows = []
    for C in (1e17, 3e17, 1e18, 3e18, 1e19):
        for m in np.geomspace(0.25, 4, 7):
            N = G * (C / 6) ** (BE / (AL + BE)) * m
            D = C / (6 * N)
            rows.append({"name": f"r{len(rows)}", "status": "completed", "budget": C, "flops": C * 1.01,
                         "params": N, "tokens": D, "loss": E + A / N ** AL + B / D ** BE + rng.normal(0, 0.003)})
    rows.append({"name": "boom", "status": "diverged", "budget": 1e17, "flops": 1e17, "params": 1e7,
                 "tokens": 1e9, "loss": None})
    p = tmp_path_factory.mktemp("fit") / "runs.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_isoflop_json_contract(runs_csv, capsys):
    code, out, err = run(capsys, "fit", "isoflop", str(runs_csv), "--json")
    assert code == 0
    d = json.loads(out)
    assert len(d["buckets"]) == 5
    for b in d["buckets"]:
        assert {"flops", "n_runs", "optimal_tokens", "optimal_params", "optimal_loss", "flags"} <= set(b)
        assert isinstance(b["flags"], list)
    assert d["buckets"][0]["n_runs"] == 7  # the diverged run is excluded...
    assert "excluded 1 run: 1 diverged" in err  # ...and counted
    for k in ("tokens", "params"):
        assert {"A", "alpha"} <= set(d["allocation"][k])
    assert d["allocation"]["tokens"]["alpha"] + d["allocation"]["params"]["alpha"] == pytest.approx(1, abs=0.01)


def test_loss_law_json_contract_from_runs_optima_and_isoflop_json(runs_csv, capsys, tmp_path):
    code, out, _ = run(capsys, "fit", "loss-law", str(runs_csv), "--predict", "1e21", "1e22", "--json",
                       "--bootstrap", "500", "--overtrain", "2")
    assert code == 0
    d = json.loads(out)
    assert {"E", "A", "alpha", "predictions"} <= set(d)
    assert [p["flops"] for p in d["predictions"]] == [1e21, 1e22]
    for p in d["predictions"]:
        assert set(p) == {"flops", "loss", "ci_low", "ci_high", "loo_min", "loo_max"}
        assert p["ci_low"] < p["loss"] < p["ci_high"] and p["loo_min"] <= p["loss"] <= p["loo_max"]
    assert d["off_optimal"]["table"][0]["extra_compute"] > 0
    assert "resampled IsoFLOP vertices" in d["interval"]  # from the runs, the vertices' spread enters
    # The same optima given as a flops/loss table, and as the isoflop JSON, give the same law (and,
    # without the runs, an interval from the law's own bootstrap only).
    _, iso_out, _ = run(capsys, "fit", "isoflop", str(runs_csv), "--json")
    (tmp_path / "iso.json").write_text(iso_out)
    optima = pd.DataFrame({"flops": [b["flops"] for b in json.loads(iso_out)["buckets"]],
                           "loss": [b["optimal_loss"] for b in json.loads(iso_out)["buckets"]]})
    optima.to_csv(tmp_path / "optima.csv", index=False)
    for src in ("iso.json", "optima.csv"):
        code, out2, _ = run(capsys, "fit", "loss-law", str(tmp_path / src), "--predict", "1e21", "1e22", "--json",
                            "--bootstrap", "500")
        d2 = json.loads(out2)
        assert code == 0 and (d2["E"], d2["A"], d2["alpha"]) == pytest.approx((d["E"], d["A"], d["alpha"]), rel=1e-9)
        assert "vertices" not in d2["interval"]
        for p2, p1 in zip(d2["predictions"], d["predictions"]):
            same = ("flops", "loss", "loo_min", "loo_max")
            assert {k: p2[k] for k in same} == pytest.approx({k: p1[k] for k in same}, rel=1e-9)
            assert p2["ci_low"] < p2["loss"] < p2["ci_high"]


def test_suite_directory_input(runs_csv, capsys, tmp_path):
    """A suite directory of summary.json files gives the same fit as the flat table."""
    for r in pd.read_csv(runs_csv).to_dict("records"):
        d = tmp_path / "suite" / "runs" / r["name"]
        d.mkdir(parents=True)
        loss = None if r["status"] != "completed" else r["loss"]
        summary = {**r, "loss": loss, "eval": {"macro_loss": loss, "domains": {"prose": {"loss": loss, "bpb": 1.0}}}}
        (d / "summary.json").write_text(json.dumps(summary))
    _, flat, _ = run(capsys, "fit", "isoflop", str(runs_csv), "--json")
    code, suite, err = run(capsys, "fit", "isoflop", str(tmp_path / "suite"), "--json")
    assert code == 0
    a_suite, a_flat = json.loads(suite)["allocation"], json.loads(flat)["allocation"]
    for k in ("tokens", "params"):  # same runs, other order: equal up to rounding
        assert a_suite[k] == pytest.approx(a_flat[k], rel=1e-9)
    assert "1 diverged" in err
    code, out, _ = run(capsys, "fit", "isoflop", str(tmp_path / "suite"), "--json", "--metric", "loss/prose")
    assert code == 0 and json.loads(out)["metric"] == "loss/prose"


def test_parametric_json_contract(runs_csv, capsys):
    code, out, _ = run(capsys, "fit", "parametric", str(runs_csv), "--json", "--bootstrap", "20",
                       "--optimal", "1e21")
    assert code == 0
    r = json.loads(out)
    assert {"E", "A", "B", "alpha", "beta", "huber_loss", "ci"} <= set(r)
    assert set(r["ci"]) == {"E", "A", "B", "alpha", "beta"}
    assert r["alpha"] == pytest.approx(AL, abs=0.05) and r["beta"] == pytest.approx(BE, abs=0.05)
    opt = r["compute_optimal"][0]
    assert 6 * opt["params"] * opt["tokens"] == pytest.approx(1e21)


def test_tables_and_plots(runs_csv, capsys, tmp_path, plot_check):
    code, out, _ = run(capsys, "fit", "isoflop", str(runs_csv), "--plot", str(tmp_path / "iso.png"))
    assert code == 0 and "D*(C) =" in out and "N*(C) =" in out and "sum of exponents" in out
    code, out, _ = run(capsys, "fit", "loss-law", str(runs_csv), "--predict", "1e21", "--bootstrap", "200",
                       "--plot", str(tmp_path / "law.png"))
    assert code == 0 and "E =" in out and "1e+21" in out and "pure power law" in out
    for png in ("iso.png", "law.png"):
        plot_check(tmp_path / png)
    small = pd.read_csv(runs_csv).iloc[:20]  # a parametric fit needs only params/tokens/loss
    small.to_csv(tmp_path / "small.csv", index=False)
    code, out, _ = run(capsys, "fit", "parametric", str(tmp_path / "small.csv"), "--bootstrap", "0",
                       "--plot", str(tmp_path / "par.png"))
    assert code == 0 and "alpha =" in out
    plot_check(tmp_path / "par.png")


@pytest.mark.parametrize("argv, message", [
    (["fit", "isoflop", "missing.csv"], "does not exist"),
    (["fit", "loss-law", "RUNS", "--predict", "lots"], "--predict: 'lots' is not a number"),
    (["fit", "loss-law", "RUNS", "--predict", "0"], "must be positive"),
    (["fit", "loss-law", "RUNS", "--bootstrap", "-3"], "--bootstrap must be >= 0"),
    (["fit", "isoflop", "RUNS", "--metric", "bpb"], "missing column(s) 'bpb'"),
])
def test_errors_are_one_line_exit_2(runs_csv, capsys, argv, message):
    argv = [str(runs_csv) if a == "RUNS" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_overtrain_needs_runs(tmp_path, capsys):
    pd.DataFrame({"flops": [1e18, 3e18, 1e19, 3e19], "loss": [3.2, 3.0, 2.85, 2.75]}).to_csv(tmp_path / "o.csv", index=False)
    code, _, err = run(capsys, "fit", "loss-law", str(tmp_path / "o.csv"), "--overtrain", "2")
    assert code == 2 and "--overtrain needs the runs" in err


def test_fit_does_not_import_torch(runs_csv):
    code = ("import sys; from delphi.cli import main; rc = main(['fit', 'isoflop', sys.argv[1], '--json']); "
            "assert rc == 0; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(runs_csv)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_loss_law_without_predictions(runs_csv, capsys):
    """No --predict: the law and its table, no prediction rows (and no crash on an empty request)."""
    code, out, err = run(capsys, "fit", "loss-law", str(runs_csv), "--bootstrap", "100")
    assert code == 0, err
    assert "loss law L*(C) = E + A·C^-alpha on 5 optima of 'loss'" in out
    assert re.search(r"E = \d+\.\d+ +A = [\d.]+ +alpha = 0\.\d+", out)
    code, out, _ = run(capsys, "fit", "loss-law", str(runs_csv), "--bootstrap", "100", "--json")
    assert code == 0 and json.loads(out)["predictions"] == []
