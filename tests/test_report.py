"""The report: every artefact of a suite report, on a synthetic but realistic suite directory.

The suite's runs come from a small rescaled Delphi recipe; their losses follow a known law
L(N, D) = E + A/N^a + B/D^b plus noise, so each IsoFLOP curve has a real minimum inside the grid.
fit.json is produced by `delphi.fit` on the written runs table, as `delphi run` does; the ledger and
check.json are written by hand in the documented schemas. Partial suites (no fit, no held-out
run, no check, a failed run, a torn metrics line) must still produce a report that says what is
missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from delphi.config import DataSpec
from delphi.recipe import DELPHI

TOY = dataclasses.replace(
    DELPHI, name="toy", seq_len=128, head_dim=32, vocab_size=2048, min_width=64, width_step=32,
    width_step_large=32, max_width=513, max_params_floor=5e7, max_tokens_per_param=400, target_steps=256,
    min_batch=4, ref_batch=16, ref_tokens=2e7, depth_base=16, depth_log_coef=1, depth_offset=2,
    name_suffix="toy")
LAW = {"E": 2.3, "A": 150.0, "a": 0.30, "B": 80.0, "b": 0.30}
GRID_BUDGETS = (1e13, 2e13, 3e13, 5e13, 1e14)  # 5 optima: bootstrap resamples need 4 distinct points
HELDOUT_BUDGET = 1e15
DOMAINS = ("prose", "code", "math")


def true_loss(params: float, tokens: float) -> float:
    return LAW["E"] + LAW["A"] / params ** LAW["a"] + LAW["B"] / tokens ** LAW["b"]


def _pick(cands, k: int = 5):
    """k candidates centred on the true optimum (like a well-centred IsoFLOP grid)."""
    losses = [true_loss(c.params, c.tokens) for c in cands]
    i = int(np.argmin(losses))
    lo = max(0, min(i - k // 2, len(cands) - k))
    return cands[lo:lo + k]


def _write_run(root: Path, spec, loss: float | None, status: str, reason: str | None, rng, role: str,
               hf: bool = True, finished: bool = True) -> dict:
    d = root / "runs" / spec.name
    d.mkdir(parents=True)
    (d / "run.json").write_text(spec.to_json())
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
        if s in steps[::15] or s == steps[-1]:
            lines.append({"kind": "eval", "step": int(s), "macro_loss": cur + 0.02, "macro_bpb": (cur + 0.02) / 3,
                          "domains": {}})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tokens = spec.tokens
    row = {"name": spec.name, "role": role, "status": status, "reason": reason, "budget": spec.budget,
           "flops": spec.flops, "params": spec.shape.num_params, "tokens": tokens,
           "hidden_size": spec.shape.hidden_size, "num_layers": spec.shape.num_layers,
           "batch_size": spec.batch_size, "train_steps": spec.train_steps, "learning_rate": spec.optimizer.lr,
           "seed": spec.seed, "loss": loss, "bpb": None if loss is None else loss / 3.1,
           "wall_time_s": 40.0 + tokens / 2e5, "tokens_per_s": 2e5}
    for i, dom in enumerate(DOMAINS):
        row[f"loss/{dom}"] = None if loss is None else loss + 0.2 * (i - 1)
        row[f"bpb/{dom}"] = None if loss is None else (loss + 0.2 * (i - 1)) / 3.1
    if not finished:
        return row
    summary = {k: row[k] for k in ("name", "status", "reason", "budget", "seed", "hidden_size", "num_layers",
                                   "batch_size", "train_steps", "learning_rate", "params", "tokens", "flops",
                                   "loss", "bpb", "wall_time_s", "tokens_per_s")}
    summary.update({"recipe": spec.recipe, "final_train_loss": lines[-2]["loss"] if loss else None,
                    "eval": {"macro_loss": loss, "macro_bpb": row["bpb"], "micro_loss": loss, "micro_bpb": row["bpb"],
                             "domains": {dom: {"loss": row[f"loss/{dom}"], "bpb": row[f"bpb/{dom}"], "tokens": 4096,
                                               "bytes": 12000} for dom in DOMAINS}},
                    "mfu": 0.21, "precision": "fp32", "world_size": 1, "threads": 2, "code_version": "test",
                    "tags": {"role": role}})
    (d / "summary.json").write_text(json.dumps(summary, indent=1))
    if hf and status == "completed":
        (d / "hf").mkdir()
        (d / "hf" / "config.json").write_text("{}")
    return row


def make_suite(root: Path, *, heldout: bool = True, check: bool = True, failed: bool = True,
               fit: bool = True, seed: int = 0, budgets: tuple[float, ...] = GRID_BUDGETS) -> dict:
    """Write a suite directory under `root`; returns the facts the tests compare against."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.toml").write_text(
        'name = "toy"\nrecipe = "toy"\nfit_budgets = [1e13, 2e13, 3e13, 5e13, 1e14]\nheldout_budgets = [1e15]\n'
        'seeds = [0]\n\n[data]\nmixture = "embedded"\ntokenizer = "embedded-bpe"\n\n[executor]\nkind = "local"\n')
    data = DataSpec()
    rows = []
    for b in budgets:
        for c in _pick(TOY.candidates(b)):
            spec = c.to_run_spec(data=data, tags={"role": "grid"})
            loss = true_loss(c.params, c.tokens) * (1 + 0.002 * rng.standard_normal())
            rows.append(_write_run(root, spec, loss, "completed", None, rng, "grid"))
    failed_name = None
    if failed:
        c = TOY.candidates(budgets[1])[-1]
        spec = c.to_run_spec(data=data, tags={"role": "grid"}, name=c.name + "-lr-high")
        rows.append(_write_run(root, spec, None, "diverged", "non-finite train loss (nan) at step 412", rng, "grid"))
        failed_name = spec.name
    table = pd.DataFrame(rows)
    table.to_csv(root / "runs.csv", index=False)
    facts: dict = {"grid_names": [r["name"] for r in rows if r["status"] == "completed"], "failed": failed_name}
    if not fit:
        return facts

    from delphi.fit.isoflop import fit_isoflop
    from delphi.fit.loss_law import fit_loss_law
    from delphi.fit.runs_table import load_runs_table

    ok = table[table["status"] == "completed"]
    ok.to_csv(root / "fit-input.csv", index=False)
    sha = hashlib.sha256((root / "fit-input.csv").read_bytes()).hexdigest()
    iso = fit_isoflop(load_runs_table(root / "fit-input.csv"), metric="loss")
    optima = iso.optima()
    law = fit_loss_law(optima["flops"], optima["loss"], bootstrap=200, seed=0)
    (root / "fit.json").write_text(json.dumps({"metric": "loss", "isoflop": iso.to_dict(), "loss_law": law.to_dict(),
                                               "runs_table_sha256": sha,
                                               "settings": {"metric": "loss", "bootstrap": 200, "seed": 0}}))
    facts["law"] = law
    facts["iso"] = iso
    if not heldout:
        return facts

    alloc = iso.to_dict()["allocation"]["tokens"]
    c = TOY.heldout(HELDOUT_BUDGET, alloc["A"], alloc["alpha"], suffix="heldout")
    spec = c.to_run_spec(data=data, tags={"role": "heldout"})
    forecast = float(law.predict(spec.flops))
    lo, hi = (float(x) for x in law.interval(spec.flops))
    loo = [float(x) for x in law.loo(spec.flops)]
    ledger_entry = {"index": 0, "kind": "forecast", "timestamp": "2025-01-01T00:00:00Z",
                    "forecast": {"run": spec.name, "budget": HELDOUT_BUDGET, "flops": spec.flops, "loss": forecast,
                                 "ci_low": lo, "ci_high": hi, "loo_min": loo[0], "loo_max": loo[1], "seed": 0},
                    "run_spec": spec.to_dict(), "runs_table_sha256": sha, "prev_hash": None}
    ledger_entry["hash"] = hashlib.sha256(json.dumps(ledger_entry, sort_keys=True).encode()).hexdigest()
    (root / "ledger.jsonl").write_text(json.dumps(ledger_entry) + "\n")
    actual = true_loss(c.params, c.tokens) * 1.004
    row = _write_run(root, spec, actual, "completed", None, rng, "heldout")
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table.to_csv(root / "runs.csv", index=False)
    facts.update(heldout=spec.name, forecast=forecast, ci=(lo, hi), loo=loo, actual=actual, spec=spec,
                 ledger_hash=ledger_entry["hash"])
    if check:
        res = (actual - forecast) / forecast * 100
        largest = max(budgets)
        (root / "check.json").write_text(json.dumps({"ledger_ok": True, "ledger_problems": [], "results": [{
            "run": spec.name, "seed": 0, "budget": HELDOUT_BUDGET, "flops": spec.flops,
            "extrapolation": spec.flops / largest, "forecast": forecast, "ci_low": lo, "ci_high": hi,
            "loo_min": loo[0], "loo_max": loo[1], "actual": actual, "residual_pct": res,
            "inside": bool(lo <= actual <= hi), "ledger_entry": ledger_entry["hash"], "status": "scored"}],
            "seed_spread": [{"budget": HELDOUT_BUDGET, "seeds": 3, "mean": actual, "min": actual - 0.01,
                             "max": actual + 0.01, "range_pct": 0.42, "std_pct": 0.21}]}))
        facts["residual_pct"] = res
    return facts


# ---- tests -----------------------------------------------------------------------------------

import re  # noqa: E402

import pytest  # noqa: E402

from delphi.errors import DelphiError  # noqa: E402
from delphi.report import build_report  # noqa: E402
from delphi.report import fmt  # noqa: E402
from delphi.report.model_card import card_title, model_card  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("isoflop", "allocation", "loss_law", "training")


def _needs_fit():
    pytest.importorskip("delphi.fit.isoflop", reason="delphi.fit (the fitting area) is not available")
    pytest.importorskip("delphi.fit.loss_law", reason="delphi.fit (the fitting area) is not available")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    _needs_fit()
    root = tmp_path_factory.mktemp("full") / "suite"
    facts = make_suite(root)
    paths = build_report(root)
    return root, facts, paths, (root / "report.html").read_text(), (root / "report.md").read_text()


def _text_of(html: str) -> str:
    """Visible text of the HTML page (tags dropped, entities kept simple)."""
    import html as h

    text = h.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S)))
    return re.sub(r"\s+", " ", text)


def test_every_artefact_is_written(full):
    root, facts, paths, html, md = full
    assert paths["html"] == root / "report.html" and paths["markdown"] == root / "report.md"
    for key in FIGURES:
        p = paths[f"figure:{key}"]
        assert p == root / "figures" / f"{key}.png"
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, key  # a real plot, not an empty canvas
        assert f"](figures/{key}.png)" in md
    # Self-contained HTML: every figure embedded, nothing fetched from elsewhere.
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "<script" not in html
    # One card per completed run (grid + held-out), each beside its exported weights.
    cards = {k[5:]: v for k, v in paths.items() if k.startswith("card:")}
    assert set(cards) == set(facts["grid_names"]) | {facts["heldout"]}
    for name, p in cards.items():
        assert p == root / "runs" / name / "hf" / "README.md"
    assert facts["failed"] not in cards


def test_residual_table_has_the_checked_numbers(full):
    root, facts, paths, html, md = full
    row = next(line for line in md.splitlines() if line.startswith(f"| `{facts['heldout']}`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    lo, hi = facts["ci"]
    inside = lo <= facts["actual"] <= hi
    assert cells[3] == "10.0×"  # 1e15 / 1e14
    assert cells[4] == f"{facts['forecast']:.4f}"
    assert cells[5] == f"[{lo:.4f}, {hi:.4f}]"
    assert cells[6] == f"[{facts['loo'][0]:.4f}, {facts['loo'][1]:.4f}]"
    assert cells[7] == f"{facts['actual']:.4f}"
    assert cells[8] == f"{facts['residual_pct']:+.2f}%"
    assert cells[9] == ("yes" if inside else "**no**")
    assert cells[10] == f"`{facts['ledger_hash'][:12]}…`" and cells[11] == "scored"
    spread = next(line for line in md.splitlines() if "0.42%" in line)
    assert [c.strip() for c in spread.strip("|").split("|")][1::3] == ["3", "0.42%"]
    text = _text_of(html)
    assert f"residual {facts['residual_pct']:+.2f}%" in text
    assert ("inside the 95% interval" if inside else "OUTSIDE the 95% interval") in text


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
    assert cells[16] == fmt.sci(spec.flops) and cells[17] == f"{facts['actual']:.4f}"
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
    assert rows["Vocab size"].startswith("2,048 ")
    assert rows["Tokens"] == f"{spec.tokens:,}" and rows["Steps"] == f"{spec.train_steps:,}"
    assert rows["Peak LR (AdamH, linear weights)"] == f"{spec.optimizer.lr:.4g}"
    assert rows["Validation loss (macro, nats/token)"] == f"{facts['actual']:.4f}"
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


def test_partial_suite_without_heldout_or_check(tmp_path):
    _needs_fit()
    root = tmp_path / "suite"
    facts = make_suite(root, heldout=False)
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert "check.json is missing" in text and "no held-out run in the runs table yet" in text
    assert "no forecast has been registered yet" in text
    for key in FIGURES:  # the loss law is drawn through the optima even with nothing to check
        assert paths[f"figure:{key}"].read_bytes().startswith(PNG_MAGIC)
    assert len([k for k in paths if k.startswith("card:")]) == len(facts["grid_names"])


def test_suite_before_any_fit(tmp_path):
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
    assert paths["figure:training"].read_bytes().startswith(PNG_MAGIC)
    assert paths["figure:isoflop"].read_bytes().startswith(PNG_MAGIC)  # the grid's points, at least


def test_unscored_heldout_and_broken_ledger_are_visible(tmp_path):
    root = tmp_path / "suite"
    make_suite(root, fit=False, failed=False, budgets=GRID_BUDGETS[:3])
    (root / "check.json").write_text(json.dumps({"ledger_ok": False, "ledger_problems": ["entry 1: hash mismatch"],
                                                 "results": [{"run": "isoflop-1e+15-x-heldout", "seed": 0,
                                                              "budget": 1e15, "flops": 1.01e15, "extrapolation": 10.1,
                                                              "forecast": 3.9, "ci_low": 3.8, "ci_high": 4.0,
                                                              "loo_min": 3.85, "loo_max": 3.95, "actual": None,
                                                              "residual_pct": None, "inside": None,
                                                              "ledger_entry": "ab" * 32,
                                                              "status": "refused: the ledger fails verification"}]}))
    paths = build_report(root)
    text = _text_of(paths["html"].read_text())
    assert "The ledger FAILS verification (entry 1: hash mismatch)" in text
    assert "not scored (refused: the ledger fails verification)" in text
    md = paths["markdown"].read_text()
    assert "| `isoflop-1e+15-x-heldout` | 0 | 1 × 10¹⁵ | 10.1× | 3.9000 | [3.8000, 4.0000] |" in md


def test_unfinished_and_empty_suites(tmp_path):
    root = tmp_path / "suite"
    (root / "runs" / "isoflop-a").mkdir(parents=True)
    (root / "suite.toml").write_text('name = "fresh"\n')
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


def test_downstream_section(tmp_path):
    """With evals enabled the suite has downstream.json (+ the runner's downstream.png): both shown."""
    _needs_fit()
    pytest.importorskip("delphi.downstream", reason="delphi.downstream (the eval area) is not available")
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
    assert paths["figure:downstream"].read_bytes().startswith(PNG_MAGIC)
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES) + 1
    md = paths["markdown"].read_text()
    assert "## Downstream forecast" in md and "](figures/downstream.png)" in md
    for c, a in zip(fc.target_flops, fc.acc_pred):
        assert f"| {fmt.pretty_flops(c)} | {fc.soft_pred[list(fc.target_flops).index(c)]:.4g} |" in md
        assert f"| {100 * a:.1f}% |" in md


def test_skipped_and_flagged_buckets_are_explained(full, tmp_path):
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
    assert paths["figure:isoflop"].read_bytes().startswith(PNG_MAGIC)


def test_report_command_imports_nothing_heavy():
    """`delphi` discovers every command at start-up: ours must not pull matplotlib/pandas/torch."""
    import subprocess
    import sys

    code = ("import sys, delphi.commands.report, delphi.report; "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
