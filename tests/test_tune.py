"""`delphi tune`: the search end to end on a very small reference (outputs, resume, extension),
the horizon-exponent fit on synthetic optima, the transfer-check logic, and CLI errors."""

import json
import math
import tomllib

import numpy as np
import pandas as pd
import pytest

from delphi.cli import main as cli_main
from delphi.config import DataSpec
from delphi.errors import DelphiError
from delphi.recipe import get_recipe
from delphi.sweep.executors import ExecutorSettings
from delphi.tune import (TuneSettings, check_transfer, default_space, fit_horizon_exponent, load_recipe, lr_grid,
                         optimum_lr, search)
from delphi.tune.common import extend_grids, lr_sweep_specs
from delphi.tune.search import parse_space, preset_toml
from delphi.tune.transfer import default_settings, parse_settings

# A reference small enough for CI: width 32 (2 layers), 4 sequences × 128 tokens, 24 steps.
REF = dict(hidden=32, batch=4, tokens=4 * 128 * 24)


def _settings(**kw) -> TuneSettings:
    base = dict(data=DataSpec(mixture="embedded", tokenizer="embedded-bpe-1k"), eval_windows_per_domain=2,
                precision="fp32", compile="off", executor=ExecutorSettings(workers=2, threads_per_worker=1),
                progress=False)
    base.update(kw)
    return TuneSettings(**base)


# ---- the search, for real ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    recipe, source = load_recipe("cpu")
    res = search(recipe, source, **REF, out_dir=out, trials=2, settings=_settings(), sampler_seed=0)
    return out, recipe, source, res


def test_search_writes_a_usable_preset_table_and_plot(searched, plot_check):
    out, recipe, _, res = searched
    assert res.trials_done == 2 and res.runs_trained == 2
    table = pd.read_csv(out / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    assert set(table.columns) >= {"trial", "loss", "lr0", "adam_lr0", "epsilon0", "beta2_0"}
    # Trial 0 is the recipe as it stands (the measured baseline the search must beat).
    first = table.iloc[0]
    assert first["lr0"] == pytest.approx(recipe.lr0) and first["beta2_0"] == pytest.approx(recipe.beta2_0)
    assert np.isfinite(table["loss"]).all() and res.best_loss == pytest.approx(table["loss"].min())
    # Each trial's loss is its run's summary loss, and its run used the trial's constants.
    for _, row in table.iterrows():
        summary = json.loads((out / "runs" / row["run"] / "summary.json").read_text())
        run = json.loads((out / "runs" / row["run"] / "run.json").read_text())
        assert summary["loss"] == pytest.approx(row["loss"])
        assert run["optimizer"]["lr"] == pytest.approx(row["lr0"])
        assert run["optimizer"]["adam_lr"] == pytest.approx(row["adam_lr0"])
        assert run["optimizer"]["beta2"] == pytest.approx(row["beta2_0"])
        assert run["batch_size"] == REF["batch"] and run["shape"]["hidden_size"] == REF["hidden"]
    # The preset loads back as a recipe whose reference point is the tuned one.
    tuned, src = load_recipe(str(res.preset_path))
    best = table.loc[table["loss"].idxmin()]
    assert src["preset"] == "cpu"
    assert tuned.lr0 == pytest.approx(best["lr0"]) and tuned.epsilon0 == pytest.approx(best["epsilon0"])
    assert tuned.ref_batch == REF["batch"] and tuned.ref_tokens == REF["tokens"]
    # At the reference point the tuned recipe reproduces the best trial's optimizer exactly.
    hp = tuned.hyperparams(REF["batch"], REF["tokens"], REF["hidden"])
    assert hp.lr == pytest.approx(best["lr0"]) and hp.beta2 == pytest.approx(best["beta2_0"])
    # 4 searched constants: 3 × 2 panels of 4.2 × 3.4 in at 110 dpi
    plot_check(out / "partial-dependence.png", size=(round(3 * 4.2 * 110), round(2 * 3.4 * 110)))
    assert json.loads((out / "search.json").read_text())["best_trial"] == res.best_trial


def test_rerun_trains_nothing_and_extension_trains_only_new_trials(searched):
    out, recipe, source, res = searched
    again = search(recipe, source, **REF, out_dir=out, trials=2, settings=_settings(), plot=False)
    assert again.runs_trained == 0 and again.best_loss == res.best_loss
    # An interrupted batch: a trial asked (its parameters stored) but never told.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="delphi-tune",
                              storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    dists = {p.name: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
             for p in default_space(recipe)}
    pending = study.ask(dists)
    resumed = search(recipe, source, **REF, out_dir=out, trials=3, settings=_settings(), plot=False)
    assert resumed.runs_trained == 1 and resumed.trials_done == 3
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 3 and (table["state"] == "COMPLETE").all()
    assert table.loc[table["trial"] == pending.number, "lr0"].item() == pytest.approx(pending.params["lr0"])
    assert (out / "runs" / f"trial-{pending.number:04d}" / "summary.json").exists()


def test_search_directory_refuses_other_settings(searched):
    out, recipe, source, _ = searched
    with pytest.raises(DelphiError, match="different settings.*hidden"):
        search(recipe, source, hidden=48, batch=REF["batch"], tokens=REF["tokens"], out_dir=out, trials=2,
               settings=_settings())


# ---- the preset file -------------------------------------------------------------------------------

def test_tuned_preset_is_a_valid_suite_recipe_section(tmp_path):
    from delphi.sweep.suite import parse_suite, preset_text

    text = preset_toml({"preset": "cpu"}, {"ref_batch": 16.0, "ref_tokens": 2e6, "lr0": 0.0123,
                                           "adam_lr0": 0.0031, "epsilon0": 3e-9, "beta2_0": 0.998})
    suite_text = preset_text("tiny")
    start = suite_text.index("[recipe]")
    end = suite_text.index("\n[", start + 1)
    suite = parse_suite(suite_text[:start] + text + suite_text[end:])
    assert suite.recipe.lr0 == 0.0123 and suite.recipe.beta2_0 == 0.998 and suite.recipe.ref_tokens == 2e6
    path = tmp_path / "r.toml"
    path.write_text(text)
    recipe, src = load_recipe(str(path))
    assert recipe == suite.recipe and tomllib.loads(text)["recipe"] == src


def test_recipe_file_errors(tmp_path):
    with pytest.raises(DelphiError, match="not found"):
        load_recipe(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[recipe]\npreset = \"cpu\"\nlr_zero = 0.1\n")
    with pytest.raises(DelphiError, match="unknown recipe constant.*lr_zero"):
        load_recipe(str(bad))
    with pytest.raises(DelphiError, match="unknown recipe"):
        load_recipe("no-such-preset")


def test_search_space_overrides_and_errors():
    space = default_space(get_recipe("cpu"), schedule=True)
    names = [p.name for p in space]
    assert names == ["lr0", "adam_lr0", "epsilon0", "one_minus_beta2_0", "warmup_fraction", "decay_fraction"]
    # LR ranges never exceed the recipe's cap (the recipe would clip those values).
    assert all(p.high <= get_recipe("cpu").lr_cap for p in space if p.name in ("lr0", "adam_lr0"))
    new = parse_space("lr0=1e-3:2e-2", space)
    assert [(p.low, p.high) for p in new if p.name == "lr0"] == [(1e-3, 2e-2)]
    for text, needle in [("lr0=1e-3", "NAME=LOW:HIGH"), ("eta=1:2", "unknown parameter"),
                         ("lr0=0:1", "LOW < HIGH"), ("lr0=2e-2:1e-3", "LOW < HIGH"), ("lr0=a:b", "numbers")]:
        with pytest.raises(DelphiError, match=needle):
            parse_space(text, space)


# ---- the horizon exponent on synthetic sweeps --------------------------------------------------------

def _synthetic_sweeps(exponent, noise, seed, horizons=(5e5, 2e6, 8e6), lr_ref=0.02, t_ref=2e6):
    """Loss = 3 + 0.08·(log lr − log η*(T))², η*(T) = lr_ref·(t_ref/T)^exponent, grids centred on the
    recipe's (exponent 0.3) LR so the true optimum sits off-centre when exponent ≠ 0.3."""
    rng = np.random.default_rng(seed)
    lrs, losses = [], []
    for T in horizons:
        opt = lr_ref * (t_ref / T) ** exponent
        grid = lr_grid(lr_ref * (t_ref / T) ** 0.3, 7, 2 ** 0.5)
        y = 3.0 + 0.08 * (np.log(grid) - np.log(opt)) ** 2 + rng.normal(0, noise, len(grid))
        lrs.append(grid)
        losses.append(y)
    return list(horizons), lrs, losses


@pytest.mark.parametrize("exponent", [0.0, 0.3, 0.5])
def test_horizon_fit_recovers_a_known_exponent(exponent):
    T, lrs, losses = _synthetic_sweeps(exponent, noise=3e-4, seed=1)
    fit = fit_horizon_exponent(T, lrs, losses, ref_tokens=2e6, bootstrap=300, loss_noise=1e-4, seed=0)
    assert fit.exponent == pytest.approx(exponent, abs=0.04)
    assert fit.interval[0] < fit.exponent < fit.interval[1]
    assert fit.contains(exponent)
    assert fit.lr_at_ref == pytest.approx(0.02, rel=0.08)
    assert fit.predict(5e5) == pytest.approx(fit.lr_at_ref * 4 ** fit.exponent)
    assert all(m == "parabola" for m in fit.methods) and not any(fit.at_edge)
    assert json.loads(json.dumps(fit.to_dict()))["exponent"] == fit.exponent


def test_horizon_interval_widens_with_noise_and_excludes_wrong_exponents():
    T, lrs, losses = _synthetic_sweeps(0.5, noise=0.0, seed=0)
    tight = fit_horizon_exponent(T, lrs, losses, ref_tokens=2e6, bootstrap=300, loss_noise=1e-4, seed=0)
    loose = fit_horizon_exponent(T, lrs, losses, ref_tokens=2e6, bootstrap=300, loss_noise=3e-3, seed=0)
    assert tight.exponent == pytest.approx(0.5, abs=1e-6)  # noiseless parabola: exact vertex
    assert (loose.interval[1] - loose.interval[0]) > 3 * (tight.interval[1] - tight.interval[0])
    assert not tight.contains(0.3)


def test_optimum_at_grid_edge_is_flagged_and_diverged_runs_ignored():
    lrs = [0.001, 0.002, 0.004, 0.008, 0.016]
    o = optimum_lr(lrs, [3.5, 3.4, 3.3, 3.2, 3.1])  # still falling: the optimum is beyond the grid
    assert o.at_edge and o.method == "argmin" and o.lr == 0.016
    o = optimum_lr(lrs, [3.3, 3.2, 3.15, 3.2, math.inf])  # the largest LR diverged
    assert not o.at_edge and o.method == "parabola" and 0.002 < o.lr < 0.008
    with pytest.raises(DelphiError, match="diverged"):
        optimum_lr(lrs, [math.inf] * 5)
    with pytest.raises(DelphiError, match="two or more"):
        fit_horizon_exponent([1e6], [lrs], [[3.0] * 5])


def test_sweeps_grow_past_the_edge_holding_their_lowest_loss():
    grids = [[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]]
    losses = [[3.0, 3.1, 3.2],              # lowest at the smallest LR → one smaller
              [3.2, 3.1, 3.0],              # lowest at the largest LR → one larger
              [3.2, 3.0, 3.1],              # interior: unchanged
              [3.2, 3.0, math.inf]]         # largest diverged: the lowest is interior
    new, grown = extend_grids(grids, losses, 2.0)
    assert grown and new == [[0.5, 1.0, 2.0, 4.0], [1.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]]
    assert extend_grids(grids[2:], losses[2:], 2.0) == ([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]], False)
    assert extend_grids([[1.0, 2.0]], [[math.inf, math.inf]], 2.0) == ([[1.0, 2.0]], False)


# ---- transfer checks on synthetic sweeps ---------------------------------------------------------------

def test_transfer_check_passes_within_tolerance_and_fails_outside():
    lrs = lr_grid(0.01, 5, 2.0)  # 0.0025 … 0.04
    ok = check_transfer(lrs, [3.30, 3.21, 3.205, 3.20, 3.40], 0.01, hidden=64, batch=16, tokens=2e6)
    assert ok.ok and ok.best_lr == 0.02 and ok.gap == pytest.approx(0.005 / 3.2)
    assert ok.region == (0.005, 0.02) and not ok.best_at_edge
    bad = check_transfer(lrs, [3.30, 3.25, 3.24, 3.20, 3.40], 0.01)
    assert not bad.ok and bad.gap == pytest.approx(0.04 / 3.2) and bad.region == (0.02, 0.02)
    # The tolerance is relative to the best loss: 0.5% of 3.2 is 0.016.
    edge = check_transfer(lrs, [3.30, 3.25, 3.2159, 3.20, 3.40], 0.01)
    assert edge.ok and not check_transfer(lrs, [3.30, 3.25, 3.2161, 3.20, 3.40], 0.01).ok
    diverged = check_transfer(lrs, [3.30, 3.21, math.inf, 3.20, math.inf], 0.01)
    assert not diverged.ok and diverged.to_dict()["gap"] is None
    at_edge = check_transfer(lrs, [3.5, 3.4, 3.3, 3.2, 3.1], 0.01)
    assert at_edge.best_at_edge and not at_edge.ok
    with pytest.raises(DelphiError, match="not among the swept"):
        check_transfer(lrs, [3.3] * 5, 0.011)


def test_transfer_settings_and_sweep_specs():
    assert parse_settings("128x16x2e6, 64X32x8e6") == [(128, 16, 2e6), (64, 32, 8e6)]
    for text in ("128x16", "ax16x2e6", ""):
        with pytest.raises(DelphiError, match="WIDTHxBATCHxTOKENS"):
            parse_settings(text)
    assert default_settings(64, 16, 2e6, 16) == [(128, 16, 2e6), (64, 32, 2e6), (64, 16, 8e6)]
    recipe = get_recipe("cpu")
    specs = lr_sweep_specs(recipe, prefix="transfer", hidden=64, batch=32, tokens=4e6, lrs=lr_grid(0.01, 3, 2.0),
                           settings=_settings())
    ref = recipe.hyperparams(32, 4e6, 64)
    assert [s.optimizer.lr for s in specs] == [0.005, 0.01, 0.02] and len({s.name for s in specs}) == 3
    # Only the projection LR moves; the Adam LR, ε and β2 are the recipe's at that point.
    assert all(s.optimizer.adam_lr == ref.adam_lr and s.optimizer.beta2 == ref.beta2 for s in specs)
    assert specs[0].train_steps == round(4e6 / (32 * 128)) and specs[0].tags["role"] == "tune"
    with pytest.raises(DelphiError, match="odd"):
        lr_grid(0.01, 4)


# ---- the CLI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["tune", "search", "--hidden", "40", "--out", "X"], "multiple of the recipe's head dim 16"),
    (["tune", "search", "--hidden", "32", "--tokens", "abc", "--out", "X"], "--tokens must be a number"),
    (["tune", "search", "--hidden", "32", "--tokens", "100", "--batch", "4", "--out", "X"], "less than one step"),
    (["tune", "search", "--hidden", "32", "--trials", "0", "--out", "X"], "--trials must be positive"),
    (["tune", "search", "--hidden", "32", "--recipe", "nope", "--out", "X"], "unknown recipe 'nope'"),
    (["tune", "search", "--hidden", "32", "--space", "lr0=1", "--out", "X"], "NAME=LOW:HIGH"),
    (["tune", "horizon", "--hidden", "32", "--points", "4", "--out", "X"], "odd number of points"),
    (["tune", "horizon", "--hidden", "32", "--horizons", "1,-2", "--out", "X"], "positive numbers"),
    (["tune", "horizon", "--hidden", "32", "--step", "1", "--out", "X"], "factor > 1"),
    (["tune", "transfer", "--hidden", "32", "--settings", "64x16", "--out", "X"], "WIDTHxBATCHxTOKENS"),
    (["tune", "transfer", "--hidden", "32", "--settings", "40x16x2e6", "--out", "X"], "head dim"),
    (["tune", "search", "--out", "X"], "--hidden"),
    (["tune"], "required"),
])
def test_cli_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "X" / "runs").exists()  # nothing trained


def _run_cli(argv, capsys):
    code = cli_main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return captured.out


def test_horizon_and_transfer_commands_end_to_end(tmp_path, capsys, plot_check):
    common = ["--hidden", "32", "--batch", "4", "--tokens", str(REF["tokens"]), "--workers", "2", "--threads", "1",
              "--eval-windows", "2", "--precision", "fp32", "--compile", "off", "--quiet"]
    hz = tmp_path / "horizon"
    argv = ["tune", "horizon", *common, "--horizons", "0.5,1", "--points", "3", "--extend", "0",
            "--bootstrap", "50", "--out", str(hz)]
    out = _run_cli(argv, capsys)
    assert "exponent" in out
    record = json.loads((hz / "horizon.json").read_text())
    runs = pd.read_csv(hz / "horizon.csv")
    assert len(runs) == 6 and set(runs["tokens"]) == {REF["tokens"] // 2, REF["tokens"]}
    recipe = get_recipe("cpu")
    for T, r in zip((REF["tokens"] / 2, REF["tokens"]), record["recipe_lr"]):
        assert r == pytest.approx(recipe.hyperparams(4, T, 32).lr)
        assert sorted(runs.loc[runs["target_tokens"] == T, "lr"]) == pytest.approx(lr_grid(r, 3, 2.0))
    # The fit in horizon.json is the fit of the losses in horizon.csv.
    fit = record["fit"]
    lrs = [list(runs.loc[runs["target_tokens"] == T, "lr"]) for T in (REF["tokens"] / 2, REF["tokens"])]
    losses = [list(runs.loc[runs["target_tokens"] == T, "loss"]) for T in (REF["tokens"] / 2, REF["tokens"])]
    again = fit_horizon_exponent(fit["tokens"], lrs, losses, ref_tokens=REF["tokens"], bootstrap=0)
    assert again.exponent == pytest.approx(fit["exponent"])
    plot_check(hz / "horizon.png", size=(11 * 110, round(4.2 * 110)))  # 11 × 4.2 in at 110 dpi
    stamps = {p: p.stat().st_mtime_ns for p in hz.glob("runs/*/summary.json")}
    _run_cli(argv, capsys)  # a re-run trains nothing
    assert {p: p.stat().st_mtime_ns for p in hz.glob("runs/*/summary.json")} == stamps

    # Transfer at the reference point, in the same directory: the horizon sweep's runs at T0 are
    # the transfer sweep's runs (same specs), so nothing is trained and the verdict is theirs.
    out = _run_cli(["tune", "transfer", *common, "--settings", f"32x4x{REF['tokens']}", "--points", "3",
                    "--extend", "0", "--out", str(hz)], capsys)
    assert {p: p.stat().st_mtime_ns for p in hz.glob("runs/*/summary.json")} == stamps
    check = json.loads((hz / "transfer.json").read_text())["checks"][0]
    at_t0 = runs[runs["target_tokens"] == REF["tokens"]].sort_values("lr")
    assert check["recipe_lr"] == pytest.approx(record["recipe_lr"][1])
    assert check["lrs"] == pytest.approx(list(at_t0["lr"])) and check["losses"] == pytest.approx(list(at_t0["loss"]))
    losses = list(at_t0["loss"])
    assert check["ok"] == (losses[1] <= min(losses) * 1.005)
    assert check["gap"] == pytest.approx(losses[1] / min(losses) - 1)
    (row,) = [line for line in (hz / "transfer.md").read_text().splitlines() if line.startswith("| 32 | 4 |")]
    verdict = row.strip("|").split("|")[-1].strip()
    assert verdict.split(" (")[0] == ("pass" if losses[1] <= min(losses) * 1.005 else "FAIL")
    assert row in out  # the command prints the table it writes
