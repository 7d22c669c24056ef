"""`delphi run` end to end on a scaled-down suite: artefacts, SIGKILL + resume, suite validation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from delphi.errors import DelphiError
from delphi.forecast.ledger import Ledger
from delphi.sweep.suite import load_suite, parse_suite, preset_names

# A miniature of the `tiny` preset: same rules, budgets small enough for CI.
SUITE = """
[suite]
name = "ci"

[recipe]
preset = "cpu"
name = "ci"
name_suffix = "ci"
min_tokens_per_param = 0.6  # 3-4 widths per budget around the optimum keeps the test short
max_tokens_per_param = 30.0
target_steps = 128          # fewer, larger steps than the preset's 1024: the same pipeline in less CI time

[grid]
budgets = [6e10, 1e11, 2e11, 3e11]

[heldout]
budgets = [1e12]
seeds = [0]

[data]
mixture = "embedded"
tokenizer = "embedded-bpe-1k"

[eval]
windows_per_domain = 4

[train]
precision = "fp32"
compile = "off"

[fit]
bootstrap = 200
"""


def _suite_file(tmp: Path, name="suite.toml", downstream: bool = False) -> Path:
    text = SUITE
    if downstream:
        # Pool for the two-step forecast: the OLMo ladder's final checkpoints (ARC-Easy 5-shot
        # bpb of the gold answer → accuracy), the same metric our eval computes.
        ladder = pd.read_csv(Path(__file__).parent / "data" / "eval" / "olmo_ladder.csv.gz")
        last = ladder.loc[ladder.groupby("run")["_step"].idxmax()]
        pool = pd.DataFrame({"model": last["run"], "soft": last["eval/downstream_bpb/arc_easy_test_rc_5shot_bpb"],
                             "hard": last["eval/downstream/arc_easy_test_rc_5shot_len_norm"]})
        pool.to_csv(tmp / "pool.csv", index=False)
        text = text.replace("windows_per_domain = 4", f"""windows_per_domain = 4
downstream = ["arc_easy:5"]
limit = 16
pool = "{tmp / 'pool.csv'}"
soft = "arc_easy_5shot/bpb"
floor = 0.25""")
    p = tmp / name
    p.write_text(text)
    return p


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "delphi.cli", *args], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    out = tmp / "out"
    r = _cli("run", str(_suite_file(tmp, downstream=True)), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_every_artefact_is_written(finished_suite, plot_check):
    d = finished_suite
    suite = parse_suite(SUITE)
    table = pd.read_csv(d / "runs.csv")
    grid = table[table.role == "grid"]
    assert len(grid) == len(suite.grid_candidates()) >= 12
    assert (grid.status == "completed").all()
    assert set(table[table.role == "heldout"].name) == {n for n in table.name if n.endswith("heldout-s0")}
    fit = json.loads((d / "fit.json").read_text())
    assert {"isoflop", "loss_law", "runs_table_sha256"} <= set(fit)
    assert Ledger(d / "ledger.jsonl").verify().ok
    check = json.loads((d / "check.json").read_text())
    (row,) = check["results"]
    assert row["status"] == "scored" and row["actual"] is not None
    assert row["extrapolation"] >= 3  # CI: 3.3× past the largest fitted budget (the presets use ≥ 10×)
    html = (d / "report.html").read_text()
    assert "Delphi suite report — ci" in html and (d / "report.md").exists()
    for key in ("isoflop", "allocation", "loss_law", "training", "downstream"):
        plot_check(d / "figures" / f"{key}.png")
        assert f'id="fig-{key}"' in html
    for run in grid.name:
        rd = d / "runs" / run
        assert (rd / "summary.json").exists() and (rd / "metrics.jsonl").exists() and (rd / "hf").is_dir()
    # downstream: winners and the held-out run evaluated, metrics merged, two-step forecast written
    evaluated = table.dropna(subset=["arc_easy_5shot/bpb"])
    assert len(evaluated) == len(suite.grid.budgets) + 1
    assert (evaluated["arc_easy_5shot/bpb"] > 0).all()
    down = json.loads((d / "downstream.json").read_text())
    assert down["forecasts"]
    plot_check(d / "downstream.png", size=(11 * 130, round(4.3 * 130)))  # 11 × 4.3 in at 130 dpi
    r = _cli("check", str(d), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["results"][0]["actual"] == row["actual"]


def test_rerun_does_no_work_and_keeps_the_ledger(finished_suite):
    d = finished_suite
    before = {p: p.stat().st_mtime_ns for p in d.glob("runs/*/summary.json")}
    n_entries = len(Ledger(d / "ledger.jsonl").read())
    r = _cli("run", str(d / "suite.toml"), "--out", str(d), "--quiet", "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in d.glob("runs/*/summary.json")} == before
    assert len(Ledger(d / "ledger.jsonl").read()) == n_entries


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(finished_suite, tmp_path):
    out = tmp_path / "out"
    suite_file = _suite_file(tmp_path)
    args = ["run", str(suite_file), "--out", str(out), "--quiet", "--no-report", "--no-heldout"]
    proc = subprocess.Popen([sys.executable, "-m", "delphi.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # the whole grid trains in about a minute on 2 cores
    while True:  # kill once some runs are done and another is in flight
        done = list(out.glob("runs/*/summary.json"))
        started = list(out.glob("runs/*/started.json"))
        if len(done) >= 3 and len(started) > len(done):
            break
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before it could be killed mid-run")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"after 300 s: {len(done)} runs finished, {len(started)} started; expected >= 3 and one in flight")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert 3 <= len(finished_before) < len(parse_suite(SUITE).grid_candidates())
    time.sleep(0.5)
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    # finished runs were not redone
    for name, mtime in finished_before.items():
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == mtime
    # and every result equals the uninterrupted sweep's
    a = pd.read_csv(finished_suite / "runs.csv").query("role == 'grid'").set_index("name")
    b = pd.read_csv(out / "runs.csv").set_index("name")
    assert list(a.index) == list(b.index)
    cols = ["loss", "bpb", "final_train_loss", "tokens", "params"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    fa = json.loads((finished_suite / "fit.json").read_text())["loss_law"]
    fb = json.loads((out / "fit.json").read_text())["loss_law"]
    assert (fa["E"], fa["A"], fa["alpha"]) == (fb["E"], fb["A"], fb["alpha"])


def test_presets_parse_and_show():
    for name in preset_names():
        s = load_suite(name)
        assert len(s.grid.budgets) >= 3
    tiny = load_suite("tiny")
    assert max(tiny.grid.budgets) / min(tiny.grid.budgets) >= 10
    assert min(tiny.heldout.budgets) >= 10 * max(tiny.grid.budgets)
    assert all(len(tiny.recipe.candidates(b)) >= 4 for b in tiny.grid.budgets)
    r = _cli("suite", "show", "tiny")
    assert r.returncode == 0 and "[recipe]" in r.stdout


@pytest.mark.parametrize("mutation,needle", [
    (lambda s: s + "\n[bogus]\nx = 1\n", "unknown section"),
    (lambda s: s.replace('name = "ci"\n\n[recipe]', 'name = "ci"\ncolour = "red"\n\n[recipe]'), "unknown key"),
    (lambda s: s.replace("budgets = [6e10, 1e11, 2e11, 3e11]", "budgets = [1e10, -3e10, 1e11]"), "positive"),
    (lambda s: s.replace("budgets = [6e10, 1e11, 2e11, 3e11]", "budgets = [1e10, 3e10]"), "at least 3"),
    (lambda s: s.replace('name_suffix = "ci"', 'name_suffix = "ci"\nwarp = 9'), "unknown recipe constant"),
    (lambda s: s.replace("budgets = [1e12]", "budgets = [1e3]"), "no valid candidate"),
    (lambda s: s.replace("[fit]", "[fit\n"), "not valid TOML"),
    (lambda s: s.replace("budgets = [1e12]", "budgets = [1e12]\nspread_seeds = 1"), "spread_seeds"),
])
def test_bad_suites_fail_before_any_work(tmp_path, mutation, needle):
    with pytest.raises(DelphiError, match=needle):
        parse_suite(mutation(SUITE))
    p = tmp_path / "bad.toml"
    p.write_text(mutation(SUITE))
    r = _cli("run", str(p), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_spread_seeds_only_at_the_smallest_heldout_budget():
    spec = parse_suite(SUITE.replace("budgets = [1e12]", "budgets = [1e12, 2e12]\nspread_seeds = [0, 1, 2]"))
    assert spec.seeds_for(1e12) == (0, 1, 2)  # seed 0 (from `seeds`) is not repeated
    assert spec.seeds_for(2e12) == (0,)


def test_suite_sections_are_typed_objects():
    """Each TOML table becomes its own frozen section, with TOML's lists and integers normalised."""
    from delphi.sweep.suite import EvalSettings, FitSettings, GridSpec, HeldoutSpec, TrainSettings

    spec = parse_suite(SUITE.replace("budgets = [1e12]", "budgets = [1e12, 2e12]\nspread_seeds = [1]"))
    assert isinstance(spec.grid, GridSpec) and isinstance(spec.heldout, HeldoutSpec)
    assert isinstance(spec.eval, EvalSettings) and isinstance(spec.train, TrainSettings)
    assert isinstance(spec.fit, FitSettings)
    assert spec.heldout.budgets == (1e12, 2e12) and spec.heldout.spread_seeds == (1,)
    assert all(isinstance(b, float) for b in spec.grid.budgets + spec.heldout.budgets)
    assert isinstance(spec.train.checkpoint_every_minutes, float)
    hash(spec.grid), hash(spec.heldout), hash(spec.eval)  # tuples, not lists: hashable
    with pytest.raises(AttributeError):
        spec.grid.seed = 3  # frozen
    run = spec.grid_specs()[0]  # the sections reach every run spec
    assert run.eval_windows_per_domain == spec.eval.windows_per_domain and run.precision == spec.train.precision


def test_seed_spread_summary():
    from delphi.forecast.check import seed_spread

    rows = [{"budget": 1e12, "actual": a} for a in (3.0, 3.03, 2.97)] + [{"budget": 3e12, "actual": 2.9},
                                                                       {"budget": 3e12, "actual": None}]
    (sp,) = seed_spread(rows)  # the 3e12 budget has one scored seed: no spread
    assert sp["seeds"] == 3 and sp["mean"] == pytest.approx(3.0)
    assert sp["range_pct"] == pytest.approx(2.0) and sp["std_pct"] == pytest.approx(1.0)
