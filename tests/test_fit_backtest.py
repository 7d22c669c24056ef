"""`delphi fit backtest`: the law fitted on the lowest budgets, scored on the higher ones."""

import json

import numpy as np
import pandas as pd
import pytest

from delphi.cli import main
from delphi.errors import DelphiError
from delphi.fit.backtest import CHINCHILLA_BUDGETS, backtest, snap_budgets
from delphi.fit.isoflop import fit_isoflop, huber_parabola, huber_parabolas
from delphi.fit.runs_table import validate_table
from pathlib import Path

CHINCHILLA = Path(__file__).parent / "data" / "fit" / "chinchilla_epoch_svg_extracted_data.csv"
# L(N, D) = E + A/N^a + B/D^b: its compute-optimal loss is exactly E + K·C^(-ab/(a+b)), so the
# loss law is the right form and the backtest should land.
E, A, B, a, b = 1.8, 400.0, 1000.0, 0.34, 0.37
BUDGETS = np.geomspace(1e18, 1e21, 7)


def synthetic(seed=0, sd=0.005, per=9, curvature=0.0):
    """An IsoFLOP grid around the true optimum; `curvature` bends log-loss away from the law."""
    rng = np.random.default_rng(seed)
    G = (a * A / (b * B)) ** (1 / (a + b))
    rows = []
    for C in BUDGETS:
        n_opt = G * (C / 6) ** (b / (a + b))
        for N in n_opt * np.geomspace(1 / 4, 4, per):
            D = C / (6 * N)
            L = E + A * N ** -a + B * D ** -b + curvature * np.log10(C / BUDGETS[0]) ** 2
            rows.append({"flops": C, "params": N, "tokens": D, "loss": L + rng.normal(0, sd)})
    return pd.DataFrame(rows)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_batched_parabolas_match_the_single_fit():
    rng = np.random.default_rng(0)
    x = rng.uniform(8, 10, (20, 7))
    y = 0.3 * (x - 9) ** 2 + 3 + rng.standard_t(2, (20, 7)) * 0.02
    ref = np.array([huber_parabola(xi, yi) for xi, yi in zip(x, y)])
    assert huber_parabolas(x, y) == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_vertex_resamples_carry_the_bucket_noise():
    quiet, loud = (fit_isoflop(synthetic(sd=sd)) for sd in (0.001, 0.02))
    vq, vl = quiet.bootstrap_optima(200, seed=0), loud.bootstrap_optima(200, seed=0)
    assert vq.shape == (200, len(BUDGETS))
    # At this noise (10x a seed's) some budgets' curvature is not distinguishable from 0: left out as flat.
    assert {b.flags for b in loud.buckets if not b.usable} == {("flat_curve",)}
    both = [i for i, b in enumerate(quiet.used) if b.flops in {u.flops for u in loud.used}]
    assert np.all(np.std(vl, axis=0) > 5 * np.std(vq[:, both], axis=0))
    assert np.array_equal(vq, quiet.bootstrap_optima(200, seed=0))  # deterministic given the seed


def test_right_form_lands_and_covers():
    rows, inside = [], []
    for seed in range(4):
        bt = backtest(synthetic(seed), bootstrap=200, seed=seed)
        rows += [r.residual_pct for r in bt.rows]
        inside += [r.inside for r in bt.rows]
        assert {len(r.fit_budgets) for r in bt.rows} == {4, 5, 6}
    assert np.mean(np.abs(rows)) < 1.5  # per-run noise 0.005 nats on losses of ~2.2
    assert np.mean(inside) >= 0.85  # 95% intervals: near nominal (24 correlated rows)
    for r in bt.rows:
        assert r.ci_low < r.forecast < r.ci_high  # never a zero-width interval


def test_residuals_grow_with_factor_when_the_form_is_wrong():
    # Same grid, nearly noiseless: the right form stays within 0.25% out to 31x ...
    right = backtest(synthetic(0, sd=0.001), bootstrap=0)
    assert max(abs(r.residual_pct) for r in right.rows) < 0.25
    # ... a loss that bends up (+0.01·log10(C/C_min)^2 nats) is under-forecast, more so further out.
    bt = backtest(synthetic(0, sd=0.001, curvature=0.01), bootstrap=0)
    for k in (4, 5):
        res = [r.residual_pct for r in bt.rows if len(r.fit_budgets) == k]  # targets in order of factor
        assert all(np.diff(res) > 0) and res[0] > 0
    assert max(r.residual_pct for r in bt.rows) > 1.0
    summary = [s for s in bt.by_factor()]
    assert summary[-1].mean_abs_residual_pct > summary[0].mean_abs_residual_pct
    assert bt.coverage() is None  # bootstrap 0: no intervals, and no coverage pretends otherwise


def test_json_schema_and_residual_sign(capsys, tmp_path, plot_check):
    path = tmp_path / "runs.csv"
    synthetic(1).to_csv(path, index=False)
    code, out, _ = run(capsys, "fit", "backtest", str(path), "--json", "--bootstrap", "100", "--form", "asymptote",
                       "power", "--plot", str(tmp_path / "bt.png"))
    assert code == 0
    plot_check(tmp_path / "bt.png")
    d = json.loads(out)
    assert {"rows", "coverage", "by_factor", "budgets", "forms", "min_budgets", "confidence"} <= set(d)
    assert len(d["rows"]) == 6 + 6  # each form: windows of the lowest 4, 5, 6 of 7 budgets
    for r in d["rows"]:
        assert {"fit_budgets", "target_budget", "factor", "forecast", "ci_low", "ci_high", "actual",
                "residual_pct", "inside", "form"} <= set(r)
        assert r["factor"] == pytest.approx(r["target_budget"] / max(r["fit_budgets"]))
        # The sign convention of `delphi check`: positive when the run is worse than forecast.
        assert r["residual_pct"] == pytest.approx(100 * (r["actual"] - r["forecast"]) / r["forecast"])
        assert r["inside"] == (r["ci_low"] <= r["actual"] <= r["ci_high"])
    assert set(d["coverage"]) == {"asymptote", "power"}
    code, out, _ = run(capsys, "fit", "backtest", str(path), "--bootstrap", "50")
    assert code == 0 and "coverage:" in out and "resid%" in out


def test_chinchilla_adapter():
    raw = pd.read_csv(CHINCHILLA).rename(columns={"Model Size": "params", "Training FLOP": "flops"})
    raw["tokens"] = 1.0
    t = snap_budgets(validate_table(raw), CHINCHILLA_BUDGETS, tolerance=0.1, recompute_tokens=True)
    assert sorted(t["budget"].unique()) == list(CHINCHILLA_BUDGETS)
    assert t.attrs["excluded"]["off-budget"] == 63 and len(t) == 182
    assert np.allclose(6 * t["params"] * t["tokens"], t["budget"])
    bt = backtest(t, bootstrap=0)
    assert len(bt.budgets) == 9 and len(bt.rows) == 15
    # The compute-optimal loss falls from ~3.04 at 6e18 to ~2.20 at 3e21 FLOPs.
    assert bt.optima[0] == pytest.approx(3.04, abs=0.02) and bt.optima[-1] == pytest.approx(2.20, abs=0.02)


def test_chinchilla_cli(capsys):
    code, out, err = run(capsys, "fit", "backtest", str(CHINCHILLA), "--format", "chinchilla", "--json",
                         "--bootstrap", "100")
    assert code == 0 and "63 off-budget" in err
    d = json.loads(out)
    assert len(d["rows"]) == 15 and d["coverage"]["asymptote"] is not None
    assert all(r["ci_high"] > r["ci_low"] for r in d["rows"])


@pytest.mark.parametrize("argv, message", [
    (["--min-budgets", "1"], "--min-budgets must be at least 2"),
    (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
    (["--budgets", "abc"], "--budgets: 'abc' is not a number"),
    (["--snap-tolerance", "0.1"], "--snap-tolerance needs --budgets"),
    (["--min-budgets", "7"], "needs at least 8"),
])
def test_cli_errors(capsys, tmp_path, argv, message):
    path = tmp_path / "runs.csv"
    synthetic(0).to_csv(path, index=False)
    code, _, err = run(capsys, "fit", "backtest", str(path), *argv)
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_errors_on_bad_input(capsys, tmp_path):
    one = synthetic(0)
    one = one[one["flops"] == BUDGETS[0]]
    with pytest.raises(DelphiError, match="1 budget"):
        backtest(one)
    path = tmp_path / "one.csv"
    one.to_csv(path, index=False)
    code, _, err = run(capsys, "fit", "backtest", str(path))
    assert code != 0 and "1 budget(s) gave an IsoFLOP optimum" in err
    synthetic(0).drop(columns=["tokens"]).to_csv(path, index=False)
    code, _, err = run(capsys, "fit", "backtest", str(path))
    assert code != 0 and "missing column(s) 'tokens'" in err
    pd.read_csv(CHINCHILLA).drop(columns=["Model Size"]).to_csv(path, index=False)
    code, _, err = run(capsys, "fit", "backtest", str(path), "--format", "chinchilla")
    assert code != 0 and "'Model Size'" in err
    with pytest.raises(DelphiError, match="unknown law form"):
        backtest(synthetic(0), forms=("quadratic",))


def bent_allocation(bend: float, k: float = 0.3):
    """Noise-free IsoFLOP parabolas, loss = L*(C) + k·(log10 D − log10 D*(C))², whose optimum
    tokens bend away from a power law: log10 D*(C) = 0.5·log10 C + bend·(log10 C − 18)²."""
    rows = []
    for C in BUDGETS:
        lc = np.log10(C)
        x_opt = 0.5 * lc + bend * (lc - 18) ** 2
        for x in x_opt + np.linspace(-0.6, 0.6, 7):
            loss = E + 50 * C ** -0.15 + k * (x - x_opt) ** 2
            rows.append({"flops": C, "params": C / (6 * 10 ** x), "tokens": 10 ** x, "loss": loss})
    return pd.DataFrame(rows), k


def test_placed_run_lands_on_the_optimum_when_the_allocation_is_a_power_law():
    bt = backtest(bent_allocation(0.0)[0], bootstrap=0, forms=("power",))
    for r in bt.rows:
        assert r.tokens_ratio == pytest.approx(1.0, rel=1e-6)
        assert r.placed_loss == pytest.approx(r.actual, rel=1e-9)
        assert r.placed_residual_pct == pytest.approx(r.residual_pct, abs=1e-6)
        assert r.placed_in_range


def test_placed_run_pays_for_an_allocation_that_bends():
    table, k = bent_allocation(0.05)
    bt = backtest(table, bootstrap=0, forms=("power",))
    lc = np.log10(BUDGETS)
    x_opt = 0.5 * lc + 0.05 * (lc - 18) ** 2
    for r in bt.rows:
        n = len(r.fit_budgets)
        slope, icpt = np.polyfit(lc[:n], x_opt[:n], 1)  # the window's straight line through the true optima
        j = int(np.argmin(np.abs(BUDGETS - r.target_budget)))
        x_hat = icpt + slope * lc[j]
        assert np.log10(r.tokens_ratio) == pytest.approx(x_hat - x_opt[j], abs=1e-6)
        assert r.tokens_ratio < 1  # a straight line under a convex curve: too few tokens, too large a model
        assert r.placed_loss - r.actual == pytest.approx(k * (x_hat - x_opt[j]) ** 2, rel=1e-6)
        assert r.placed_residual_pct > r.residual_pct
    far = max(bt.rows, key=lambda r: r.factor)
    assert far.placed_residual_pct - far.residual_pct > 0.5  # the drift grows with the factor
    d = bt.to_dict()
    assert {"tokens_forecast", "tokens_ratio", "placed_loss", "placed_residual_pct", "placed_in_range"} <= set(d["rows"][0])
    assert all(s["mean_placed_residual_pct"] is not None for s in d["by_factor"])
