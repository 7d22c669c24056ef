"""Tokenizers: Llama 3 (tiktoken), the embedded byte-level BPE, HF export parity, BPE training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from delphi.data.tokenizers import BPE_EOS, load_tokenizer, train_bpe
from delphi.errors import DelphiError

MINI = Path(__file__).parent / "data" / "data" / "mini"

MIXED = (
    "The Project Gutenberg eBook of Pride and Prejudice — “It is a truth universally acknowledged…”\n\n"
    "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    "    a, b = 0, 1\n\tfor _ in range(n):\n        a, b = b, a + b  # 12345678 \r\n    return a\n\n"
    "theorem foo (n : ℕ) (h : 0 < n) : ∀ ε > 0, ∃ δ, |x - y| < δ → ‖f x - f y‖ < ε :=\n"
    "\\begin{lemma}\\label{lemma-x} Let $f : X \\to Y$ be a morphism; then $\\int_0^1 x^2\\,dx = 1/3$.\\end{lemma}\n"
    "Café naïve façade 日本語のテキスト 😀👍🏽 Ελληνικά русский   trailing spaces   \n\n\n"
    "I'M HERE, you'll see; they'RE 3.14159 and 1,000,000.\n"
)


def _mini_texts() -> list[str]:
    return [json.loads(line)["text"] for f in sorted(MINI.glob("*.jsonl"))
            for line in f.read_text("utf-8").splitlines() if line.strip()]


def test_llama3_matches_meta_ids_and_specials():
    tok = load_tokenizer("llama3")
    assert tok.encode("hello world") == [15339, 1917]
    assert tok.vocab_size == 128_256 and tok.eos_id == 128_001
    sp = tok.special_tokens
    assert sp["<|begin_of_text|>"] == 128_000 and sp["<|end_of_text|>"] == 128_001
    assert sp["<|eot_id|>"] == 128_009 and sp["<|reserved_special_token_245|>"] == 128_255
    assert len(sp) == 256
    # the llama-models package's own tokenizer agrees on mixed text
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    meta = MetaTokenizer.get_instance()
    assert sp == meta.special_tokens
    assert tok.encode(MIXED) == meta.encode(MIXED, bos=False, eos=False)
    assert tok.decode(tok.encode(MIXED)) == MIXED


@pytest.mark.parametrize("name", ["llama3", "embedded-bpe"])
def test_hf_export_loads_offline_and_encodes_like_tiktoken(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = load_tokenizer(name)
    tok.save_hf(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    hf = AutoTokenizer.from_pretrained(tmp_path)
    texts = [MIXED, "hello world", " leading space", "\n\n\n", *_mini_texts()[:6]]
    for t in texts:
        assert hf.encode(t, add_special_tokens=False) == tok.encode(t)
        assert hf.decode(tok.encode(t)) == t
    assert hf.eos_token_id == tok.eos_id
    assert len(hf) == tok.vocab_size


def test_embedded_bpe_interface_and_byte_lengths():
    tok = load_tokenizer("embedded-bpe")
    assert (tok.name, tok.vocab_size, tok.eos_id) == ("embedded-bpe", 4096, 0)
    assert load_tokenizer("embedded-bpe") is tok  # cached
    ids = tok.encode(MIXED)
    assert tok.decode(ids) == MIXED
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (4096,) and lengths[tok.eos_id] == 0 and lengths[1:].min() >= 1
    assert lengths[ids].sum() == len(MIXED.encode("utf-8"))
    assert tok.decode_bytes(ids) == MIXED.encode("utf-8")
    # data cannot forge a document boundary: the literal string is ordinary text
    assert tok.eos_id not in tok.encode(f"a {BPE_EOS} b")
    assert len(MIXED.encode()) / len(ids) > 2.0  # the BPE compresses mixed text


def test_token_bytes_are_exact_when_tokens_split_a_character():
    tok = load_tokenizer("embedded-bpe")
    ids = tok.encode("龘")  # a rare CJK character: not a token of a 4096 vocabulary
    assert len(ids) > 1
    pieces = [tok.token_bytes(i) for i in ids]
    assert b"".join(pieces) == "龘".encode("utf-8")
    assert [len(p) for p in pieces] == tok.token_byte_lengths()[ids].tolist()
    assert "\ufffd" in tok.decode(ids[:1])  # decoded strings would miscount: bytes come from tokens


def test_train_bpe_is_deterministic_and_loadable(tmp_path):
    texts = _mini_texts()
    a = train_bpe(texts, vocab_size=400).to_str()
    b = train_bpe(list(texts), vocab_size=400).to_str()
    assert a == b
    assert train_bpe(texts, vocab_size=450).to_str() != a
    (tmp_path / "tokenizer.json").write_text(a)
    tok = load_tokenizer(tmp_path)  # a directory holding tokenizer.json works too
    assert tok.vocab_size == 400 and tok.eos_id == 0
    sample = texts[0][:2000]
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.token_byte_lengths()[tok.encode(sample)].sum() == len(sample.encode())
    # the HF view of the same file encodes identically
    from tokenizers import Tokenizer as HF

    hf = HF.from_str(a)
    for t in texts[:5] + [MIXED]:
        assert hf.encode(t, add_special_tokens=False).ids == tok.encode(t)


def test_non_tiktoken_tokenizer_json_uses_hf_path(tmp_path):
    from tokenizers import Tokenizer as HF, models, pre_tokenizers, trainers, decoders

    hf = HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(_mini_texts(), trainers.BpeTrainer(
        vocab_size=350, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert type(tok).__name__ == "HFTokenizer" and tok.eos_token == "</s>"
    assert tok.encode(MIXED) == hf.encode(MIXED).ids
    assert tok.token_byte_lengths()[tok.encode(MIXED)].sum() == len(MIXED.encode())


def test_bad_tokenizer_inputs_raise(tmp_path):
    with pytest.raises(DelphiError, match="unknown tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DelphiError, match="not a readable tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")
    from tokenizers import Tokenizer as HF, models

    HF(models.BPE()).save(str(tmp_path / "noeos.json"))
    with pytest.raises(DelphiError, match="end-of-document"):
        load_tokenizer(tmp_path / "noeos.json")
    with pytest.raises(DelphiError, match="at least 257"):
        train_bpe(["abc"], vocab_size=100)


def test_llama3_byte_lengths_cover_the_vocabulary():
    tok = load_tokenizer("llama3")
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (128_256,) and (lengths[128_000:] == 0).all() and lengths[:128_000].min() >= 1
    ids = tok.encode(MIXED)
    assert int(np.asarray(lengths)[ids].sum()) == len(MIXED.encode())
