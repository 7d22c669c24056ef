"""Evaluation suite: metric definitions, task formats, committed subsets, backends, results."""

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from delphi.cli import main as cli_main
from delphi.errors import DelphiError
from delphi.eval import (evaluate_tasks, hf_backend, load_results, merge_into_runs_table, model_backend, open_model,
                         parse_tasks, results_table, save_results)
from delphi.eval.scoring import aggregate, doc_metrics
from delphi.eval.sources import PACKAGE_DATA, SOURCE_FILES, load_records
from delphi.eval.tasks import Doc
from delphi.eval.tiny import make_tiny_hf_model

# The full evaluation sets the committed subsets were cut from (not in the repository):
# $DELPHI_EVAL_FULL_SETS, else the shared data directory beside the checkout.
FULL_SETS = Path(os.environ.get("DELPHI_EVAL_FULL_SETS") or Path(__file__).resolve().parents[2] / "shared/data/eval")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("tiny-hf"), seed=1)


# ---- metric definitions (delphi-notes §7.4) ---------------------------------------------------
def test_choice_metrics_by_hand():
    doc = Doc(requests=(("q", " aa"), ("q", " b"), ("q", " cccc")), gold=2, norm_texts=("aa", "b", "cccc"))
    ll = [-2.0, -1.5, -3.0]
    m = doc_metrics(doc, [(x, False) for x in ll], "choice")
    assert m["acc"] == 0.0  # argmax ll is choice 1
    assert m["acc_norm"] == 1.0  # ll/chars = -1, -1.5, -0.75 → choice 2
    assert m["bpb"] == pytest.approx(3.0 / 4 / math.log(2))
    assert m["logprob"] == -3.0
    lse = math.log(sum(math.exp(x) for x in ll))
    assert m["choice_logprob"] == pytest.approx(-3.0 - lse)
    s = np.array([-1.0, -1.5, -0.75])
    assert m["choice_prob_norm"] == pytest.approx(math.exp(s[2]) / np.exp(s).sum())
    assert m["choice_logprob_norm"] == pytest.approx(math.log(m["choice_prob_norm"]))


def test_target_metrics_and_bytes_are_utf8():
    doc = Doc(requests=(("ctx", " café"),), gold=0, norm_texts=(" café",))  # 6 bytes, 5 characters
    m = doc_metrics(doc, [(-6.0, True)], "target", greedy_acc=True)
    assert m == {"bpb": pytest.approx(1 / math.log(2)), "nll": 6.0, "acc": 1.0}
    assert "acc" not in doc_metrics(doc, [(-6.0, True)], "target")


def test_grouped_aggregation_soft_unweighted_acc_weighted():
    docs = [Doc((("c", " a"), ("c", " b")), 0, ("a", "b"), group=g) for g in ["x", "x", "x", "y"]]
    per = [{"acc": 1.0, "bpb": 1.0}, {"acc": 1.0, "bpb": 1.0}, {"acc": 1.0, "bpb": 1.0}, {"acc": 0.0, "bpb": 3.0}]
    metrics, groups = aggregate(docs, per)
    assert metrics["acc"] == 0.75  # size-weighted over documents
    assert metrics["bpb"] == 2.0  # mean of the group means (1 and 3), not 1.5
    assert groups["x"]["n"] == 3 and groups["y"]["bpb"] == 3.0


# ---- task formats ------------------------------------------------------------------------------
def test_mmlu_sl_verb_format_matches_delphi():
    recs = [{"subject": "college_biology", "split": "fewshot", "question": "Q1?", "choices": ["a", "b", "c", "d"],
             "answer": 1},
            {"subject": "college_biology", "split": "eval", "question": " Q2? ", "choices": ["w", "x", "y", "z"],
             "answer": 3}]
    (doc,) = parse_tasks("mmlu_sl_verb:1")[0].docs(recs)
    ctx = ("The following are multiple choice questions (with answers) about college biology.\n\n"
           "Q1?\nA. a\nB. b\nC. c\nD. d\nAnswer: B. b\n\n"
           "Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert doc.requests == tuple((ctx, f" {l}. {c}") for l, c in zip("ABCD", "wxyz"))
    assert doc.gold == 3 and doc.norm_texts[3] == "D. z" and doc.group == "college_biology"
    (plain,) = parse_tasks("mmlu:0")[0].docs(recs)
    assert [c for _, c in plain.requests] == [" A", " B", " C", " D"]


def test_lm_eval_conventions_fewshot_partial_and_gsm8k():
    recs = load_records("arc_easy")
    shots = [r for r in recs if r["split"] == "fewshot"]
    doc = parse_tasks("arc_easy:2")[0].docs(recs)[0]
    ctx, cont = doc.requests[0]
    first_shot = shots[0]["query"] + "\nAnswer: " + shots[0]["choices"][shots[0]["gold"]] + "\n\n"
    assert ctx.startswith(first_shot) and ctx.count("\n\n") == 2 and ctx.endswith("\nAnswer:")
    assert cont.startswith(" ")
    wino = parse_tasks("winogrande")[0].docs(load_records("winogrande"))[0]
    assert len({c for _, c in wino.requests}) == 1 and len({x for x, _ in wino.requests}) == 2
    g = parse_tasks("gsm8k")[0].docs(load_records("gsm8k"))[0]
    (ctx, target), = g.requests
    assert ctx.count("Question: ") == 6 and ctx.endswith("\nAnswer:") and "\n#### " in target


def test_parse_tasks_presets_and_errors():
    keys = [t.key for t in parse_tasks("delphi,arc_easy,arc_easy:0")]
    assert keys == ["mmlu_sl_verb_0shot", "mmlu_sl_verb_5shot", "gsm8k_5shot", "arc_easy_0shot"]
    for bad in ("nope", "arc_easy:x", "arc_easy:-1", ""):
        with pytest.raises(DelphiError):
            parse_tasks(bad)
    with pytest.raises(DelphiError, match="few-shot"):
        parse_tasks("arc_easy:50")[0].docs(load_records("arc_easy"))


# ---- committed subsets ----------------------------------------------------------------------------
def test_committed_subsets_shapes():
    for dataset in SOURCE_FILES:
        recs = load_records(dataset)
        evals = [r for r in recs if r["split"] == "eval"]
        shots = [r for r in recs if r["split"] == "fewshot"]
        assert 90 <= len(evals) <= 570 and len(shots) >= 5, dataset
        key = (lambda r: (r["subject"], r["split"], r["index"])) if dataset == "mmlu" else (lambda r: r["index"])
        assert len({key(r) for r in recs}) == len(recs), dataset  # no item twice, shots never scored
    mmlu = load_records("mmlu")
    per_subject = Counter(r["subject"] for r in mmlu if r["split"] == "eval")
    dev = Counter(r["subject"] for r in mmlu if r["split"] == "fewshot")
    assert len(per_subject) == 57 and set(per_subject.values()) == {10} and set(dev.values()) == {5}
    assert (PACKAGE_DATA / "SOURCES.md").exists()


@pytest.mark.skipif(not FULL_SETS.is_dir(), reason="needs the full evaluation sets: set DELPHI_EVAL_FULL_SETS")
def test_subsets_rebuild_byte_identical(tmp_path):
    from delphi.eval.subsets import build_subsets

    build_subsets(FULL_SETS, tmp_path)
    for dataset in SOURCE_FILES:
        name = f"{dataset}.jsonl.xz"
        assert (tmp_path / name).read_bytes() == (PACKAGE_DATA / name).read_bytes(), name


# ---- the scorer ------------------------------------------------------------------------------------
def test_scorer_equals_direct_forward_and_is_batch_invariant(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reqs = [("The cat sat on", " the mat."), ("Question: 2+2?\nAnswer:", " 4"), ("Short", " and a much longer "
            "continuation that spans many tokens of text"), ("Trailing space ", "here")]
    a = hf_backend(tiny_dir, device="cpu", batch_size=1).loglikelihood(reqs)
    b = hf_backend(tiny_dir, device="cpu", batch_size=3).loglikelihood(reqs)
    for (x, _), (y, _) in zip(a, b):
        assert x == pytest.approx(y, abs=1e-5)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    ctx, cont = reqs[2]
    c_ids, w_ids = tok.encode(ctx), tok.encode(ctx + cont)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([w_ids])).logits[0].float(), -1)
    direct = sum(logp[i - 1, w_ids[i]].item() for i in range(len(c_ids), len(w_ids)))
    assert a[2][0] == pytest.approx(direct, abs=1e-4)
    assert a[2][0] < -20  # a random model: far from certain, so the check is not vacuous


def test_qwen3_backend_matches_its_hf_export(tiny_dir, tmp_path):
    from delphi.config import ModelShape
    from delphi.data.tokenizers import load_tokenizer
    from delphi.model import Qwen3
    from delphi.model.hf import export_hf

    tok = load_tokenizer(str(tiny_dir / "tokenizer.json"))
    shape = ModelShape(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32,
                       intermediate_size=256, vocab_size=tok.vocab_size, seq_len=512)
    torch.manual_seed(0)
    model = Qwen3(shape)
    export_hf(model, tok, tmp_path / "hf")
    recs = load_records("piqa")
    reqs = [r for d in parse_tasks("piqa:1")[0].docs(recs)[:6] for r in d.requests] + [("", "Empty context.")]
    ours = model_backend(model, tok, name="m", device="cpu", batch_size=4).loglikelihood(reqs)
    theirs = hf_backend(tmp_path / "hf", device="cpu", batch_size=4).loglikelihood(reqs)
    for (x, gx), (y, gy) in zip(ours, theirs):
        assert x == pytest.approx(y, abs=1e-3)


# ---- runner, results files, runs table, CLI ----------------------------------------------------------
def test_evaluate_save_load_and_merge(tiny_dir, tmp_path):
    scorer, info = open_model(tiny_dir)
    assert info["kind"] == "hf" and scorer.name == tiny_dir.name
    results = evaluate_tasks(scorer, "copa,lambada_openai,mmlu_sl_verb:0", limit=8, progress=False)
    assert [r.task for r in results] == ["copa_0shot", "lambada_openai_0shot", "mmlu_sl_verb_0shot"]
    copa = results[0].metrics
    assert 0 <= copa["acc"] <= 1 and copa["bpb"] > 0 and copa["choice_logprob"] < 0
    assert set(results[1].metrics) >= {"bpb", "nll", "acc"}
    save_results(results, tmp_path / "res")
    loaded = load_results(tmp_path / "res")
    assert {r.task: r.metrics for r in loaded} == {r.task: r.metrics for r in results}
    assert len(results_table(loaded)) == 3

    runs = pd.DataFrame({"name": [tiny_dir.name, "other"], "flops": [1e15, 2e15], "loss": [3.0, 2.9]})
    merged = merge_into_runs_table(runs, tmp_path / "res")
    assert list(merged["name"]) == [tiny_dir.name, "other"]
    assert merged.loc[0, "copa_0shot/choice_logprob"] == pytest.approx(copa["choice_logprob"])
    assert math.isnan(merged.loc[1, "copa_0shot/acc"])
    with pytest.raises(DelphiError):
        merge_into_runs_table(runs.assign(name=["a", "b"]), loaded)


def test_cli_eval_on_run_directory(tiny_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "runs" / "d64-run"
    shutil.copytree(tiny_dir, run / "hf")
    (run / "summary.json").write_text(json.dumps({"name": "d64-run", "status": "completed"}))
    rc = cli_main(["eval", str(run), "--tasks", "copa,winograd_wsc", "--limit", "5", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "copa_0shot" in out and "winograd_wsc_0shot" in out
    saved = json.loads((run / "eval" / "copa_0shot.json").read_text())
    assert saved["model"] == "d64-run" and saved["n"] == 5
    assert cli_main(["eval", str(tmp_path / "missing")]) == 2
    assert cli_main(["eval"]) == 2
    assert cli_main(["eval", "--list"]) == 0 and "mmlu_sl_verb" in capsys.readouterr().out
    assert cli_main(["eval", str(run), "--tasks", "copa", "--limit", "0"]) == 2
    assert "error" in capsys.readouterr().err
