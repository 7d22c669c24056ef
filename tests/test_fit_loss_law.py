"""The loss law L*(C) = E + A·C^-alpha: recovery, constraints, bootstrap, leave-one-out, errors."""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from delphi.errors import DelphiError
from delphi.fit import bootstrap as bs
from delphi.fit.loss_law import fit_loss_law

C = np.array([3e18, 6e18, 1e19, 3e19, 6e19, 1e20, 3e20])
TRUE = (1.6, 2.1e3, 0.17)


def law(C, E, A, alpha):
    return E + A * np.asarray(C, dtype=float) ** -alpha


def noisy(seed=1, sd=0.005):
    return law(C, *TRUE) + np.random.default_rng(seed).normal(0, sd, len(C))


def test_recovers_exact_law_and_pure_power_law():
    fit = fit_loss_law(C, law(C, *TRUE), bootstrap=0)
    assert (fit.E, fit.A, fit.alpha) == pytest.approx(TRUE, rel=1e-6)
    assert fit.converged and fit.sse < 1e-20
    pure = fit_loss_law(C, 40.0 * C ** -0.05, bootstrap=0, asymptote=False)
    assert (pure.E, pure.A, pure.alpha) == pytest.approx((0.0, 40.0, 0.05), rel=1e-6)
    # A general decreasing metric on another scale (bits-per-byte).
    bpb = fit_loss_law(C, law(C, 0.6, 90.0, 0.12), bootstrap=0)
    assert (bpb.E, bpb.A, bpb.alpha) == pytest.approx((0.6, 90.0, 0.12), rel=1e-6)


def test_matches_multistart_curve_fit_on_noisy_data():
    y = noisy()
    fit = fit_loss_law(C, y, bootstrap=0)
    c0 = np.exp(np.log(C).mean())
    best = None
    for al0 in (0.05, 0.1, 0.2, 0.4, 0.8):
        try:
            p, _ = curve_fit(lambda c, E, A, al: E + A * (c / c0) ** -al, C, y, p0=[1.0, 1.0, al0], maxfev=20000)
        except RuntimeError:
            continue
        sse = np.sum((p[0] + p[1] * (C / c0) ** -p[2] - y) ** 2)
        if 0 <= p[0] < y.min() and (best is None or sse < best[0]):
            best = (sse, p)
    assert fit.sse <= best[0] * (1 + 1e-9)
    assert fit.alpha == pytest.approx(best[1][2], rel=1e-5)
    assert fit.E == pytest.approx(best[1][0], rel=1e-5)


def test_E_is_constrained():
    # Data bending the wrong way would want E < 0: the fit stops at E = 0.
    y = 5.0 * C ** -0.03 - 0.8
    fit = fit_loss_law(C, y, bootstrap=0)
    assert fit.E == 0.0
    # Data flattening sharply would want E >= min L: E stays below it.
    y2 = law(C, 2.0, 1e6, 0.6)
    y2[-1] = y2[-2] - 1e-4  # near-flat tail
    fit2 = fit_loss_law(C, y2, bootstrap=0)
    assert 0 <= fit2.E < y2.min()


def test_bootstrap_interval_and_loo():
    y = noisy()
    fit = fit_loss_law(C, y, bootstrap=2000, seed=0)
    targets = np.array([1e21, 1e22, 1e23])
    lo, hi = fit.interval(targets)
    pred = fit.predict(targets)
    assert np.all(lo < pred) and np.all(pred < hi)
    assert np.all(np.diff(hi - lo) > 0)  # intervals widen with extrapolation
    assert np.all(lo < law(targets, *TRUE)) and np.all(law(targets, *TRUE) < hi)
    # Seeded: same seed, same interval; another seed, another.
    again = fit_loss_law(C, y, bootstrap=2000, seed=0)
    assert np.array_equal(again.bootstrap_params, fit.bootstrap_params)
    assert not np.array_equal(fit_loss_law(C, y, bootstrap=2000, seed=1).bootstrap_params, fit.bootstrap_params)
    # Each vectorised resample equals a plain refit on its resampled values.
    for b in (0, 17, 999):
        ref = fit_loss_law(C, fit.bootstrap_values[b], bootstrap=0)
        assert fit.bootstrap_params[b] == pytest.approx([ref.E, ref.A, ref.alpha], rel=1e-6, abs=1e-9)
    # The prediction interval adds one new optimum's noise to the law's own band.
    llo, lhi = fit.interval(targets, kind="law")
    assert np.all(lo <= llo) and np.all(lhi <= hi) and np.all(llo < pred) and np.all(pred < lhi)
    # Leave-one-out: the spread of refits that each drop one point.
    mn, mx = fit.loo(targets)
    refits = [fit_loss_law(np.delete(C, i), np.delete(y, i), bootstrap=0).predict(targets) for i in range(len(C))]
    assert mn == pytest.approx(np.min(refits, axis=0), rel=1e-7)
    assert mx == pytest.approx(np.max(refits, axis=0), rel=1e-7)
    rows = fit.predictions(targets)
    assert [set(r) for r in rows] == [{"flops", "loss", "ci_low", "ci_high", "loo_min", "loo_max"}] * 3
    d = fit.to_dict(predict_at=[1e21])
    assert {"E", "A", "alpha", "predictions", "sse", "converged", "n_bootstrap"} <= set(d)
    assert d["n_bootstrap"] == 2000 and d["predictions"][0]["flops"] == 1e21


def test_resample_weights():
    W = bs.resample_weights(5, 3000, seed=4, min_distinct=4)
    assert W.shape == (3000, 5) and np.all(W.sum(1) == 5)
    assert np.all((W > 0).sum(1) >= 4)
    assert np.array_equal(W, bs.resample_weights(5, 3000, seed=4, min_distinct=4))
    counts = bs.resample_weights(8, 4000, seed=0).sum(0) / (4000 * 8)
    assert np.allclose(counts, 1 / 8, atol=0.01)  # every point drawn equally often
    with pytest.raises(DelphiError, match="distinct"):
        bs.resample_weights(3, 10, min_distinct=4)
    lo, hi = bs.percentile_interval(np.arange(1001.0), 0.95)
    assert (lo, hi) == pytest.approx((25.0, 975.0))


def test_errors():
    with pytest.raises(DelphiError, match="at least 3 points"):
        fit_loss_law(C[:2], law(C[:2], *TRUE))
    with pytest.raises(DelphiError, match="positive"):
        fit_loss_law(C, -law(C, *TRUE))
    with pytest.raises(DelphiError, match="does not decrease"):
        fit_loss_law(C, 1 + 1e-3 * np.log(C), bootstrap=0)
    with pytest.raises(DelphiError, match="bootstrap must be >= 0"):
        fit_loss_law(C, law(C, *TRUE), bootstrap=-1)
    with pytest.raises(DelphiError, match="same compute"):
        fit_loss_law([1e19] * 4, [3.0, 2.9, 3.1, 3.0])
    with pytest.raises(DelphiError, match="3 compute values but 2"):
        fit_loss_law(C[:3], [1.0, 2.0])
    # Three points: the law is fitted exactly, but there is nothing to resample or leave out.
    three = fit_loss_law(C[:3], law(C[:3], *TRUE))
    assert (three.E, three.A, three.alpha) == pytest.approx(TRUE, rel=1e-5)
    assert three.bootstrap_params is None and "at least 4" in three.note and "leave-one-out" in three.note
    with pytest.raises(DelphiError, match="interval kind"):
        three.interval(1e21, kind="confidence")
    with pytest.raises(DelphiError, match="optima_resamples must have shape"):
        fit_loss_law(C, law(C, *TRUE), optima_resamples=np.ones((10, 3)))
    assert np.isnan(three.interval(1e21)).all() and np.isnan(three.loo([1e21, 1e22])).all()
    assert three.predictions([1e21])[0]["ci_low"] is None


def test_intervals_are_never_zero_width():
    # Four optima: the old scheme resampled the points with >= 4 distinct each, so every resample
    # was the full set and the interval had zero width. Now it has width, and it covers the truth.
    y = noisy()[:4]
    fit = fit_loss_law(C[:4], y, bootstrap=1000, seed=0)
    lo, hi = fit.interval(1e21)
    assert hi - lo > 0.01 and lo < law(1e21, *TRUE) < hi
    # Points exactly on the law with no vertex spread: no interval rather than a zero-width one.
    exact = fit_loss_law(C, law(C, *TRUE), bootstrap=200)
    assert exact.bootstrap_params is None and "zero width" in exact.note
    assert np.isnan(exact.interval(1e21)).all()
    # ... but the vertices' spread alone gives one, and it widens the interval of noisy data.
    rng = np.random.default_rng(0)
    vert = law(C, *TRUE)[None, :] + rng.normal(0, 0.01, (200, len(C)))
    spread = fit_loss_law(C, law(C, *TRUE), bootstrap=200, optima_resamples=vert)
    lo2, hi2 = spread.interval(1e21)
    assert spread.vertex_resampling and hi2 - lo2 > 0.01
    base = fit_loss_law(C, noisy(), bootstrap=500, seed=0)
    wider = fit_loss_law(C, noisy(), bootstrap=500, seed=0, optima_resamples=noisy()[None, :] + vert - law(C, *TRUE))
    assert np.ptp(wider.interval(1e21)) > np.ptp(base.interval(1e21))
    # Deterministic given the seed.
    assert np.array_equal(fit_loss_law(C[:4], y, bootstrap=1000, seed=0).interval(1e21), (lo, hi))


# ---- the ceiling form 1/L = 1/H + C^alpha/A ------------------------------------------------------

def ceiling_law(C, H, A, alpha):
    return 1.0 / (1.0 / H + np.asarray(C, dtype=float) ** alpha / A)


def test_ceiling_form_recovers_its_parameters_and_reduces_to_the_power_law():
    Cs = np.array([1e11, 2e11, 5e11, 1e12, 2e12])
    y = ceiling_law(Cs, 6.0, 50.0, 0.1)
    fit = fit_loss_law(Cs, y, bootstrap=0, ceiling=6.0)
    assert (fit.A, fit.alpha) == pytest.approx((50.0, 0.1), rel=1e-8)
    assert fit.E == 0 and fit.n_params == 2 and fit.form == "1/(1/H + C^alpha/A)"
    assert fit.predict(1e13) == pytest.approx(ceiling_law(1e13, 6.0, 50.0, 0.1), rel=1e-8)
    # far below the ceiling the form is the power law A·C^-alpha
    assert fit.predict(1e40) == pytest.approx(50.0 * 1e40 ** -0.1, rel=1e-3)
    d = fit.to_dict(predict_at=[1e13])
    assert d["ceiling"] == 6.0 and d["form"] == "1/(1/H + C^alpha/A)"


def test_ceiling_form_follows_a_curve_that_steepens_where_the_power_law_cannot():
    # Optima that leave H: their log-log slope grows with compute. Fitted on the lowest decade,
    # the ceiling form forecasts 10x further within noise; E + A·C^-alpha (which can only flatten)
    # forecasts too high.
    Cs = np.array([1e11, 2e11, 5e11, 1e12])
    truth = lambda c: ceiling_law(c, 6.2, 900.0, 0.17)  # noqa: E731
    y = truth(Cs) * (1 + np.array([0.002, -0.002, 0.001, -0.001]))
    ceil = fit_loss_law(Cs, y, bootstrap=500, ceiling=6.2)
    plain = fit_loss_law(Cs, y, bootstrap=0)
    target = truth(1e13)
    assert abs(ceil.predict(1e13) / target - 1) < 0.01
    assert plain.predict(1e13) / target - 1 > 0.02
    lo, hi = ceil.interval(1e13)
    assert lo < target < hi and hi > lo


def test_ceiling_form_refuses_points_at_or_above_the_ceiling():
    with pytest.raises(DelphiError, match=r"not below the ceiling H = 4\b.*unigram loss of the same metric"):
        fit_loss_law([1e11, 2e11, 5e11], [4.5, 3.9, 3.7], ceiling=4.0)
    with pytest.raises(DelphiError, match="ceiling H must be a positive number"):
        fit_loss_law([1e11, 2e11, 5e11], [4.5, 3.9, 3.7], ceiling=-1.0)


def test_ceiling_form_through_the_cli_and_the_backtest(tmp_path, capsys):
    from delphi.cli import main

    Cs = np.array([1e11, 2e11, 5e11, 1e12, 2e12])
    (tmp_path / "optima.csv").write_text("flops,loss\n" + "".join(
        f"{c},{v}\n" for c, v in zip(Cs, ceiling_law(Cs, 6.0, 50.0, 0.1))))
    assert main(["fit", "loss-law", str(tmp_path / "optima.csv"), "--ceiling", "6", "--predict", "1e13",
                 "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "1/(1/H + C^alpha/A)" in out and "H = 6" in out
    assert f"{ceiling_law(1e13, 6.0, 50.0, 0.1):.4f}" in out
