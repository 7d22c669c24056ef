"""Data pipeline on a tiny three-domain fixture: shards, caching, bad input, loader, validation."""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

from delphi.config import DataSpec
from delphi.data import DataRepeatWarning, PackedLoader, load_tokenizer, prepare_data, validation_sets
from delphi.data import shards as shards_mod
from delphi.errors import DelphiError

MINI = Path(__file__).parent / "data" / "data" / "mini"
SEQ = 32


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(cache):
    return prepare_data(DataSpec(mixture=str(MINI / "mixture.toml"), cache_dir=str(cache)), progress=False)


@pytest.fixture()
def mini_copy(tmp_path) -> Path:
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def _spec(mixture_dir: Path, cache: Path, tokenizer: str = "embedded-bpe") -> DataSpec:
    return DataSpec(mixture=str(mixture_dir / "mixture.toml"), tokenizer=tokenizer, cache_dir=str(cache))


# ---- shards ------------------------------------------------------------------------------------

def test_shards_hold_every_document_with_eos_and_exact_byte_counts(prepared):
    tok = prepared.tokenizer
    assert prepared.domains == ["prose", "code", "math"]
    assert prepared.weights == pytest.approx({"prose": 0.5, "code": 0.25, "math": 0.25})
    for split, shards in (("train", prepared.train), ("val", prepared.validation)):
        for d, sh in shards.items():
            texts = _texts(MINI / f"{d}-{split}.jsonl")
            assert sh.num_docs == len(texts) and sh.dtype == np.uint16
            for i, text in enumerate(texts):
                doc = sh.document(i)
                assert doc[-1] == tok.eos_id and tok.eos_id not in doc[:-1]
                assert doc[:-1].tolist() == tok.encode(text)
                assert sh.doc_bytes[i] == len(text.encode("utf-8"))
                # token byte lengths add up to the document's UTF-8 bytes: the basis of exact bpb
                assert tok.token_byte_lengths()[doc].sum() == sh.doc_bytes[i]
            assert sh.num_tokens == sh.offsets[-1] == len(sh.tokens)
    assert prepared.train_tokens == {d: s.num_tokens for d, s in prepared.train.items()}


def test_second_prepare_does_no_work_and_a_changed_source_rebuilds_only_its_shard(mini_copy, tmp_path):
    cache = tmp_path / "c"
    first = prepare_data(_spec(mini_copy, cache), progress=False)
    assert len(first.built) == 6
    again = prepare_data(_spec(mini_copy, cache), progress=False)
    assert again.built == []
    assert again.train["code"].path == first.train["code"].path
    with open(mini_copy / "code-train.jsonl", "a") as f:
        f.write(json.dumps({"text": "print('one more document')\n"}) + "\n")
    changed = prepare_data(_spec(mini_copy, cache), progress=False)
    assert changed.built == ["code/train"]
    assert changed.train["code"].num_docs == first.train["code"].num_docs + 1
    # another tokenizer is another cache key
    other = prepare_data(_spec(mini_copy, cache, tokenizer="llama3"), progress=False)
    assert len(other.built) == 6 and other.train["code"].dtype == np.uint32


def test_parallel_workers_give_identical_shards(mini_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "SMALL_INPUT_BYTES", 0)  # use the process pool even for tiny input
    monkeypatch.setattr(shards_mod, "CHUNK_CHARS", 3000)  # several chunks, so ordering matters
    one = prepare_data(_spec(mini_copy, tmp_path / "a"), progress=False, workers=1)
    two = prepare_data(_spec(mini_copy, tmp_path / "b"), progress=False, workers=2)
    assert two.train["prose"].meta["workers"] == 2
    for d in one.domains:
        assert np.array_equal(one.train[d].tokens, two.train[d].tokens)
        assert np.array_equal(one.train[d].offsets, two.train[d].offsets)


def test_source_formats_read_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    from delphi.data.documents import iter_documents

    src = MINI / "code-val.jsonl"
    raw = src.read_bytes()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "a.jsonl.xz").write_bytes(lzma.compress(raw))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    texts = _texts(src)
    pq.write_table(pa.table({"content": texts}), tmp_path / "a.parquet")
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for i, t in enumerate(texts):
        (txt_dir / f"{i}.txt").write_text(t, "utf-8")
    for name in ("a.jsonl.gz", "a.jsonl.xz", "a.jsonl.zst"):
        assert [d.text for d in iter_documents(str(tmp_path / name))] == texts
    assert [d.text for d in iter_documents(str(tmp_path / "a.parquet"), text_field="content")] == texts
    files = shards_mod.expand_sources([txt_dir])
    assert [d.text for f in files for d in iter_documents(f)] == texts


def test_interrupted_prepare_leaves_no_cache_entry(mini_copy, tmp_path):
    lines = (mini_copy / "prose-train.jsonl").read_text().splitlines()
    lines.insert(4, '{"text": "unterminated')
    (mini_copy / "prose-train.jsonl").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "c"
    with pytest.raises(DelphiError, match=r"prose-train\.jsonl:5: malformed JSON"):
        prepare_data(_spec(mini_copy, cache), progress=False)
    assert not any((cache / "shards").glob("prose-train-*"))
    assert not any(p.name.startswith(".") for p in (cache / "shards").iterdir())


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok"', r"code-train\.jsonl:3: malformed JSON"),
    ('{"content": "no text key"}', r"code-train\.jsonl:3: no string field 'text' \(found: content\)"),
    ('{"text": 17}', r"code-train\.jsonl:3: no string field 'text'"),
    ('["a list"]', r"code-train\.jsonl:3: no string field 'text'"),
    ('{"text": "\\ud800 lone surrogate"}', r"code-train\.jsonl:3: text is not valid Unicode"),
    (b'{"text": "caf\xe9 in latin-1"}', r"code-train\.jsonl:3: not valid UTF-8"),
])
def test_bad_records_raise_naming_file_and_line_or_are_counted_with_skip_bad(mini_copy, tmp_path, line, message):
    lines = (mini_copy / "code-train.jsonl").read_bytes().splitlines()
    lines.insert(2, line if isinstance(line, bytes) else line.encode())
    (mini_copy / "code-train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DelphiError, match=message):
        prepare_data(_spec(mini_copy, tmp_path / "c"), progress=False)
    skipped = prepare_data(_spec(mini_copy, tmp_path / "c"), progress=False, skip_bad=True)
    assert skipped.train["code"].meta["skipped_bad"] == 1
    assert skipped.train["code"].num_docs == len(lines) - 1
    # the cached, shortened shard is never used silently
    with pytest.warns(UserWarning, match="skip-bad"):
        prepare_data(_spec(mini_copy, tmp_path / "c"), progress=False)


def test_unreadable_and_missing_sources_raise(mini_copy, tmp_path):
    (mini_copy / "math-val.jsonl").unlink()
    (mini_copy / "math-val.jsonl.xz").write_bytes(b"this is not xz data at all")
    text = (mini_copy / "mixture.toml").read_text().replace('"math-val.jsonl"', '"math-val.jsonl.xz"')
    (mini_copy / "mixture.toml").write_text(text)
    with pytest.raises(DelphiError, match=r"math-val\.jsonl\.xz: cannot read file"):
        prepare_data(_spec(mini_copy, tmp_path / "c"), progress=False)
    (mini_copy / "mixture.toml").write_text(text.replace('"math-val.jsonl.xz"', '"nowhere.jsonl"'))
    with pytest.raises(DelphiError, match=r"nowhere\.jsonl does not exist"):
        prepare_data(_spec(mini_copy, tmp_path / "c"), progress=False)


@pytest.mark.parametrize("body, message", [
    ("", "needs a 'domains' table"),
    ('[domains.a]\nweight = -1\ntrain = ["x"]\nvalidation = ["y"]\n', "positive number 'weight'"),
    ('[domains.a]\nweight = 1\ntrain = ["x"]\n', "needs 'validation'"),
    ('[domains.a]\nweight = 1\ntrain = ["x"]\nvalidation = ["y"]\nlang = "en"\n', "unknown key"),
    ("[domains\n", "not valid TOML"),
])
def test_bad_mixture_files_raise(tmp_path, body, message):
    path = tmp_path / "m.toml"
    path.write_text(body)
    with pytest.raises(DelphiError, match=message):
        prepare_data(DataSpec(mixture=str(path), cache_dir=str(tmp_path / "c")), progress=False)


def test_unknown_mixture_and_tokenizer_names_raise(tmp_path):
    with pytest.raises(DelphiError, match="unknown mixture"):
        prepare_data(DataSpec(mixture="no-such-mixture", cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(DelphiError, match="unknown tokenizer"):
        prepare_data(DataSpec(mixture=str(MINI / "mixture.toml"), tokenizer="gpt7", cache_dir=str(tmp_path)),
                     progress=False)


# ---- loader ------------------------------------------------------------------------------------

def _batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_same_seed_same_batches_different_seed_different_order(prepared):
    a = _batches(PackedLoader(prepared, SEQ, 8, seed=1), 6)
    b = _batches(PackedLoader(prepared, SEQ, 8, seed=1), 6)
    c = _batches(PackedLoader(prepared, SEQ, 8, seed=2), 6)
    for x, y in zip(a, b):
        assert x.tokens.equal(y.tokens) and x.document_ids.equal(y.document_ids) and x.domains == y.domains
    assert not all(x.tokens.equal(z.tokens) for x, z in zip(a, c))
    assert a[0].tokens.shape == (8, SEQ + 1) and str(a[0].tokens.dtype) == "torch.int64"


@pytest.mark.filterwarnings("ignore::delphi.data.DataRepeatWarning")
def test_every_batch_holds_domains_in_proportion_to_weights(prepared):
    loader = PackedLoader(prepared, SEQ, 12, seed=0)
    for batch in _batches(loader, 20):
        counts = {d: batch.domains.count(d) for d in prepared.domains}
        for d, w in prepared.weights.items():
            assert np.floor(w * 12) <= counts[d] <= np.ceil(w * 12)
    # rows are not grouped by domain (a distributed trainer slices rows by rank)
    assert len({tuple(b.domains) for b in _batches(loader, 10)}) > 1


def test_resume_reproduces_the_uninterrupted_batches_across_epochs(prepared):
    steps = 3 * (prepared.train_tokens["math"] // SEQ)  # enough to wrap every domain's epoch
    with pytest.warns(DataRepeatWarning):
        full = _batches(PackedLoader(prepared, SEQ, 4, seed=3), steps)
    first = PackedLoader(prepared, SEQ, 4, seed=3)
    with pytest.warns(DataRepeatWarning):
        _batches(first, steps // 2)
    state = json.loads(json.dumps(first.state_dict()))
    assert len(json.dumps(state)) < 1000
    resumed = PackedLoader(prepared, SEQ, 4, seed=3)
    resumed.load_state_dict(state)
    for b, ref in zip(_batches(resumed, steps - steps // 2), full[steps // 2:]):
        assert b.step == ref.step and b.tokens.equal(ref.tokens) and b.document_ids.equal(ref.document_ids)
    assert max(resumed.epochs().values()) > 1


def test_one_epoch_uses_every_window_once_then_warns_once(prepared):
    import warnings

    loader = PackedLoader(prepared, SEQ, 4, seed=0)
    seen: dict[str, list] = {d: [] for d in prepared.domains}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while min(loader.epochs().values()) < 2.5:
            b = loader.next_batch()
            for row, d in zip(b.tokens, b.domains):
                seen[d].append(tuple(row.tolist()))
    repeats = [w for w in caught if issubclass(w.category, DataRepeatWarning)]
    assert sorted(str(w.message).split("'")[1] for w in repeats) == sorted(prepared.domains)  # once per domain
    for d in prepared.domains:
        sh = prepared.train[d]
        n = (sh.num_tokens - 1) // SEQ
        stream = np.asarray(sh.tokens)
        epoch0 = seen[d][:n]
        assert sorted(epoch0) == sorted(tuple(stream[k * SEQ:k * SEQ + SEQ + 1].tolist()) for k in range(n))


@pytest.mark.filterwarnings("ignore::delphi.data.DataRepeatWarning")
def test_document_ids_mark_true_document_boundaries(prepared):
    tok = prepared.tokenizer
    docs = {d: [tok.encode(t) + [tok.eos_id] for t in _texts(MINI / f"{d}-train.jsonl")] for d in prepared.domains}
    loader = PackedLoader(prepared, SEQ, 8, seed=5)
    crossings = 0
    for batch in _batches(loader, 40):
        for row, ids, d in zip(batch.tokens.tolist(), batch.document_ids.tolist(), batch.domains):
            j = 0
            while j < len(row):  # each run of one document id is a contiguous piece of that document
                k = j
                while k < len(row) and ids[k] == ids[j]:
                    k += 1
                doc, piece = docs[d][ids[j]], row[j:k]
                if j > 0:  # a new document starts at its beginning, right after the previous EOS
                    crossings += 1
                    assert piece == doc[:len(piece)] and row[j - 1] == tok.eos_id
                if k < len(row):  # a document that ends inside the window ends with its EOS
                    assert piece == doc[len(doc) - len(piece):]
                assert any(doc[s:s + len(piece)] == piece for s in range(len(doc) - len(piece) + 1))
                j = k
    assert crossings > 10


def test_loader_state_from_other_settings_is_refused(prepared):
    state = PackedLoader(prepared, SEQ, 4, seed=0).state_dict()
    with pytest.raises(DelphiError, match="seq_len"):
        PackedLoader(prepared, SEQ * 2, 4, seed=0).load_state_dict(state)
    with pytest.raises(DelphiError, match="seed"):
        PackedLoader(prepared, SEQ, 4, seed=1).load_state_dict(state)
    with pytest.raises(DelphiError, match="too|fewer"):
        PackedLoader(prepared, 100_000, 4, seed=0)


# ---- validation --------------------------------------------------------------------------------

def test_validation_windows_are_fixed_from_validation_documents_with_exact_bytes(prepared, cache):
    tok = prepared.tokenizer
    v1 = validation_sets(prepared, SEQ, 6)
    again = prepare_data(DataSpec(mixture=str(MINI / "mixture.toml"), cache_dir=str(cache)), progress=False)
    v2 = validation_sets(again, SEQ, 6)
    multibyte_split = 0
    for d in prepared.domains:
        a, b = v1[d], v2[d]
        assert a.tokens.shape == (6, SEQ + 1) and a.target_bytes.shape == (6, SEQ)
        assert a.tokens.equal(b.tokens) and a.target_bytes.equal(b.target_bytes)
        val_docs = [tok.encode(t) + [tok.eos_id] for t in _texts(MINI / f"{d}-val.jsonl")]
        train_texts = set(_texts(MINI / f"{d}-train.jsonl"))
        for row, ids, nbytes in zip(a.tokens.tolist(), a.document_ids.tolist(), a.target_bytes.tolist()):
            for tid, di in zip(row, ids):  # every token comes from the named validation document
                assert tid in val_docs[di]
            targets = row[1:]
            exact = tok.decode_bytes(targets)
            assert sum(nbytes) == len(exact)
            try:
                assert len(tok.decode(targets).encode("utf-8")) == sum(nbytes)
            except AssertionError:
                multibyte_split += 1  # the window cuts a multi-byte character: bytes still exact above
                with pytest.raises(UnicodeDecodeError):
                    exact.decode("utf-8")
        assert not train_texts & set(_texts(MINI / f"{d}-val.jsonl"))
    assert multibyte_split <= 2
    with pytest.raises(DelphiError, match="fewer than the 10000 requested"):
        validation_sets(prepared, SEQ, 10_000)


def test_tokenising_falls_back_to_this_process_when_workers_cannot_start(tmp_path):
    from delphi.data.shards import WorkerPool, _encode_texts
    from delphi.data.tokenizers import train_bpe

    path = tmp_path / "tok.json"
    path.write_text(train_bpe(_texts(MINI / "code-train.jsonl"), vocab_size=300).to_str())
    tok = load_tokenizer(path)
    path.unlink()  # the spawned workers cannot load the tokenizer any more
    texts = _texts(MINI / "code-val.jsonl")
    with WorkerPool(tok, 2) as pool:
        fut = pool.submit(texts, np.dtype(np.uint16))
        with pytest.warns(UserWarning, match="worker processes failed"):
            flat, lengths = pool.result(fut, texts, np.dtype(np.uint16))
    ref_flat, ref_lengths = _encode_texts(tok, texts, np.dtype(np.uint16))
    assert pool.broken and np.array_equal(flat, ref_flat) and np.array_equal(lengths, ref_lengths)


def test_shared_corpus_mixture_reads_the_corpus_directory(tmp_path, monkeypatch):
    from delphi.data import resolve_mixture

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    monkeypatch.setenv("DELPHI_CORPUS_DIR", str(corpus))
    with pytest.raises(DelphiError, match="DELPHI_CORPUS_DIR"):
        resolve_mixture("shared-corpus")
    for d in ("prose", "code", "math"):
        for split in ("train", "val"):
            (corpus / f"{d}-{split}.jsonl.xz").write_bytes(lzma.compress((MINI / f"{d}-{split}.jsonl").read_bytes()))
    mix = resolve_mixture("shared-corpus")
    assert mix.weights == pytest.approx({"prose": 0.6, "code": 0.11, "math": 0.29})
    assert mix.domain("code").train == (str(corpus.resolve() / "code-train.jsonl.xz"),)
    prepared = prepare_data(DataSpec(mixture="shared-corpus", cache_dir=str(tmp_path / "c")), progress=False)
    assert prepared.train["math"].num_docs == len(_texts(MINI / "math-train.jsonl"))


def test_resume_equivalence_holds_for_any_shape_and_split_point(prepared):
    from hypothesis import HealthCheck, given, settings, strategies as st

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seq_len=st.integers(4, 48), batch=st.integers(1, 9), seed=st.integers(0, 2**63 - 1),
           split=st.integers(0, 12))
    def check(seq_len, batch, seed, split):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataRepeatWarning)
            ref = _batches(PackedLoader(prepared, seq_len, batch, seed), 12)
            a = PackedLoader(prepared, seq_len, batch, seed)
            _batches(a, split)
            b = PackedLoader(prepared, seq_len, batch, seed)
            b.load_state_dict(json.loads(json.dumps(a.state_dict())))
            rest = _batches(b, 12 - split)
        for x, y in zip(rest, ref[split:]):
            assert x.tokens.equal(y.tokens) and x.document_ids.equal(y.document_ids) and x.domains == y.domains
        assert all(x.tokens.shape == (batch, seq_len + 1) for x in rest)

    check()


def test_unigram_baseline_scores_validation_windows_by_training_frequencies(prepared):
    from delphi.data.loader import unigram_baseline

    base = unigram_baseline(prepared, SEQ, 6)
    V = prepared.tokenizer.vocab_size
    total = sum(prepared.weights.values())
    p = np.zeros(V)
    for d, w in prepared.weights.items():
        counts = np.bincount(np.asarray(prepared.train[d].tokens, dtype=np.int64), minlength=V)[:V]
        p += w / total * (counts + 1) / (counts.sum() + V)
    val = validation_sets(prepared, SEQ, 6)
    for d in prepared.domains:
        t = val[d].tokens[:, 1:].numpy()
        nats = -np.log(p[t]).sum()
        assert base[f"loss/{d}"] == pytest.approx(nats / t.size)
        assert base[f"bpb/{d}"] == pytest.approx(nats / val[d].num_bytes / np.log(2))
        assert 0 < base[f"loss/{d}"] < np.log(V) + 1  # about a uniform guess at most, on held-out text
    assert base["loss"] == pytest.approx(np.mean([base[f"loss/{d}"] for d in prepared.domains]))


def test_data_repeat_notes_name_runs_that_outgrow_the_mixture(prepared):
    import types
    import warnings

    from delphi.sweep.pipeline import data_repeat_notes

    # Where the loader really starts repeating: draw batches until its DataRepeatWarning.
    loader, drawn = PackedLoader(prepared, SEQ, 4, seed=0), 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not any(issubclass(w.category, DataRepeatWarning) for w in caught):
            loader.next_batch()
            drawn += 4 * SEQ
    limit = prepared.tokens_before_repeat()
    assert abs(drawn - limit) <= 0.15 * limit
    small, large = types.SimpleNamespace(name="small", tokens=limit // 2), types.SimpleNamespace(name="big", tokens=2 * limit)
    notes = data_repeat_notes([small, large], prepared)
    assert len(notes) == 1 and notes[0].startswith("big reads") and "repeats" in notes[0]
