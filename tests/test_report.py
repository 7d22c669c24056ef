"""The report: every artefact of a suite report, on a synthetic but realistic suite directory.

The suite is written by the same code `delphi run` uses: its TOML is read by `parse_suite` and
stored as `suite.toml`, run directories are prepared by the executor's `prepare_run_dir`, the runs
table is `collect` + `write_table`, fit.json is `fit_suite` on the grid's table, the held-out runs
are forecast and registered in the ledger by `register_heldout` (`Ledger.append`), and check.json
is `check_suite`. Only training is replaced: each run's metrics and summary follow a known law
L(N, D) = E + A/N^a + B/D^b plus noise, so each IsoFLOP curve has a real minimum inside the grid.
Partial suites (no fit, no held-out run, no check, a failed run, a torn metrics line) must still
produce a report that says what is missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from delphi.config import DataSpec
from delphi.sweep.executors import prepare_run_dir
from delphi.sweep.results import collect, write_table
from delphi.sweep.suite import SuiteSpec, parse_suite

LAW = {"E": 2.3, "A": 150.0, "a": 0.30, "B": 80.0, "b": 0.30}
GRID_BUDGETS = (1e13, 2e13, 3e13, 5e13, 1e14)  # 5 optima: bootstrap resamples need 4 distinct points
HELDOUT_BUDGET = 1e15
DOMAINS = ("prose", "code", "math")

# A small rescaled Delphi recipe, in the suite file format `delphi run` reads.
SUITE_TOML = """\
[suite]
name = "toy"

[recipe]
preset = "delphi"
name = "toy"
name_suffix = "toy"
seq_len = 128
head_dim = 32
vocab_size = 4096
min_width = 64
width_step = 32
width_step_large = 32
max_width = 513
max_params_floor = 5e7
max_tokens_per_param = 400
target_steps = 256
min_batch = 4
ref_batch = 16
ref_tokens = 2e7
depth_base = 16
depth_log_coef = 1
depth_offset = 2

[grid]
budgets = [1e13, 2e13, 3e13, 5e13, 1e14]
seed = 0

[heldout]
budgets = [1e15]
seeds = [0]
spread_seeds = [1, 2]

[data]
mixture = "embedded"
tokenizer = "embedded-bpe"

[fit]
metric = "loss"
bootstrap = 200
seed = 0
"""


def toy_suite(root: Path) -> SuiteSpec:
    suite = parse_suite(SUITE_TOML, where="toy suite", out_dir=str(root))
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.toml").write_text(suite.source)  # as `run_suite` keeps it
    return suite


def true_loss(params: float, tokens: float) -> float:
    return LAW["E"] + LAW["A"] / params ** LAW["a"] + LAW["B"] / tokens ** LAW["b"]


def _pick(cands, k: int = 5):
    """k candidates centred on the true optimum (like a well-centred IsoFLOP grid)."""
    losses = [true_loss(c.params, c.tokens) for c in cands]
    i = int(np.argmin(losses))
    lo = max(0, min(i - k // 2, len(cands) - k))
    return cands[lo:lo + k]


def _write_run(root: Path, spec, loss: float | None, status: str, reason: str | None, rng,
               hf: bool = True) -> None:
    """A trained run's directory: run.json and started.json as the executor writes them, then the
    metrics and summary a run with final validation loss `loss` leaves."""
    d = root / "runs" / spec.name
    prepare_run_dir(spec, d)
    per_step = spec.batch_size * spec.shape.seq_len
    steps = np.unique(np.linspace(1, spec.train_steps, 60).astype(int))
    start = math.log(spec.shape.vocab_size)
    final = loss if loss is not None else 9.0
    lines = []
    for s in steps:
        frac = s / spec.train_steps
        cur = final + (start - final) * math.exp(-6 * frac) + 0.03 * rng.standard_normal()
        if status == "diverged" and frac > 0.6:
            cur = float(start + 5 * (frac - 0.6))
        lines.append({"kind": "train", "step": int(s), "lr": spec.optimizer.lr, "loss": cur, "tokens": int(s) * per_step})
        if s in steps[::15] and s != steps[-1]:
            lines.append({"kind": "eval", "step": int(s), "macro_loss": cur + 0.02, "macro_bpb": (cur + 0.02) / 3,
                          "domains": {}})
    if loss is not None:  # the final evaluation, which summary.json copies
        lines.append({"kind": "eval", "step": int(steps[-1]), "macro_loss": loss, "macro_bpb": loss / 3.1,
                      "domains": {}})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tokens = spec.tokens
    domains = {dom: {"loss": None if loss is None else loss + 0.2 * (i - 1),
                     "bpb": None if loss is None else (loss + 0.2 * (i - 1)) / 3.1, "tokens": 4096, "bytes": 12000}
               for i, dom in enumerate(DOMAINS)}
    summary = {"name": spec.name, "status": status, "reason": reason, "budget": spec.budget, "seed": spec.seed,
               "hidden_size": spec.shape.hidden_size, "num_layers": spec.shape.num_layers,
               "batch_size": spec.batch_size, "train_steps": spec.train_steps, "learning_rate": spec.optimizer.lr,
               "params": spec.shape.num_params, "tokens": tokens, "flops": spec.flops, "loss": loss,
               "bpb": None if loss is None else loss / 3.1, "wall_time_s": 40.0 + tokens / 2e5, "tokens_per_s": 2e5,
               "recipe": spec.recipe, "final_train_loss": lines[-2]["loss"] if loss else None,
               "eval": {"macro_loss": loss, "macro_bpb": None if loss is None else loss / 3.1, "micro_loss": loss,
                        "micro_bpb": None if loss is None else loss / 3.1, "domains": domains},
               "mfu": 0.21, "precision": "fp32", "world_size": 1, "threads": 2, "code_version": "test",
               "tags": dict(spec.tags)}
    (d / "summary.json").write_text(json.dumps(summary, indent=1))
    if hf and status == "completed":
        (d / "hf").mkdir()
        (d / "hf" / "config.json").write_text("{}")


def make_suite(root: Path, *, heldout: bool = True, check: bool = True, failed: bool = True,
               fit: bool = True, seed: int = 0, budgets: tuple[float, ...] = GRID_BUDGETS) -> dict:
    """Write a suite directory under `root`, stage by stage as `delphi run` does; returns the
    facts the tests compare against."""
    from delphi.sweep.pipeline import fit_suite, register_heldout

    rng = np.random.default_rng(seed)
    suite = toy_suite(root)
    names = []
    for b in budgets:
        for c in _pick(suite.recipe.candidates(b)):
            spec = suite.run_spec(c, seed=suite.grid.seed, role="grid")
            loss = true_loss(c.params, c.tokens) * (1 + 0.002 * rng.standard_normal())
            _write_run(root, spec, loss, "completed", None, rng)
            names.append(spec.name)
    failed_name = None
    if failed:
        c = suite.recipe.candidates(budgets[1])[-1]
        spec = suite.run_spec(c, seed=suite.grid.seed, role="grid", name=c.name + "-lr-high")
        _write_run(root, spec, None, "diverged", "non-finite train loss (nan) at step 412", rng)
        failed_name = spec.name
    table = collect(root / "runs")
    write_table(table, root / "runs.csv")
    facts: dict = {"suite": suite, "grid_names": names, "failed": failed_name}
    if not fit:
        return facts

    fitted = fit_suite(suite, write_table(table, root / "fit-input.csv"))
    (root / "fit.json").write_text(json.dumps(fitted["record"], indent=2))
    facts.update(law=fitted["law"], iso=fitted["iso"])
    if not heldout:
        return facts

    specs = register_heldout(suite, root, fitted, progress=False)
    for spec in specs:
        cand_loss = true_loss(spec.shape.num_params, spec.tokens)
        _write_run(root, spec, cand_loss * (1.004 + 0.001 * spec.seed), "completed", None, rng)
    write_table(collect(root / "runs"), root / "runs.csv")
    facts.update(heldout=[s.name for s in specs], spec=specs[0], ledger_hash=specs[0].tags["ledger_entry"])
    if check:
        from delphi.forecast.check import check_suite

        result = check_suite(root)
        (root / "check.json").write_text(json.dumps(result, indent=2))
        facts["check"] = result
    return facts


# ---- tests -----------------------------------------------------------------------------------

import re  # noqa: E402

import pytest  # noqa: E402

from delphi.errors import DelphiError  # noqa: E402
from delphi.forecast.ledger import Ledger  # noqa: E402
from delphi.report import build_report  # noqa: E402
from delphi import fmt  # noqa: E402
from delphi.report.model_card import card_title, model_card  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("isoflop", "allocation", "loss_law", "training")
FIGURE_INCHES = {"isoflop": (9.0, 4.8), "allocation": (9.6, 4.0), "loss_law": (7.6, 4.8), "training": (10.0, 4.2)}
REPORT_DPI = 130  # the fit figures style's savefig.dpi (delphi.fit.plots.STYLE), which the PNGs are saved at


def figure_pixels(key: str) -> tuple[int, int]:
    w, h = FIGURE_INCHES[key]
    return round(w * REPORT_DPI), round(h * REPORT_DPI)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full") / "suite"
    facts = make_suite(root)
    paths = build_report(root)
    return root, facts, paths, (root / "report.html").read_text(), (root / "report.md").read_text()


def _text_of(html: str) -> str:
    """Visible text of the HTML page (tags dropped, entities kept simple)."""
    import html as h

    text = h.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S)))
    return re.sub(r"\s+", " ", text)


def _summary_loss(root: Path, name: str) -> float:
    return json.loads((root / "runs" / name / "summary.json").read_text())["loss"]


def test_the_fixture_is_what_delphi_run_writes(full):
    """The suite directory passes the real readers: suite.toml parses, the ledger verifies, and
    check scored every held-out run against the forecast registered for it."""
    root, facts, *_ = full
    assert parse_suite((root / "suite.toml").read_text()).name == "toy"
    ledger = Ledger(root / "ledger.jsonl")
    assert ledger.verify().ok
    entries = ledger.read()
    assert [e["forecast"]["run"] for e in entries] == facts["heldout"]
    assert facts["check"]["ok"] and [r["status"] for r in facts["check"]["results"]] == ["scored"] * 3


def test_every_artefact_is_written(full, plot_check):
    root, facts, paths, html, md = full
    assert paths["html"] == root / "report.html" and paths["markdown"] == root / "report.md"
    for key in FIGURES:
        p = paths[f"figure:{key}"]
        assert p == root / "figures" / f"{key}.png"
        assert p.read_bytes().startswith(PNG_MAGIC), key
        plot_check(p, size=figure_pixels(key))
        assert f"](figures/{key}.png)" in md
    # Self-contained HTML: every figure embedded, nothing fetched from elsewhere.
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "<script" not in html
    # One card per completed run (grid + held-out), each beside its exported weights.
    cards = {k[5:]: v for k, v in paths.items() if k.startswith("card:")}
    assert set(cards) == set(facts["grid_names"]) | set(facts["heldout"])
    for name, p in cards.items():
        assert p == root / "runs" / name / "hf" / "README.md"
    assert facts["failed"] not in cards


def test_residual_table_has_the_checked_numbers(full):
    """Each held-out row shows the registered forecast (from the ledger), the run's actual loss
    (from its summary) and the residual (actual − forecast) / forecast."""
    root, facts, paths, html, md = full
    text = _text_of(html)
    registered = {e["forecast"]["run"]: e for e in Ledger(root / "ledger.jsonl").read()}
    for name in facts["heldout"]:
        f, entry = registered[name]["forecast"], registered[name]
        actual = _summary_loss(root, name)
        residual = 100 * (actual - f["loss"]) / f["loss"]
        inside = f["ci_low"] <= actual <= f["ci_high"]
        row = next(line for line in md.splitlines() if line.startswith(f"| `{name}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(f["seed"])
        assert cells[3] == "10.0×"  # 1e15 / 1e14
        assert cells[4] == f"{f['loss']:.4f}"
        assert cells[5] == f"[{f['ci_low']:.4f}, {f['ci_high']:.4f}]"
        assert cells[6] == f"[{f['loo_min']:.4f}, {f['loo_max']:.4f}]"
        assert cells[7] == f"{actual:.4f}"
        assert cells[8] == f"{residual:+.2f}%"
        assert cells[9] == ("yes" if inside else "**no**")
        assert cells[10] == f"`{entry['hash'][:12]}…`" and cells[11] == "scored"
        assert f"residual {residual:+.2f}%" in text
        assert ("inside the 95% interval" if inside else "OUTSIDE the 95% interval") in text
    # Three seeds at 1e15: the seed-spread table gives their range as a share of their mean.
    losses = [_summary_loss(root, n) for n in facts["heldout"]]
    spread = next(line for line in md.splitlines() if line.startswith(f"| {fmt.pretty_flops(HELDOUT_BUDGET)} | 3 |"))
    cells = [c.strip() for c in spread.strip("|").split("|")]
    assert cells[2] == f"{np.mean(losses):.4f}" and cells[3] == f"[{min(losses):.4f}, {max(losses):.4f}]"
    assert cells[4] == f"{100 * (max(losses) - min(losses)) / np.mean(losses):.2f}%"


def test_fit_numbers_and_laws_are_reported(full):
    root, facts, paths, html, md = full
    iso = facts["iso"].to_dict()
    for b in iso["buckets"]:
        if b.get("optimal_loss") is not None:
            assert f"| {fmt.pretty_flops(b['flops'])} |" in md and f"| {b['optimal_loss']:.4f} |" in md
    law = facts["law"].to_dict()
    assert f"L*(C) = {law['E']:.4f} + {fmt.sci(law['A'])} · C^(−{law['alpha']:.4f})" in md
    alloc = iso["allocation"]["tokens"]
    assert f"D*(C) = {fmt.sci(alloc['A'])} · C^{alloc['alpha']:.3f}" in md


def test_recipe_table_lists_every_run_with_its_recipe(full):
    root, facts, paths, html, md = full
    spec = facts["spec"]
    row = next(line for line in md.splitlines() if line.startswith(f"| `{spec.name}` | heldout |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    o = spec.optimizer
    assert cells[1:4] == ["heldout", "completed", "1 × 10¹⁵"]
    assert cells[4:10] == [str(spec.shape.hidden_size), str(spec.shape.num_layers), str(spec.shape.num_heads),
                           f"{spec.shape.num_params:,}", str(spec.batch_size), f"{spec.train_steps:,}"]
    assert cells[10] == f"{spec.tokens:,}"
    assert cells[11:15] == [f"{o.lr:.4g}", f"{o.adam_lr:.4g}", f"{o.epsilon:.3g}", f"{o.beta2:.6g}"]
    assert cells[16] == fmt.sci(spec.flops) and cells[17] == f"{_summary_loss(root, spec.name):.4f}"
    for name in facts["grid_names"]:
        assert f"| `{name}` | grid | completed |" in md
    assert f"| `{facts['failed']}` | grid | diverged |" in md
    # The failed run is called out, with its reason, where a reader looks first.
    assert "non-finite train loss (nan) at step 412" in _text_of(html)


def test_model_card_matches_the_run(full):
    root, facts, paths, html, md = full
    spec = facts["spec"]
    card = (root / "runs" / spec.name / "hf" / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: transformers\n")
    assert f"# {card_title(spec)}" in card and "## Model details" in card and "## Training" in card
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", card, flags=re.M))
    assert rows["Parameters"] == f"{spec.shape.num_params:,}"
    assert rows["Hidden size"] == str(spec.shape.hidden_size) and rows["Layers"] == str(spec.shape.num_layers)
    assert rows["Attention heads"] == str(spec.shape.num_heads) and rows["Head dim"] == "32"
    assert rows["FFN intermediate"] == f"{4 * spec.shape.hidden_size} (MLP ratio 4)"
    assert rows["Vocab size"].startswith("4,096 ")
    assert rows["Tokens"] == f"{spec.tokens:,}" and rows["Steps"] == f"{spec.train_steps:,}"
    assert rows["Peak LR (AdamH, linear weights)"] == f"{spec.optimizer.lr:.4g}"
    assert rows["Validation loss (macro, nats/token)"] == f"{_summary_loss(root, spec.name):.4f}"
    assert rows["Tied embeddings"] == "No" and rows["Bias terms"] == "None"
    assert "held-out run" in card
    # The same card is in the report.
    assert f"{card_title(spec)} — `{spec.name}`" in md


def test_delphi_1e22_card_reproduces_the_released_numbers():
    """Our card for Delphi's 1e22 configuration prints what marin-community's card prints."""
    from delphi.recipe import DELPHI

    cand = next(c for c in DELPHI.candidates(1e22) if c.shape.hidden_size == 3840)
    spec = cand.to_run_spec(data=DataSpec(tokenizer="llama3"))
    card = model_card(spec)
    assert card.title == "delphi-1e22-9.7Bparams-160Btokens"
    d, t = dict(card.details), dict(card.training)
    assert d["Architecture"] == "Qwen 3 (pre-norm decoder, RMSNorm, RoPE, QK-norm with learned scaling, SwiGLU MLPs)"
    assert d["Parameters"] == "9,714,698,752" and d["Layers"] == "37" and d["Attention heads"] == "30"
    assert d["KV heads"] == "30 (no GQA)" and d["FFN intermediate"] == "15360 (MLP ratio 4)"
    assert d["Vocab size"] == "128,256 (Llama 3 tokenizer)" and d["Max sequence length"] == "4096"
    assert d["Position encoding"] == "RoPE (θ = 500000, Llama 3-style scaling)"
    assert t["Tokens"] == "160,369,213,440" and t["Steps"] == "38,235"
    assert t["LR schedule"] == "WSD: 10% linear warmup, 20% linear decay, 0 floor"
    assert t["Batch size"].startswith("1024 sequences × 4096 tokens")


def test_partial_suite_without_heldout_or_check(tmp_path, plot_check):
    root = tmp_path / "suite"
    facts = make_suite(root, heldout=False)
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert "check.json is missing" in text and "no held-out run in the runs table yet" in text
    assert "no forecast has been registered yet" in text
    for key in FIGURES:  # the loss law is drawn through the optima even with nothing to check
        plot_check(paths[f"figure:{key}"], size=figure_pixels(key))
    assert len([k for k in paths if k.startswith("card:")]) == len(facts["grid_names"])


def test_suite_before_any_fit(tmp_path, plot_check):
    """Only runs.csv and run directories: a report with the curves it can draw and clear notes."""
    root = tmp_path / "suite"
    make_suite(root, fit=False, failed=False, budgets=GRID_BUDGETS[:3])
    # A run killed mid-write leaves a torn last metrics line: skipped and reported, not fatal.
    first = sorted((root / "runs").iterdir())[0]
    with open(first / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 99, "lo')
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert "fit.json is missing" in text and "unreadable line(s) skipped" in text
    plot_check(paths["figure:training"], size=figure_pixels("training"))
    plot_check(paths["figure:isoflop"], size=figure_pixels("isoflop"))  # the grid's points, at least


def test_unscored_heldout_and_broken_ledger_are_visible(full, tmp_path):
    """A ledger edited after registration: check refuses to score, and the report says so."""
    import shutil

    from delphi.forecast.check import check_suite

    root = tmp_path / "suite"
    shutil.copytree(full[0], root)
    ledger = root / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["forecast"]["loss"] = round(entry["forecast"]["loss"] - 0.05, 4)  # a forecast moved after the fact
    ledger.write_text("\n".join([json.dumps(entry, sort_keys=True)] + lines[1:]) + "\n")
    result = check_suite(root)
    (root / "check.json").write_text(json.dumps(result, indent=2))
    assert not result["ledger_ok"] and result["ledger_problems"]
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert f"The ledger FAILS verification ({result['ledger_problems'][0]}" in text
    assert "not scored (refused: the ledger fails verification)" in text
    md = paths["markdown"].read_text()
    f = entry["forecast"]
    assert (f"| `{f['run']}` | 0 | {fmt.pretty_flops(f['flops'])} | {f['extrapolation']:.1f}× | {f['loss']:.4f} | "
            f"[{f['ci_low']:.4f}, {f['ci_high']:.4f}] |") in md


def test_unfinished_and_empty_suites(tmp_path):
    root = tmp_path / "suite"
    (root / "runs" / "isoflop-a").mkdir(parents=True)
    fresh = parse_suite(SUITE_TOML.replace('name = "toy"', 'name = "fresh"', 1))
    (root / "suite.toml").write_text(fresh.source)
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert "Delphi suite report — fresh" in text
    assert "nothing has finished" in text and "no trained model yet" in text
    assert not any(k.startswith("figure:") for k in paths)


def test_bad_suite_dir_is_one_clear_error(tmp_path, capsys):
    from delphi.cli import main

    with pytest.raises(DelphiError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(DelphiError, match="not a suite directory"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_cli_writes_to_out_dir(tmp_path, capsys):
    from delphi.cli import main

    root = tmp_path / "suite"
    make_suite(root, fit=False, failed=False, budgets=GRID_BUDGETS[:3])
    out = tmp_path / "elsewhere"
    assert main(["report", str(root), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file() and (out / "figures").is_dir()
    assert not (root / "report.html").exists()
    # Cards always sit beside the weights they describe.
    assert all((d / "hf" / "README.md").is_file() for d in (root / "runs").iterdir())
    assert "report.html" in capsys.readouterr().out


def test_downstream_section(tmp_path, plot_check):
    """With evals enabled the suite has downstream.json (+ the runner's downstream.png): both shown."""
    import pandas as pd

    from delphi.downstream import compose, fit_sigmoid, fit_soft_law, select_optima

    root = tmp_path / "suite"
    make_suite(root, heldout=False, failed=False)
    runs = pd.read_csv(root / "runs.csv")
    col = "mmlu_sl_verb_5shot/bpb"
    runs[col] = 0.4 + 2.0 * (runs["flops"] / 1e12) ** -0.15
    rng = np.random.default_rng(1)
    soft = np.linspace(0.5, 1.6, 12)
    pool = pd.DataFrame({"model": [f"m{i}" for i in range(12)], "soft": soft,
                         "hard": 0.25 + 0.45 / (1 + np.exp(6 * (soft - 1.0))) + 0.01 * rng.standard_normal(12)})
    # The steps of forecast_downstream with small bootstraps (the full one takes seconds).
    C, y, names = select_optima(runs, col)
    step1 = fit_soft_law(C, y, column=col, names=names, bootstrap=200)
    step2 = fit_sigmoid(pool["soft"], pool["hard"], groups=pool["model"], floor=0.25, bootstrap=20)
    fc = compose(step1, step2, [1e15, 1e16], pool=pool, draws=2000)
    (root / "downstream.json").write_text(json.dumps(fc.to_dict()))
    fc.plot(root / "downstream.png")
    paths = build_report(root)
    plot_check(paths["figure:downstream"], size=(11 * 130, round(4.3 * 130)))  # downstream.plot: 11 × 4.3 in
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES) + 1
    md = paths["markdown"].read_text()
    assert "## Downstream forecast" in md and "](figures/downstream.png)" in md
    for c, a in zip(fc.target_flops, fc.acc_pred):
        assert f"| {fmt.pretty_flops(c)} | {fc.soft_pred[list(fc.target_flops).index(c)]:.4g} |" in md
        assert f"| {100 * a:.1f}% |" in md


def test_skipped_and_flagged_buckets_are_explained(full, tmp_path, plot_check):
    """A bucket without an optimum (too few runs) and one whose vertex lies off the grid."""
    import shutil

    root = tmp_path / "suite"
    shutil.copytree(full[0], root)
    fit = json.loads((root / "fit.json").read_text())
    iso = fit["isoflop"]
    gone = iso["buckets"].pop(0)
    iso["skipped"] = [{"flops": gone["flops"], "n_runs": 2, "reason": "only 2 runs (a parabola needs 3)"}]
    iso["buckets"][0]["flags"] = ["vertex_above_range"]
    iso["allocation"] = None
    (root / "fit.json").write_text(json.dumps(fit))
    paths = build_report(root)
    md = paths["markdown"].read_text()
    assert f"| {fmt.pretty_flops(gone['flops'])} | 2 | – | – | – | skipped: only 2 runs (a parabola needs 3) |" in md
    flagged = next(line for line in md.splitlines()
                   if line.startswith(f"| {fmt.pretty_flops(iso['buckets'][0]['flops'])} |"))
    assert "optimum beyond the largest token count" in flagged
    assert "D*(C) =" not in md  # no allocation law to state
    plot_check(paths["figure:isoflop"], size=figure_pixels("isoflop"))


def test_report_command_imports_nothing_heavy():
    """`delphi` discovers every command at start-up: ours must not pull matplotlib/pandas/torch."""
    import subprocess
    import sys

    code = ("import sys, delphi.commands.report, delphi.report; "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unchanged_suite_redraws_no_figure_and_a_change_redraws(tmp_path, monkeypatch):
    """A second report of the same suite reuses the PNGs (no figure function is called, the pages
    embed the same bytes); new input (a run's metrics) or a PNG edited on disk redraws."""
    import shutil

    from delphi.report import plots

    root = tmp_path / "suite"
    make_suite(root, check=False)
    build_report(root)
    first = {k: (root / "figures" / f"{k}.png").read_bytes() for k in FIGURES}
    first_html = (root / "report.html").read_text()
    drawn: list[str] = []
    for name in ("isoflop_figure", "allocation_figure", "loss_law_figure", "training_curves_figure"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _n=name, **k: (drawn.append(_n), _real(*a, **k))[1])
    build_report(root)
    assert drawn == []
    assert {k: (root / "figures" / f"{k}.png").read_bytes() for k in FIGURES} == first
    strip = lambda h: re.sub(r"generated [^<]* by", "", h)  # noqa: E731 - the page's timestamp
    assert strip((root / "report.html").read_text()) == strip(first_html)

    (root / "figures" / "allocation.png").write_bytes(b"not the drawn figure")
    build_report(root)
    assert drawn == ["allocation_figure"]
    assert (root / "figures" / "allocation.png").read_bytes() == first["allocation"]

    drawn.clear()
    run = next(p for p in sorted((root / "runs").iterdir()) if (p / "metrics.jsonl").is_file())
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "train", "step": 10**6, "loss": 1.0}) + "\n")
    build_report(root)
    assert sorted(drawn) == ["allocation_figure", "isoflop_figure", "loss_law_figure", "training_curves_figure"]
    # A copy of the suite directory (another path) still hits: the key is the content, not the place.
    drawn.clear()
    shutil.copytree(root, tmp_path / "copy")
    build_report(tmp_path / "copy")
    assert drawn == []


def test_unchanged_report_is_not_rebuilt_and_any_change_rebuilds(tmp_path, monkeypatch, capsys):
    """A report built from the same inputs, whose files are all still there unchanged, is returned
    without reading the suite; a changed input, an edited output or `--force` rebuilds it."""
    from delphi.cli import main
    from delphi.report import report as report_mod

    root = tmp_path / "suite"
    make_suite(root, check=False)
    first = build_report(root)
    reads: list[str] = []
    real_read = report_mod.read_suite_dir
    monkeypatch.setattr(report_mod, "read_suite_dir", lambda d: (reads.append(str(d)), real_read(d))[1])

    assert build_report(root) == first and reads == []
    assert main(["report", str(root)]) == 0
    assert "is up to date" in capsys.readouterr().out and reads == []

    assert main(["report", str(root), "--force"]) == 0
    assert "wrote" in capsys.readouterr().out and len(reads) == 1

    (root / "report.md").write_text("edited by hand\n")  # an output changed: rebuilt, not trusted
    build_report(root)
    assert len(reads) == 2 and (root / "report.md").read_text() != "edited by hand\n"

    card = next(p for k, p in first.items() if k.startswith("card:"))
    card.unlink()  # an output is gone
    build_report(root)
    assert len(reads) == 3 and card.is_file()

    with (root / "ledger.jsonl").open("a") as f:  # an input changed
        f.write("\n")
    build_report(root)
    assert len(reads) == 4
    build_report(root)
    assert len(reads) == 4
