"""`build_report(suite_dir)`: report.html (self-contained) and report.md (+ figures/) for a suite.

Sections: headline and what is missing; IsoFLOP curves; compute-optimal N*(C), D*(C); the loss
law with the held-out forecasts; the residual table; training curves; the recipe table; model
cards (also written as `runs/<name>/hf/README.md` beside each exported model); the downstream
forecast when the suite has one; the suite spec and ledger.

A partial suite (nothing fitted, no held-out run, failed runs, no check.json) still gets a report
of what exists, with a visible note for each missing piece.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from delphi import fmt
from delphi.files import atomic_write_json, sha256_file
from delphi.report.document import Bullets, Code, Details, Figure, Heading, Note, Para, Table, to_html, to_markdown
from delphi.report.suite import Suite, ok_mask, read_suite_dir


# ---- sections --------------------------------------------------------------------------------

def _headline(suite: Suite, view) -> list:
    blocks: list = []
    t = suite.table
    n_total = len(t) if t is not None else 0
    n_ok = int(ok_mask(t).sum()) if n_total else 0
    n_grid = int((t["role"] != "heldout").sum()) if n_total else 0
    n_held = n_total - n_grid
    flops = float(t["flops"].where(ok_mask(t)).sum()) if n_total and "flops" in t else 0.0
    wall = float(t["wall_time_s"].fillna(0).sum()) if n_total and "wall_time_s" in t else None
    facts = [f"**{n_total}** runs in the table ({n_grid} IsoFLOP grid, {n_held} held-out), **{n_ok}** completed"]
    if flops:
        facts.append(f"training compute of completed runs: **{fmt.pretty_flops(flops)} FLOPs**"
                     + (f", wall time {fmt.duration(wall)}" if wall else ""))
    pending = [r.name for r in suite.runs.values() if r.summary is None]
    if pending:
        facts.append(f"{len(pending)} run director{'y has' if len(pending) == 1 else 'ies have'} no summary.json yet "
                     f"(not finished or not started): " + ", ".join(f"`{p}`" for p in pending[:8])
                     + (" …" if len(pending) > 8 else ""))
    if view.loss_law is not None:
        facts.append(f"loss law: `{view.loss_law.text()}` fitted on {len(view.fitted)} IsoFLOP optima")
    blocks.append(Bullets(facts))
    if suite.check is not None and not suite.check.ledger_ok:
        problems = "; ".join(suite.check.ledger_problems) or "no details recorded"
        blocks.append(Note(f"The ledger FAILS verification ({problems}): no held-out run was scored.", "bad"))
    for r in suite.check_results:
        f, a, res = fmt.num(r.forecast), fmt.num(r.actual), fmt.num(r.residual_pct)
        ext = fmt.num(r.extrapolation)
        inside = r.inside
        where = f" ({ext:.0f}× past the largest fitted budget)" if ext else ""
        text = (f"Held-out run `{r.run}` (seed {fmt.dash(r.seed)}) at {fmt.pretty_flops(r.flops or r.budget)} "
                f"FLOPs{where}: forecast **{fmt.fixed(f)}** [{fmt.fixed(r.ci_low)}, {fmt.fixed(r.ci_high)}]")
        if a is None:
            blocks.append(Note(text + f"; not scored ({r.status or 'no actual loss yet'}).", "info"))
            continue
        text += f", actual **{fmt.fixed(a)}**, residual **{fmt.pct(res)}**"
        if inside is None:
            blocks.append(Note(text, "info"))
        else:
            blocks.append(Note(text + (" — inside the 95% interval." if inside else " — OUTSIDE the 95% interval."),
                               "ok" if inside else "bad"))
    return blocks


def _health_blocks(suite: Suite, table: bool = False) -> list:
    """The fit-health verdict fit.json records (`delphi.fit.health`): a note in the summary, the
    table of checks next to the loss law."""
    h = (suite.fit or {}).get("health") if isinstance(suite.fit, dict) else None
    if not isinstance(h, dict):
        return []
    if table:
        checks = h.get("checks") or []
        rows = [[str(c.get("name", "")), str(c.get("status", "")), str(c.get("summary", "")),
                 str(c.get("advice") or "–")] for c in checks]
        cls = ["bad" if c.get("status") == "warn" else "" for c in checks]
        return [Table(["check", "status", "measured", "what to change"], rows, row_class=cls,
                      caption="Fit-health checks run before the forecast was registered (thresholds in "
                              "docs/fit.md). A warning does not stop pre-registration; it is recorded with the "
                              "forecast in the ledger.")] if rows else []
    if h.get("status") != "warn":
        return [Note("Fit health: every check passed (vertices bracketed, fit range, slope stability, "
                     "leave-one-out spread, backtest, data).", "ok")]
    warns = "; ".join(str(w) for w in h.get("warnings") or [])
    advice = " ".join(f"To change: {a}." for a in h.get("advice") or [])
    flags = f" Flags: {', '.join(f'`{f}`' for f in h['flags'])}." if h.get("flags") else ""
    return [Note(f"Fit health WARNS — the forecast was registered regardless: {warns}. {advice}".strip() + flags,
                 "warn")]


def _missing_notes(suite: Suite, view) -> list:
    notes = list(suite.notes) + list(view.notes)
    t = suite.table
    if t is not None and not t.empty:
        if not (t["role"] == "heldout").any():
            notes.append("no held-out run in the runs table yet: the forecast has not been tested")
        bad = t[~ok_mask(t)]
        if len(bad):
            items = []
            for _, r in bad.iterrows():
                st = str(r.get("status", "?"))
                reason = r.get("reason")
                reason = "" if reason is None or (isinstance(reason, float) and math.isnan(reason)) else f": {reason}"
                items.append(f"`{r['name']}` ({st}{reason})")
            notes.append(f"{len(bad)} run(s) did not complete and are excluded from the fit: " + "; ".join(items))
    if not suite.runs:
        notes.append("no runs/ directory: training curves, recipe details and model cards are unavailable")
    seen, out = set(), []
    for n in notes:
        if n not in seen:
            seen.add(n)
            out.append(Note(n, "warn"))
    return out


def _bucket_table(view) -> Table:
    rows, cls = [], []
    for b in sorted(view.buckets, key=lambda b: b.flops):
        flags = ", ".join(b.flags) if b.flags else ""
        if b.skipped and b.optimal_loss is None:  # the reason names what the flag does, with the numbers
            flags = f"skipped: {b.skipped}"
        rows.append([fmt.pretty_flops(b.flops), fmt.dash(b.n_runs), fmt.short(b.optimal_tokens),
                     fmt.short(b.optimal_params), fmt.fixed(b.optimal_loss), flags or "–"])
        cls.append("bad" if flags else "")
    return Table(["budget C (FLOPs)", "runs", "D* (tokens)", "N* (params)", "L*", "flags"], rows,
                 numeric=[True, True, True, True, True, False], row_class=cls,
                 caption="Vertex of each budget's parabola. A flag means the optimum lies at or outside the edge of "
                         "the grid's token range, so it is extrapolated from one side; a budget is skipped when it has "
                         "fewer than 3 runs, no minimum, or a curvature not distinguishable from its runs' noise.")


def _seed_spread_table(suite: Suite) -> list:
    spread = suite.check.seed_spread if suite.check is not None else ()
    if not spread:
        return []
    rows = [[fmt.pretty_flops(sp.budget), fmt.dash(sp.seeds), fmt.fixed(sp.mean),
             f"[{fmt.fixed(sp.min)}, {fmt.fixed(sp.max)}]", fmt.pct(sp.range_pct, signed=False),
             fmt.pct(sp.std_pct, signed=False)] for sp in spread]
    return [Table(["C (FLOPs)", "seeds", "mean actual", "range", "range / mean", "std / mean"], rows,
                  numeric=[True, True, True, True, True, True],
                  caption="Seed spread of the held-out runs at each budget with several seeds: the noise floor "
                          "the residuals at that budget are read against.")]


def _residual_table(suite: Suite) -> list:
    res = suite.check_results
    if res:
        rows, cls = [], []
        for r in res:
            inside = r.inside
            rows.append([f"`{r.run}`", fmt.dash(r.seed),
                         fmt.pretty_flops(r.flops or r.budget),
                         f"{fmt.num(r.extrapolation):.1f}×" if fmt.num(r.extrapolation) else "–",
                         fmt.fixed(r.forecast),
                         f"[{fmt.fixed(r.ci_low)}, {fmt.fixed(r.ci_high)}]",
                         f"[{fmt.fixed(r.loo_min)}, {fmt.fixed(r.loo_max)}]",
                         fmt.fixed(r.actual), fmt.pct(r.residual_pct),
                         "–" if inside is None else ("yes" if inside else "**no**"),
                         _short_hash(r.ledger_entry), fmt.dash(r.status)])
            status = str(r.status or "")
            cls.append("bad" if status.startswith("refused") or inside is False else ("ok" if inside else ""))
        return [Table(["run", "seed", "C (FLOPs)", "extrapolation", "forecast", "95% interval", "leave-one-out",
                       "actual", "residual", "inside?", "ledger entry", "status"], rows,
                      numeric=[False, True, True, True, True, True, True, True, True, False, True, False],
                      row_class=cls,
                      caption="Residual = (actual − forecast) / forecast. Extrapolation = held-out FLOPs / largest "
                              "fitted budget. The forecast was registered in the ledger before the run started.")
                ] + _seed_spread_table(suite)
    blocks: list = [Note("check.json is missing: there are no scored held-out runs yet.", "warn")]
    if suite.ledger:
        rows = []
        for e in suite.ledger:
            f = e.get("forecast")
            if not isinstance(f, dict):
                continue
            rows.append([fmt.dash(e.get("index")), f"`{f.get('run', '?')}`", fmt.dash(f.get("seed")),
                         fmt.pretty_flops(f.get("flops") or f.get("budget")), fmt.fixed(f.get("loss")),
                         f"[{fmt.fixed(f.get('ci_low'))}, {fmt.fixed(f.get('ci_high'))}]",
                         f"[{fmt.fixed(f.get('loo_min'))}, {fmt.fixed(f.get('loo_max'))}]",
                         fmt.dash(e.get("timestamp"))])
        blocks.append(Table(["entry", "run", "seed", "C (FLOPs)", "forecast", "95% interval", "leave-one-out",
                             "registered (UTC)"], rows,
                            numeric=[True, False, True, True, True, True, True, False],
                            caption="Registered forecasts awaiting their held-out runs."))
    return blocks


def _short_hash(h: Any) -> str:
    """Ledger entries are named by index or by their sha256; show a hash's first 12 digits."""
    if isinstance(h, str) and len(h) > 16:
        return f"`{h[:12]}…`"
    return fmt.dash(h)


def _recipe_rows(suite: Suite) -> tuple[list[list[str]], list[str]]:
    t = suite.table
    by_name: dict[str, dict] = {}
    if t is not None and not t.empty:
        for rec in t.to_dict("records"):
            by_name[str(rec["name"])] = rec
    names = list(by_name) + [n for n in suite.runs if n not in by_name]

    def sort_key(n: str):
        rec, run = by_name.get(n, {}), suite.runs.get(n)
        role = str(rec.get("role", "grid"))
        budget = fmt.num(rec.get("budget")) or (run.spec.budget if run and run.spec and run.spec.budget else 0)
        hidden = fmt.num(rec.get("hidden_size")) or (run.spec.shape.hidden_size if run and run.spec else 0)
        return (role == "heldout", budget or 0, hidden or 0, n)

    rows, cls = [], []
    for n in sorted(names, key=sort_key):
        rec, run = by_name.get(n, {}), suite.runs.get(n)
        spec = run.spec if run else None
        summ = (run.summary if run else None) or {}
        sh = spec.shape if spec else None
        op = spec.optimizer if spec else None

        def pick(key, from_spec):
            v = rec.get(key)
            if fmt.num(v) is None and from_spec is not None:
                return from_spec
            return v

        params = pick("params", sh.num_params if sh else summ.get("params"))
        tokens = pick("tokens", spec.tokens if spec else summ.get("tokens"))
        flops = pick("flops", spec.flops if spec else summ.get("flops"))
        tpp = (fmt.num(tokens) / fmt.num(params)) if fmt.num(tokens) and fmt.num(params) else None
        status = rec.get("status") if isinstance(rec.get("status"), str) else summ.get("status") or "pending"
        loss = rec.get("loss") if fmt.num(rec.get("loss")) is not None else summ.get("loss")
        rows.append([
            f"`{n}`", str(rec.get("role") or (spec.tags.get("role") if spec else None) or "grid"), str(status),
            fmt.pretty_flops(pick("budget", spec.budget if spec else None)),
            fmt.integer(pick("hidden_size", sh.hidden_size if sh else None)),
            fmt.integer(pick("num_layers", sh.num_layers if sh else None)),
            fmt.integer(sh.num_heads if sh else rec.get("num_heads")),
            fmt.integer(params), fmt.integer(pick("batch_size", spec.batch_size if spec else None)),
            fmt.integer(pick("train_steps", spec.train_steps if spec else None)), fmt.integer(tokens),
            fmt.general(pick("learning_rate", op.lr if op else None), 4),
            fmt.general(op.adam_lr if op else rec.get("adam_lr"), 4),
            fmt.general(op.epsilon if op else rec.get("epsilon"), 3),
            fmt.general(op.beta2 if op else rec.get("beta2"), 6),
            f"{tpp:.3g}" if tpp else "–", fmt.sci(flops), fmt.fixed(loss),
        ])
        cls.append("" if status == "completed" else ("muted" if status == "pending" else "bad"))
    return rows, cls


def _recipe_table(suite: Suite) -> Table:
    rows, cls = _recipe_rows(suite)
    cols = ["run", "role", "status", "budget", "H", "L", "heads", "params", "batch", "steps", "tokens", "lr",
            "adam_lr", "ε", "β2", "tokens/param", "FLOPs", "final loss"]
    return Table(cols, rows, numeric=[False, False, False] + [True] * 15, row_class=cls,
                 caption="Every run's configuration (from run.json) and outcome (from runs.csv / summary.json). "
                         "lr is AdamH's peak LR on linear weights, adam_lr the Adam LR on embeddings and norms; "
                         "FLOPs = 3 · FLOPs/token · tokens; final loss is the macro validation loss.")


def _cards(suite: Suite) -> tuple[list, dict[str, Path]]:
    from delphi.report.model_card import model_card, write_model_card

    blocks: list = []
    written: dict[str, Path] = {}
    roles = {}
    if suite.table is not None and not suite.table.empty:
        roles = dict(zip(suite.table["name"].astype(str), suite.table["role"].astype(str)))
    trained = [r for r in suite.runs.values() if r.spec is not None and (r.summary or {}).get("status") == "completed"]
    if not trained:
        return [Note("no trained model yet (no run has a completed summary.json): no model cards", "warn")], written
    for r in sorted(trained, key=lambda r: (roles.get(r.name) == "heldout", r.spec.budget or 0,
                                            r.spec.shape.hidden_size, r.name)):
        card = model_card(r.spec, r.summary, suite=suite.name, role=roles.get(r.name))
        inner: list = [Para(card.summary_line)]
        for title, rows in (("Model details", card.details), ("Training", card.training),
                            ("Evaluation", card.evaluation)):
            if rows:
                inner += [Heading(title, 4), Table(["", ""], [[k, v] for k, v in rows])]
        hf = r.path / "hf"
        if hf.is_dir():
            written[r.name] = write_model_card(card, hf)
            inner.append(Para(f"Written to `runs/{r.name}/hf/README.md` next to the exported weights."))
        blocks.append(Details(f"{card.title} — `{r.name}`", inner, level=3))
    return blocks, written


def _downstream(suite: Suite, figdir: Path, rel: str) -> tuple[list, Path | None]:
    """The two-step downstream forecast (downstream.json = `DownstreamForecast.to_dict()`).

    The figure is drawn by `delphi.downstream`'s own plot function when the forecast can be rebuilt
    from the JSON (`DownstreamForecast.from_dict`); a `downstream.png` the runner saved beside the
    JSON is used as it is. The numbers table needs only the JSON."""
    d = suite.downstream
    if d is None:
        return [], None
    blocks: list = [Heading("Downstream forecast", 2, "downstream")]
    if not isinstance(d, dict):
        return blocks + [Note("downstream.json is not a JSON object; nothing to show", "warn")], None
    target = figdir / "downstream.png"
    saved = suite.path / "downstream.png"  # drawn by the suite's downstream stage
    png_path = None
    if saved.is_file():
        target.write_bytes(saved.read_bytes())
        png_path = target
    if png_path is not None:
        blocks.append(Figure("downstream", "Downstream forecast", png_path.read_bytes(), f"{rel}/{png_path.name}",
                             "Left: the soft metric against compute over the suite's optima (step 1). Right: accuracy "
                             "against the soft metric over the external model pool with the fitted sigmoid (step 2). "
                             "Stars: the forecasts with their intervals."))
    else:
        blocks.append(Note("no downstream figure: no downstream.png was saved beside downstream.json; the numbers "
                           "follow", "warn"))
    soft = d.get("soft", "soft metric")
    conf = fmt.num(d.get("confidence"))
    rows = []
    for f in d.get("forecasts") or []:
        if not isinstance(f, dict):
            continue
        si, ai = f.get("soft_interval") or [None, None], f.get("acc_interval") or [None, None]
        acc = fmt.num(f.get("acc"))
        rows.append([fmt.pretty_flops(f.get("flops")), fmt.general(f.get("soft"), 4),
                     f"[{fmt.general(si[0], 4)}, {fmt.general(si[1], 4)}]",
                     "–" if acc is None else f"{100 * acc:.1f}%",
                     "[" + ", ".join("–" if fmt.num(v) is None else f"{100 * float(v):.1f}%" for v in ai[:2]) + "]"])
    if rows:
        level = f"{conf:.0%}" if conf else "95%"
        blocks.append(Table(["C (FLOPs)", f"{soft}", f"{level} interval", "accuracy", f"{level} interval"], rows,
                            numeric=[True, True, True, True, True],
                            caption=f"Two-step forecast of `{soft}` and accuracy at each target compute."))
    return blocks, png_path


def _ledger_blocks(suite: Suite) -> list:
    if not suite.ledger:
        return []
    rows = []
    for e in suite.ledger:
        f = e.get("forecast") if isinstance(e.get("forecast"), dict) else {}
        h = str(e.get("hash") or "")
        rows.append([fmt.dash(e.get("index")), fmt.dash(e.get("timestamp")), f"`{f.get('run', '?')}`",
                     fmt.fixed(f.get("loss")), f"`{str(e.get('runs_table_sha256') or '')[:12]}`", f"`{h[:12]}`"])
    return [Heading("Ledger", 3),
            Table(["entry", "registered (UTC)", "run", "forecast", "runs table sha256", "entry hash"], rows,
                  numeric=[True, False, False, True, False, False],
                  caption="Append-only, hash-chained; verify with `delphi ledger verify`.")]


# ---- the report ------------------------------------------------------------------------------

ALLOCATION_CAPTION = ("IsoFLOP optima with the power laws fitted through them (solid over the fitted range, dashed "
                      "beyond it); ★ marks held-out runs, whose size the allocation law chose.")
TRAINING_CAPTION = ("Left: training loss (exponentially smoothed) against tokens seen, one line per run, coloured by "
                    "budget; held-out runs dashed. Right: macro validation loss at each evaluation.")


def _isoflop_caption(view) -> str:
    from delphi.fit.plots import metric_label

    return (f"Each budget's runs, {metric_label(view.metric)}, against training tokens; the parabola fitted in "
            "log10 tokens and its vertex (◆, the compute-optimal point). ⚑ and a hollow ◆ mark a flagged bucket, "
            "whose vertex lies outside its runs' token range." + (f" Fit source: {view.source}." if view.source else ""))


def _loss_law_caption(view) -> str:
    law = ("1/L*(C) = 1/H + C^α/A (the power law capped by the unigram loss H)"
           if view.loss_law is not None and view.loss_law.ceiling is not None else "L*(C) = E + A·C^−α")
    return (law + " fitted to the IsoFLOP optima (◆) with its bootstrap band; grey dots are all grid runs; the red "
            "bar with whiskers is each registered forecast and its 95% interval, ★ the held-out run's actual loss, "
            "labelled with its residual.")


def _contents(suite: Suite) -> Bullets:
    """Links to the report's sections (the downstream one only when the suite has a forecast)."""
    sections = [("headline", "Summary"), ("isoflop", "IsoFLOP curves"), ("allocation", "Compute-optimal allocation"),
                ("loss-law", "Loss law and held-out forecast"), ("residuals", "Residuals"),
                ("training", "Training curves"), ("recipe", "Recipe table"), ("cards", "Model cards")]
    if suite.downstream is not None:
        sections.append(("downstream", "Downstream forecast"))
    sections.append(("suite", "Suite specification"))
    return Bullets([f"[{label}](#{key})" for key, label in sections])


def _allocation_laws(view) -> list:
    """N*(C), D*(C) and their exponent sum, under the allocation figure."""
    laws = []
    if view.params_law:
        laws.append(f"`{view.params_law.text('N*(C)')}`")
    if view.tokens_law:
        laws.append(f"`{view.tokens_law.text('D*(C)')}`")
    if view.params_law and view.tokens_law:
        laws.append(f"exponent sum a + α = {view.params_law.alpha + view.tokens_law.alpha:.3f} "
                    "(≈ 1 when C ∝ N·D)")
    return [Bullets(laws)] if laws else []


def _loss_law_facts(suite: Suite, view) -> list:
    """The loss law's equation, points and bootstrap, its own warnings (an ill-determined law is
    flagged next to it), and what C means when the fit used another compute definition."""
    blocks: list = []
    if view.loss_law is not None:
        ll = view.loss_law
        items = [f"`{ll.text()}`"]
        extra = ll.extra or {}
        if fmt.num(extra.get("n_points")) is not None:
            items.append(f"fitted on {int(extra['n_points'])} IsoFLOP optima"
                         + (f"; RMSE {fmt.general(extra['rmse'], 3)}" if fmt.num(extra.get("rmse")) is not None else ""))
        if fmt.num(extra.get("n_bootstrap")):
            items.append(f"bootstrap: {int(extra['n_bootstrap'])} resamples, seed {extra.get('seed', '–')}, "
                         f"{fmt.num(extra.get('confidence')) or 0.95:.0%} percentile intervals")
        blocks.append(Bullets(items))
        if extra.get("converged") is False:
            blocks.append(Note(f"the loss-law fit did not converge ({extra.get('status', 'no status')}): α sits at "
                               "the edge of its search range, so the law may be poorly determined", "warn"))
        if extra.get("E_at_upper_bound"):
            blocks.append(Note("the fitted asymptote E reached its upper bound (the smallest optimum's loss): the law "
                               "is flat at the data and its extrapolation is poorly identified", "warn"))
    compute = (suite.fit or {}).get("compute") if isinstance(suite.fit, dict) else None
    if compute and compute != "total":
        from delphi.fit.compute import DESCRIPTION

        blocks.append(Para(f"C on this law's axis is `{compute}` compute ({DESCRIPTION.get(compute, compute)}), "
                           "at each budget's optimal shape; budgets and extrapolation factors stay in total FLOPs."))
    return blocks


# What the report's figures are drawn from: a suite directory's records and each run's records. A
# figure is redrawn only when one of them (or the code that draws it) changed since it was drawn.
FIGURE_INPUTS = ("suite.toml", "runs.csv", "fit.json", "check.json", "ledger.jsonl")
RUN_FIGURE_INPUTS = ("run.json", "summary.json", "metrics.jsonl")
FIGURE_CACHE = "figures.json"  # in the figures directory: {"inputs": key, "figures": {name: sha256 of the PNG}}


def _run_dirs(suite_dir: Path) -> list[Path]:
    runs = suite_dir / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _hash_files(h, paths: list[Path], root: Path) -> None:
    """Feed each file's name (relative to `root`) and content, or that it is missing, into `h`."""
    for p in paths:
        h.update(str(p.relative_to(root) if p.is_relative_to(root) else p.name).encode() + b"\0")
        h.update(p.read_bytes() if p.is_file() else b"(missing)")
        h.update(b"\0")


def figure_inputs_key(suite_dir: Path) -> str:
    """SHA-256 over the files the figures are drawn from and the source of the modules that draw them."""
    from delphi.fit import plots as fit_plots
    from delphi.report import plots as report_plots

    h = hashlib.sha256()
    paths = [Path(fit_plots.__file__), Path(report_plots.__file__), Path(__file__)]
    paths += [suite_dir / n for n in FIGURE_INPUTS]
    paths += [d / n for d in _run_dirs(suite_dir) for n in RUN_FIGURE_INPUTS]
    _hash_files(h, paths, suite_dir)
    return h.hexdigest()


# The whole report is rebuilt only when something it is built from changed: the figures' inputs,
# the downstream forecast, which runs have exported weights (their model cards), the directories'
# paths (the page names them) or the package's code (any change, so no reader is forgotten).
REPORT_INPUTS = FIGURE_INPUTS + ("downstream.json", "downstream.png")
REPORT_CACHE = "report-cache.json"  # in the output directory: {"inputs": key, "outputs": {path: sha256}}


def report_inputs_key(suite_dir: Path, out: Path) -> str:
    """SHA-256 over everything `build_report` reads (see REPORT_INPUTS) and the package's source."""
    h = hashlib.sha256()
    h.update(f"{suite_dir}\0{out}\0".encode())
    package = Path(__file__).resolve().parents[1]
    _hash_files(h, sorted(package.rglob("*.py")), package)
    runs = _run_dirs(suite_dir)
    _hash_files(h, [suite_dir / n for n in REPORT_INPUTS] + [d / n for d in runs for n in RUN_FIGURE_INPUTS],
                suite_dir)
    h.update("".join(f"{d.name} hf={(d / 'hf').is_dir()}\n" for d in runs).encode())
    return h.hexdigest()


def up_to_date_report(out: Path, key: str) -> dict[str, Path] | None:
    """The paths of a report that an earlier `build_report` wrote from the same inputs (`key`), if
    every one of its files is still there unchanged; None when the report must be built."""
    try:
        record = json.loads((out / REPORT_CACHE).read_text())
    except (OSError, ValueError):
        return None
    outputs = record.get("outputs") if isinstance(record, dict) and record.get("inputs") == key else None
    if not isinstance(outputs, dict) or "html" not in outputs:
        return None
    paths = {}
    for name, entry in outputs.items():
        if not (isinstance(entry, list) and len(entry) == 2):
            return None
        path = out / entry[0]
        try:
            if sha256_file(path) != entry[1]:
                return None
        except OSError:  # gone or unreadable: rebuild
            return None
        paths[name] = path
    return paths


def current_report(suite_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path] | None:
    """The paths of the suite's report if it is up to date (`up_to_date_report`), else None."""
    out = Path(out_dir if out_dir is not None else suite_dir)
    return up_to_date_report(out, report_inputs_key(Path(suite_dir), out))


def _record_report(out: Path, key: str, written: dict[str, Path]) -> None:
    outputs = {name: [os.path.relpath(p, out), sha256_file(p)] for name, p in written.items()}
    atomic_write_json(out / REPORT_CACHE, {"inputs": key, "outputs": outputs})


class FigureCache:
    """The PNGs a previous report drew from the same inputs (`figure_inputs_key`), checked by
    their SHA-256: a report of an unchanged suite redraws nothing and does not import matplotlib.
    An empty entry records a figure that had no data."""

    def __init__(self, figdir: Path, key: str):
        self.figdir, self.key, self.figures = figdir, key, {}
        self._old: dict[str, str] = {}
        try:
            d = json.loads((figdir / FIGURE_CACHE).read_text())
            if d.get("inputs") == key and isinstance(d.get("figures"), dict):
                self._old = d["figures"]
        except (OSError, ValueError):
            pass

    def get(self, name: str) -> bytes | None:
        digest = self._old.get(name)
        if digest is None:
            return None
        if digest == "":
            png = b""
        else:
            try:
                png = (self.figdir / f"{name}.png").read_bytes()
            except OSError:
                return None
            if hashlib.sha256(png).hexdigest() != digest:
                return None
        self.figures[name] = digest
        return png

    def put(self, name: str, png: bytes) -> None:
        self.figures[name] = hashlib.sha256(png).hexdigest() if png else ""

    def save(self) -> None:
        atomic_write_json(self.figdir / FIGURE_CACHE, {"inputs": self.key, "figures": self.figures})


class ReportFigures:
    """The report's figures: each drawn (or reused from `FigureCache`) into `figdir` and returned
    as the blocks that show it; `written` collects the paths."""

    def __init__(self, suite: Suite, view, figdir: Path, rel: str, written: dict[str, Path]):
        self.suite, self.view, self.figdir, self.rel, self.written = suite, view, figdir, rel, written
        self.cache = FigureCache(figdir, figure_inputs_key(suite.path))
        self._colors: dict | None = None

    def colors(self) -> dict:
        """One colour per budget; matplotlib is imported only when a figure is drawn."""
        if self._colors is None:
            from delphi.report import plots

            self._colors = plots.suite_colors(self.suite, self.view)
        return self._colors

    def block(self, key: str, draw, title: str, caption: str) -> list:
        """The figure `key` (drawn by `draw()` unless the cache has it) as report blocks."""
        path = self.figdir / f"{key}.png"
        png = self.cache.get(key)
        if png is None:
            from delphi.report import plots

            fig = draw()
            png = plots.save_png(fig, path) if fig is not None else b""
            self.cache.put(key, png)
        if not png:
            return [Note(f"{title}: no data for this figure yet", "warn")]
        self.written[f"figure:{key}"] = path
        return [Figure(key, title, png, f"{self.rel}/{key}.png", caption)]


def _figure_sections(suite: Suite, view, figures: ReportFigures) -> list:
    """Sections (1)–(5): IsoFLOP curves, allocation, loss law, residuals, training curves."""
    from delphi.report import plots

    blocks: list = []
    # (1) IsoFLOP
    blocks.append(Heading("IsoFLOP curves", 2, "isoflop"))
    blocks += figures.block("isoflop", lambda: plots.isoflop_figure(suite, view, figures.colors()), "IsoFLOP curves",
                            _isoflop_caption(view))
    if view.buckets:
        blocks.append(_bucket_table(view))

    # (2) allocation
    blocks.append(Heading("Compute-optimal allocation", 2, "allocation"))
    blocks += figures.block("allocation", lambda: plots.allocation_figure(suite, view, figures.colors()),
                            "Compute-optimal N*(C) and D*(C)", ALLOCATION_CAPTION)
    blocks += _allocation_laws(view)

    # (3) loss law
    blocks.append(Heading("Loss law and held-out forecast", 2, "loss-law"))
    blocks += figures.block("loss_law", lambda: plots.loss_law_figure(suite, view, figures.colors()), "Loss law",
                            _loss_law_caption(view))
    blocks += _loss_law_facts(suite, view) + _health_blocks(suite, table=True)

    # (4) residuals
    blocks.append(Heading("Residuals", 2, "residuals"))
    blocks += _residual_table(suite)

    # (5) training curves
    blocks.append(Heading("Training curves", 2, "training"))
    blocks += figures.block("training", lambda: plots.training_curves_figure(suite, figures.colors()),
                            "Training curves", TRAINING_CAPTION)
    return blocks


def build_report(suite_dir: str | Path, out_dir: str | Path | None = None, *, force: bool = False) -> dict[str, Path]:
    """Write report.html, report.md and figures/*.png (into `out_dir`, default the suite directory)
    and a model card README.md into every exported model directory. Returns the written paths:
    keys "html", "markdown", "figure:<name>", "card:<run>". A report built earlier from the same
    inputs (`report_inputs_key`) whose files are all unchanged is returned as it is, unless `force`."""
    out = Path(out_dir if out_dir is not None else suite_dir)
    key = report_inputs_key(Path(suite_dir), out)
    if not force and (done := up_to_date_report(out, key)) is not None:
        return done

    from delphi.report.fitview import build_fit_view

    suite = read_suite_dir(suite_dir)
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    rel = "figures"

    t = suite.table
    ok_grid = t[(t["role"] != "heldout").to_numpy() & ok_mask(t)] if t is not None and not t.empty else t
    view = build_fit_view(suite.fit, t, ok_table=ok_grid)
    written: dict[str, Path] = {}
    figures = ReportFigures(suite, view, figdir, rel, written)

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Delphi suite report — {suite.name}"
    blocks: list = [Heading(title, 1), Para(f"Suite directory `{suite.path}` · generated {now} by `delphi report`")]
    blocks.append(_contents(suite))
    blocks += [Heading("Summary", 2, "headline")] + _headline(suite, view) + _health_blocks(suite) \
        + _missing_notes(suite, view)

    blocks += _figure_sections(suite, view, figures)

    # (6) recipe table
    blocks += [Heading("Recipe table", 2, "recipe"), _recipe_table(suite)]

    # (7) model cards
    blocks.append(Heading("Model cards", 2, "cards"))
    blocks.append(Para("One card per trained model, in the form of Delphi's released cards on Hugging Face."))
    card_blocks, cards = _cards(suite)
    blocks += card_blocks
    written.update({f"card:{name}": p for name, p in cards.items()})

    # downstream (optional)
    ds_blocks, ds_png = _downstream(suite, figdir, rel)
    blocks += ds_blocks
    if ds_png is not None:
        written["figure:downstream"] = ds_png

    # suite spec + ledger
    blocks.append(Heading("Suite specification", 2, "suite"))
    blocks.append(Details("suite.toml (resolved)", [Code(suite.spec_text, "toml")], level=3) if suite.spec_text
                  else Note("suite.toml is missing", "warn"))
    blocks += _ledger_blocks(suite)

    figures.cache.save()
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(to_html(title, blocks))
    md_path.write_text(to_markdown(blocks))
    written["html"] = html_path
    written["markdown"] = md_path
    _record_report(out, key, written)
    return written


__all__ = ["build_report", "current_report"]
