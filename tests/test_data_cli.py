"""`delphi data` and `delphi tokenizer` commands, and the embedded corpus itself."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from delphi.cli import main
from delphi.config import DataSpec

MINI = Path(__file__).parent / "data" / "data" / "mini"
EMBEDDED = Path(__file__).parents[1] / "src" / "delphi" / "data" / "embedded"


def test_data_prepare_and_info(tmp_path, capsys):
    args = ["--mixture", str(MINI / "mixture.toml"), "--cache-dir", str(tmp_path)]
    assert main(["data", "info", *args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prepared"] is False and [d["name"] for d in info["domains"]] == ["prose", "code", "math"]
    assert main(["data", "prepare", *args, "--json", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["cached"] for r in out["summary"]} == {False}
    assert main(["data", "prepare", *args, "--json"]) == 0
    assert {r["cached"] for r in json.loads(capsys.readouterr().out)["summary"]} == {True}
    assert main(["data", "info", *args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prepared"] is True and info["tokens_before_repeat"] > 0


def test_data_prepare_bad_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "t.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    (bad / "mixture.json").write_text(json.dumps({"domains": {"a": {"weight": 1, "train": "t.jsonl",
                                                                     "validation": "t.jsonl"}}}))
    code = main(["data", "prepare", "--mixture", str(bad / "mixture.json"), "--cache-dir", str(tmp_path / "c"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "t.jsonl:2: no string field 'text'" in err
    code = main(["data", "prepare", "--mixture", str(bad / "mixture.json"), "--cache-dir", str(tmp_path / "c"),
                 "--skip-bad", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["summary"][0]["skipped_bad"] == 1


def test_tokenizer_train_and_export(tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(MINI), "--vocab-size", "300", "--out", str(out)]) == 0
    assert (out / "tokenizer.json").exists() and "vocab 300" in capsys.readouterr().out
    first = (out / "tokenizer.json").read_text()
    assert main(["tokenizer", "train", "--corpus", str(MINI), "--vocab-size", "300", "--out",
                 str(tmp_path / "again.json")]) == 0
    assert (tmp_path / "again.json").read_text() == first  # deterministic
    assert main(["tokenizer", "export", "--tokenizer", str(out / "tokenizer.json"), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer_config.json").exists()
    assert main(["tokenizer", "train", "--corpus", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_embedded_corpus_is_small_disjoint_and_large_enough():
    """The shipped mixture: ≤ 20 MB, train/validation disjoint, ≥ 25M tokens before a repeat."""
    from delphi.data import load_tokenizer, prepare_data, validation_sets

    assert sum(f.stat().st_size for f in EMBEDDED.iterdir() if f.is_file()) <= 20_000_000
    for d in ("prose", "code", "math"):
        ids = {s: {json.loads(line)["id"] for line in lzma.open(EMBEDDED / f"{d}-{s}.jsonl.xz", "rt")}
               for s in ("train", "val")}
        assert ids["train"] and ids["val"] and not ids["train"] & ids["val"]
    tok = load_tokenizer("embedded-bpe")
    assert tok.vocab_size == 4096
    prepared = prepare_data(DataSpec(), progress=False)  # shared default cache: built once per machine
    assert prepared.weights == pytest.approx({"prose": 0.5, "code": 0.25, "math": 0.25})
    assert prepared.tokens_before_repeat() >= 25_000_000
    for d, n in prepared.validation_tokens.items():
        assert 250_000 <= n <= 1_000_000, d
    val = validation_sets(prepared, 256, 16)
    assert all(v.num_bytes > 2.5 * v.num_tokens for v in val.values())
