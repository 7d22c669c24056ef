"""Approach 2: bucketing, robust parabolas, skip reasons, edge flags, allocation laws, penalty."""

import math

import numpy as np
import pandas as pd
import pytest

from delphi.errors import DelphiError
from delphi.fit.isoflop import (FLAG_ABOVE, FLAG_BELOW, FLAG_ONE_SIDED, bucket_flops, fit_bucket, fit_isoflop, fit_power_law,
                                huber_parabola)
from delphi.fit.loss_law import fit_loss_law

E, A, B, AL, BE = 1.7, 400.0, 1500.0, 0.34, 0.36
G = (AL * A / (BE * B)) ** (1 / (AL + BE))


def chinchilla_loss(N, D):
    return E + A / N ** AL + B / D ** BE


def grid(budgets=(1e17, 3e17, 1e18, 3e18, 1e19), k=7, span=4.0, centre=1.0, noise=0.0, seed=0, declare=True,
         jitter=0.03):
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = G * (C / 6) ** (BE / (AL + BE))
        for m in np.geomspace(1 / span, span, k):
            N = n_opt * m * centre
            D = C / (6 * N)
            rows.append({"name": f"C{C:.0e}-N{N:.3g}", "budget": C if declare else np.nan,
                         "flops": C * rng.uniform(1 - jitter, 1 + jitter), "params": N, "tokens": D,
                         "loss": chinchilla_loss(N, D) + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_recovers_allocation_exponents_from_known_law():
    iso = fit_isoflop(grid())
    assert len(iso.used) == 5 and not any(b.flags for b in iso.buckets)
    # Chinchilla: N* ∝ C^(beta/(alpha+beta)), D* ∝ C^(alpha/(alpha+beta)).
    assert iso.params_law.alpha == pytest.approx(BE / (AL + BE), abs=0.01)
    assert iso.tokens_law.alpha == pytest.approx(AL / (AL + BE), abs=0.01)
    assert iso.params_law.alpha + iso.tokens_law.alpha == pytest.approx(1.0, abs=1e-6)
    for b in iso.used:
        n_true = G * (b.flops / 6) ** (BE / (AL + BE))
        assert b.optimal_params == pytest.approx(n_true, rel=0.08)
        assert b.optimal_tokens * b.optimal_params * 6 == pytest.approx(b.flops, rel=0.01)
        assert b.optimal_loss == pytest.approx(chinchilla_loss(n_true, b.flops / (6 * n_true)), abs=0.01)
    N, D = iso.predict(1e21)
    assert 6 * N * D == pytest.approx(1e21, rel=0.02)
    d = iso.to_dict()
    assert set(d["allocation"]) >= {"tokens", "params"} and set(d["allocation"]["tokens"]) >= {"A", "alpha"}
    assert set(d["buckets"][0]) >= {"flops", "n_runs", "optimal_tokens", "optimal_params", "optimal_loss", "flags"}


def test_buckets_by_declared_budget_else_nearest_power_of_1_1():
    assert bucket_flops([1.0e18, 1.02e18, 0.98e18]).tolist() == [1.1 ** 435] * 3
    assert bucket_flops([1.2e18], [np.nan])[0] == pytest.approx(1.1 ** 437)
    assert bucket_flops([1.2e18], [1e18])[0] == 1e18
    declared = fit_isoflop(grid())
    assert [b.flops for b in declared.buckets] == [1e17, 3e17, 1e18, 3e18, 1e19]
    # Measured FLOPs within 1% of the budget land in one bucket each (none of these budgets is
    # within 1% of a boundary between powers of 1.1).
    measured = fit_isoflop(grid(declare=False, jitter=0.01))
    assert [b.flops for b in measured.buckets] == pytest.approx([1.1 ** round(math.log(c) / math.log(1.1))
                                                                 for c in (1e17, 3e17, 1e18, 3e18, 1e19)])
    assert [b.n_runs for b in measured.buckets] == [7] * 5


def test_huber_parabola_resists_an_outlier():
    x = np.linspace(8, 10, 9)
    y = 0.5 * (x - 9.2) ** 2 + 3.0 + np.random.default_rng(0).normal(0, 0.002, 9)
    y_out = y.copy()
    y_out[1] += 0.3  # one run that went wrong but did not diverge
    a, b, c = huber_parabola(x, y_out)
    a0, b0, _ = np.polyfit(x, y_out, 2)
    assert -b / (2 * a) == pytest.approx(9.2, abs=0.01)
    assert abs(-b0 / (2 * a0) - 9.2) > 3 * abs(-b / (2 * a) - 9.2)  # least squares is pulled away
    # Exact data: the robust fit is the exact parabola.
    assert huber_parabola(x, 0.5 * (x - 9.2) ** 2 + 3.0) == pytest.approx((0.5, -9.2, 0.5 * 9.2 ** 2 + 3.0))


def test_skip_reasons_and_edge_flags():
    two = fit_bucket(1e18, [1e9, 2e9], [1e8, 5e7], [3.0, 3.1])
    assert not two.usable and "fewer than 3 runs" in two.skipped
    same = fit_bucket(1e18, [1e9, 1e9, 2e9], [1e8, 1e8, 5e7], [3.0, 3.01, 3.1])
    assert "fewer than 3 distinct token counts" in same.skipped
    down = fit_bucket(1e18, [1e9, 2e9, 4e9], [4e8, 2e8, 1e8], [3.0, 3.2, 3.0])
    assert "opens downward" in down.skipped and down.coeffs[0] < 0
    # A grid centred on too-large models trains every run on too few tokens: the optimum lies
    # beyond the largest token count; and the other way round.
    big = fit_isoflop(grid(budgets=(1e18,), span=1.6, centre=4.0))
    assert big.buckets[0].flags == (FLAG_ABOVE,)
    assert big.buckets[0].optimal_tokens > max(big.buckets[0].tokens)
    small = fit_isoflop(grid(budgets=(1e18,), span=1.6, centre=0.25))
    assert small.buckets[0].flags == (FLAG_BELOW,)
    assert small.buckets[0].optimal_tokens < min(small.buckets[0].tokens)
    # Inside the range, but a single run on the large-token side: the vertex is poorly bracketed.
    tokens = [1e9, 2e9, 4e9, 8e9]
    one = fit_bucket(1e18, tokens, [1e18 / (6 * d) for d in tokens], [3.6, 3.2, 3.0, 3.05])
    assert tokens[2] < one.optimal_tokens < tokens[3] and one.flags == (FLAG_ONE_SIDED,)
    two_sided = fit_bucket(1e18, tokens + [1.6e10], [1e18 / (6 * d) for d in tokens + [1.6e10]],
                           [3.6, 3.2, 3.0, 3.05, 3.3])
    assert two_sided.flags == ()
    # Flagged buckets stay in the laws unless asked; skipped ones never count.
    t = pd.concat([grid(), grid(budgets=(3e19,), span=1.6, centre=4.0), grid(budgets=(1e20,), k=2)])
    iso = fit_isoflop(t)
    assert len(iso.buckets) == 7 and len(iso.used) == 6 and iso.tokens_law.n_points == 6
    assert [s["reason"] for s in iso.to_dict()["skipped"]] == ["fewer than 3 runs (2)"]
    strict = fit_isoflop(t, exclude_flagged=True)
    assert len(strict.used) == 5 and strict.tokens_law.n_points == 5
    assert len(strict.optima()["flops"]) == 5


def test_optimal_params_interpolated_in_log_space():
    b = fit_bucket(1e18, [1e9, 2e9, 4e9, 8e9], [1.6e8, 8e7, 4e7, 2e7], [3.1, 3.0, 3.02, 3.15])
    # N ∝ 1/D exactly, so log-log interpolation gives N* = 1.6e17 / D* wherever D* falls.
    assert b.optimal_params == pytest.approx(1.6e17 / b.optimal_tokens, rel=1e-9)


def test_robust_to_noise_and_one_bad_run():
    t = grid(noise=0.003, seed=3)
    t.loc[3, "loss"] += 0.5  # a bad run in the first bucket
    iso = fit_isoflop(t)
    clean = fit_isoflop(grid())
    assert iso.tokens_law.alpha == pytest.approx(clean.tokens_law.alpha, abs=0.03)


def test_off_optimal_penalty():
    iso = fit_isoflop(grid(budgets=(1e17, 3e17, 1e18, 3e18, 1e19, 3e19)))
    law = fit_loss_law(**{k: v for k, v in iso.optima().items() if k in ("flops", "loss")}, bootstrap=0)
    pen = iso.penalty()
    b = iso.used[2]
    # The parabola's own gap: a·(log10 s)^2, symmetric in log s.
    assert b.gap(2.0) == pytest.approx(b.predict(2 * b.optimal_tokens) - b.optimal_loss, rel=1e-9)
    assert b.gap(0.5) == pytest.approx(b.gap(2.0))
    # The power law in C through the curvatures reproduces each bucket's gap closely.
    assert pen.gap(4.0, b.flops) == pytest.approx(b.gap(4.0), rel=0.05)
    # It matches the true cost of over-training on the generating law (to the parabola's accuracy).
    C = 1e20
    n_opt = G * (C / 6) ** (BE / (AL + BE))
    true_gap = chinchilla_loss(n_opt / 2, 2 * C / (6 * n_opt)) - chinchilla_loss(n_opt, C / (6 * n_opt))
    assert pen.gap(2.0, C) == pytest.approx(true_gap, rel=0.15)
    # Extra compute: the over-trained run at C·(1+x) matches the compute-optimal loss at C.
    x = pen.extra_compute(4.0, C, law)
    assert x > 0
    assert law.predict(C * (1 + x)) + pen.gap(4.0, C * (1 + x)) == pytest.approx(law.predict(C), abs=1e-9)
    assert pen.extra_compute(1.0, C, law) == pytest.approx(0.0, abs=1e-9)
    assert 0 < pen.effective_compute(4.0, C, law) < 1
    rows = pen.table([2, 4], [1e21], law)
    assert [r["s"] for r in rows] == [2, 4] and rows[1]["extra_compute"] > rows[0]["extra_compute"]


def test_power_law_and_errors():
    p = fit_power_law([1e18, 1e19, 1e20], [2e9, 2e9 * 10 ** 0.5, 2e10])
    assert p.alpha == pytest.approx(0.5) and p.predict(1e18) == pytest.approx(2e9)
    with pytest.raises(DelphiError, match="two distinct"):
        fit_power_law([1e18, 1e18], [1, 2])
    one = fit_isoflop(grid(budgets=(1e18,)))
    assert one.tokens_law is None and one.to_dict()["allocation"] is None
    with pytest.raises(DelphiError, match="allocation law"):
        one.predict(1e21)
    with pytest.raises(DelphiError, match="at least two usable buckets"):
        one.penalty()
    with pytest.raises(DelphiError, match="missing column.*'bpb'"):
        fit_isoflop(grid(), metric="bpb")
    bad = grid()
    bad.loc[4, "loss"] = np.nan
    with pytest.raises(DelphiError, match="row 5.*column 'loss' is missing"):
        fit_isoflop(bad)
    # Runs that did not complete are dropped and counted, as when loading a table.
    t = grid()
    t["status"] = ["diverged"] + ["completed"] * (len(t) - 1)
    iso = fit_isoflop(t)
    assert iso.excluded == {"diverged": 1} and iso.buckets[0].n_runs == 6
