"""Tokenizers behind one small interface: encode, decode, vocab size, EOS id, bytes per token.

Two families:

* ``"llama3"`` — the Delphi tokenizer: Llama 3's tiktoken ranks, loaded offline from the
  ``llama-models`` package (``llama_models/llama3/tokenizer.model``), the Llama 3 split regex and
  256 special tokens from id 128000 named as Meta names them. Training EOS is
  ``<|end_of_text|>`` (128001).
* Hugging Face ``tokenizers`` files (``tokenizer.json``): ``"embedded-bpe"`` is the byte-level BPE
  (vocabulary 4096) shipped in the package, trained on the embedded corpus's train split, for CPU
  ladders where a 128k vocabulary would dwarf the model. :func:`train_bpe` trains new ones.

``encode`` treats its input as ordinary text: a literal ``<|endoftext|>`` inside a document is
encoded as characters, never as the special token, so data cannot forge document boundaries.

Bits-per-byte needs the UTF-8 bytes each token stands for. Byte-level BPE tokens can split a
multi-byte character, so byte counts come from each token's byte sequence
(:meth:`Tokenizer.token_bytes`), never from decoded strings.
"""

from __future__ import annotations

import abc

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from delphi.errors import DelphiError
from delphi.files import sha256_file

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_BPE_PATH = EMBEDDED_DIR / "tokenizer.json"
# Byte-level BPEs shipped in the package, trained on the embedded train split (build.py).
# "embedded-bpe-1k" is for the CPU suites: at widths 32–256 a 4096-token LM head would take most
# of each step's FLOPs; with 1024 tokens a run reads ~2× more text for the same compute.
EMBEDDED_TOKENIZERS = {"embedded-bpe": EMBEDDED_BPE_PATH, "embedded-bpe-1k": EMBEDDED_DIR / "tokenizer-1k.json"}
# The built-in tokenizer that matches a recipe's vocabulary (for runs built from a recipe alone).
TOKENIZER_FOR_VOCAB = {1024: "embedded-bpe-1k", 4096: "embedded-bpe", 128_256: "llama3"}

# Llama 3's pre-tokenisation regex (llama_models/llama3/tokenizer.py `pat_str`); also used by
# our trained BPE so that digits split in groups of at most three and code whitespace stays intact.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NUM_SPECIAL = 256
BPE_EOS = "<|endoftext|>"


def llama3_special_tokens() -> list[str]:
    """The 256 Llama 3 special tokens in id order (id = 128000 + index), as Meta names them."""
    named = [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
        "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
        "<|python_tag|>", "<|image|>",
    ]
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_SPECIAL - len(named))]
    return named + reserved


@lru_cache(maxsize=1)
def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes→printable-unicode map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Tokenizer(abc.ABC):
    """The interface training, evaluation and export use. Subclasses implement the encoding."""

    name: str  # stable identity ("llama3", "embedded-bpe", or "bpe:<path>")
    fingerprint: str  # hash of the tokenizer's definition: part of every data-cache key
    vocab_size: int
    eos_id: int
    eos_token: str

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """(implemented by each tokenizer)"""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """(implemented by each tokenizer)"""

    @abc.abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 byte sequence token ``token_id`` stands for (b"" for special tokens)."""

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of ``ids``: exact even where a token splits a multi-byte character."""
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 byte count of every token id (special tokens 0), int64 array of ``vocab_size``."""
        cached = getattr(self, "_byte_lengths", None)
        if cached is None:
            cached = np.array([len(self.token_bytes(i)) for i in range(self.vocab_size)], dtype=np.int64)
            cached.setflags(write=False)
            self._byte_lengths = cached
        return cached

    def save_hf(self, out_dir: str | os.PathLike) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json so that
        ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it with no network."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        hf = self.hf_tokenizer()
        hf.save(str(out / "tokenizer.json"))
        specials = self._hf_special_tokens()
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 1_000_000_000,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            **specials,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")

    @abc.abstractmethod
    def hf_tokenizer(self):  # -> tokenizers.Tokenizer
        """(implemented by each tokenizer)"""

    def _hf_special_tokens(self) -> dict[str, str]:
        return {"bos_token": self.eos_token, "eos_token": self.eos_token, "unk_token": self.eos_token}

    def spec(self) -> str:
        """What :func:`load_tokenizer` needs to rebuild this tokenizer (e.g. in a worker process)."""
        return getattr(self, "_spec", None) or self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


class TiktokenBPE(Tokenizer):
    """A byte-level BPE run by tiktoken: ``ranks`` maps each token's bytes to its id (= merge
    priority), ``pattern`` is the pre-tokenisation regex. tiktoken encodes several times faster
    than HF ``tokenizers`` with a Split regex, which matters when tokenising a corpus on two cores.

    The HF export (:meth:`hf_tokenizer`) goes through transformers' ``TikTokenConverter``: the
    vocabulary, every merge that forms a vocabulary token ordered by the token's rank, and
    ``ignore_merges`` — which reproduces tiktoken's rank-based merging exactly (tested).
    """

    def __init__(self, ranks: dict[bytes, int], pattern: str, specials: dict[str, int], *, name: str,
                 fingerprint: str, eos_token: str):
        import tiktoken

        self._ranks = ranks
        self._pattern = pattern
        self.special_tokens = dict(specials)
        self._enc = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
        self.name = name
        self.fingerprint = fingerprint
        self.vocab_size = self._enc.max_token_value + 1
        if len(ranks) + len(specials) != self.vocab_size:
            raise DelphiError(f"tokenizer {name}: token ids are not contiguous 0..{self.vocab_size - 1}")
        self.eos_token = eos_token
        self.eos_id = specials[eos_token]
        self._special_ids = set(specials.values())

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._enc.encode_ordinary(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        token_id = int(token_id)
        if token_id in self._special_ids:
            return b""
        return self._enc.decode_single_token_bytes(token_id)

    def hf_tokenizer(self):
        # The conversion imports transformers and walks every merge (seconds); a worker that
        # exports many runs with one tokenizer converts it once (keyed by the definition's hash).
        from tokenizers import Tokenizer as TokenizersTokenizer

        key = (self.fingerprint, self.name)
        if key not in _HF_CONVERTED:
            _HF_CONVERTED[key] = tiktoken_to_hf(self._ranks, self._pattern, self.special_tokens).to_str()
        return TokenizersTokenizer.from_str(_HF_CONVERTED[key])


_HF_CONVERTED: dict[tuple[str, str], str] = {}  # (fingerprint, name) -> tokenizer.json text


def tiktoken_to_hf(ranks: dict[bytes, int], pattern: str, specials: dict[str, int]):
    """A ``tokenizers.Tokenizer`` equivalent to tiktoken with these ranks, regex and specials,
    built with transformers' ``TikTokenConverter`` (the converter behind Llama 3's tokenizer.json)."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _FromRanks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url):
            return ranks

    tok = _FromRanks(vocab_file="<in memory>", pattern=pattern).converted()
    if min(specials.values()) < len(ranks):
        # Specials below the BPE ids (our trained BPE puts <|endoftext|> at 0): put them into the
        # model vocabulary at their ids so add_special_tokens reuses those ids.
        import json as _json
        from tokenizers import Tokenizer as _HF

        d = _json.loads(tok.to_str())
        for t, i in specials.items():
            d["model"]["vocab"][t] = i
        tok = _HF.from_str(_json.dumps(d))
    ordered = sorted(specials, key=specials.get)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ordered])
    return tok


class Llama3Tokenizer(TiktokenBPE):
    """Llama 3 via tiktoken, loaded from the llama-models package (no network)."""

    def __init__(self, model_path: str | os.PathLike | None = None):
        from tiktoken.load import load_tiktoken_bpe

        path = Path(model_path) if model_path else _llama3_model_path()
        ranks = load_tiktoken_bpe(str(path))
        specials = {tok: len(ranks) + i for i, tok in enumerate(llama3_special_tokens())}
        super().__init__(ranks, LLAMA3_PATTERN, specials, name="llama3",
                         fingerprint="llama3-" + sha256_file(path)[:16],
                         eos_token="<|end_of_text|>")  # 128,256 ids; EOS 128001
        self.bos_id = specials["<|begin_of_text|>"]

    def _hf_special_tokens(self) -> dict[str, str]:
        return {"bos_token": "<|begin_of_text|>", "eos_token": self.eos_token}


def _tiktoken_form(d: dict):
    """(ranks, pattern, specials) if a parsed tokenizer.json is a tiktoken-converted byte-level BPE
    (ours, Llama 3's): then tiktoken encodes it exactly as HF does. None otherwise."""
    model, pre = d.get("model") or {}, d.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or not model.get("ignore_merges") or d.get("normalizer"):
        return None
    if (d.get("decoder") or {}).get("type") != "ByteLevel" or pre.get("type") != "Sequence":
        return None
    steps = pre.get("pretokenizers") or []
    if (len(steps) != 2 or steps[0].get("type") != "Split" or "Regex" not in (steps[0].get("pattern") or {})
            or steps[0].get("behavior") != "Isolated" or steps[0].get("invert")
            or steps[1].get("type") != "ByteLevel" or steps[1].get("use_regex") or steps[1].get("add_prefix_space")):
        return None
    specials = {t["content"]: t["id"] for t in d.get("added_tokens") or [] if t.get("special")}
    table = _gpt2_byte_decoder()
    ranks = {}
    for piece, i in model["vocab"].items():
        if piece in specials:
            continue
        try:
            ranks[bytes(table[c] for c in piece)] = i
        except KeyError:
            return None
    return ranks, steps[0]["pattern"]["Regex"], specials


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer.json (our trained byte-level BPE, or any other)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, eos_token: str | None = None):
        from tokenizers import Tokenizer as _HF

        path = Path(path)
        try:
            raw = path.read_bytes()
            self._tok = _HF.from_str(raw.decode("utf-8"))
        except FileNotFoundError:
            raise DelphiError(f"tokenizer file {path} does not exist; pass 'llama3', 'embedded-bpe' or a tokenizer.json path") from None
        except Exception as e:  # tokenizers raises plain Exception for malformed files
            raise DelphiError(f"tokenizer file {path} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        # Data is ordinary text: never let a literal special-token string become a special id.
        self._tok.encode_special_tokens = True
        self._path = path
        self._raw = raw.decode("utf-8")
        self.name = name or f"bpe:{path.resolve()}"
        self.fingerprint = "hf-" + hashlib.sha256(raw).hexdigest()[:16]
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        added = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        self._special_ids = {self._tok.token_to_id(t) for t in added}
        if eos_token is None:
            eos_token = next((t for t in (BPE_EOS, "</s>", "<|end_of_text|>", "<eos>") if t in added), None)
        if eos_token is None or self._tok.token_to_id(eos_token) is None:
            raise DelphiError(
                f"tokenizer {path} has no end-of-document special token ({BPE_EOS} or </s>); "
                f"train it with 'delphi tokenizer train', which adds {BPE_EOS}")
        self.eos_token = eos_token
        self.eos_id = self._tok.token_to_id(eos_token)
        self._byte_level = "ByteLevel" in json.dumps(json.loads(raw).get("decoder") or {})

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        token_id = int(token_id)
        if token_id in self._special_ids:
            return b""
        piece = self._tok.id_to_token(token_id)
        if piece is None:
            return b""
        if self._byte_level:
            table = _gpt2_byte_decoder()
            try:
                return bytes(table[c] for c in piece)
            except KeyError:  # a non-special added token: its literal text
                return piece.encode("utf-8")
        # SentencePiece-style vocabularies: byte-fallback pieces and the "▁" space marker.
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def hf_tokenizer(self):
        from tokenizers import Tokenizer as _HF

        return _HF.from_str(self._raw)


def _llama3_model_path() -> Path:
    try:
        import llama_models
    except ImportError:
        raise DelphiError("the llama3 tokenizer needs the 'llama-models' package: pip install llama-models") from None
    path = Path(llama_models.__file__).resolve().parent / "llama3" / "tokenizer.model"
    if not path.exists():
        raise DelphiError(f"llama-models is installed but {path} is missing; reinstall llama-models")
    return path


def _load_json_tokenizer(path: Path, name: str | None = None) -> Tokenizer:
    try:
        raw = path.read_bytes()
        d = json.loads(raw)
    except FileNotFoundError:
        raise DelphiError(f"tokenizer file {path} does not exist; pass 'llama3', 'embedded-bpe' or a tokenizer.json path") from None
    except (OSError, ValueError) as e:
        raise DelphiError(f"tokenizer file {path} is not a readable tokenizer.json ({e})") from None
    form = _tiktoken_form(d) if isinstance(d, dict) else None
    if form is None:
        return HFTokenizer(path, name=name)
    ranks, pattern, specials = form
    eos = next((t for t in (BPE_EOS, "<|end_of_text|>", "</s>", "<eos>") if t in specials), None)
    if eos is None:
        raise DelphiError(f"tokenizer {path} has no end-of-document special token ({BPE_EOS}); "
                          f"train it with 'delphi tokenizer train', which adds one")
    return TiktokenBPE(ranks, pattern, specials, name=name or f"bpe:{path.resolve()}",
                       fingerprint="bpe-" + hashlib.sha256(raw).hexdigest()[:16], eos_token=eos)


@lru_cache(maxsize=8)
def _load_cached(key: str, stamp: tuple = ()) -> Tokenizer:  # stamp: a file's (mtime, size)
    if key == "llama3":
        return Llama3Tokenizer()
    if key in EMBEDDED_TOKENIZERS:
        path = EMBEDDED_TOKENIZERS[key]
        if not path.exists():
            raise DelphiError(f"the embedded tokenizer {path} is missing from this installation")
        tok = _load_json_tokenizer(path, name=key)
        tok._spec = key
        return tok
    tok = _load_json_tokenizer(Path(key))
    tok._spec = key
    return tok


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """``"llama3"``, ``"embedded-bpe"`` (4096), ``"embedded-bpe-1k"`` (1024), or a path to a
    ``tokenizer.json`` (or a directory holding one)."""
    key = str(name_or_path)
    if key != "llama3" and key not in EMBEDDED_TOKENIZERS:
        p = Path(key).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.exists():
            raise DelphiError(
                f"unknown tokenizer {key!r}: not 'llama3', 'embedded-bpe' or 'embedded-bpe-1k', and no "
                "tokenizer.json at that path")
        key = str(p.resolve())
        st = p.stat()
        return _load_cached(key, (st.st_mtime_ns, st.st_size))
    return _load_cached(key)


# ---- training ------------------------------------------------------------------------------

def train_bpe(texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2,
              length: int | None = None, show_progress: bool = False):
    """Train a byte-level BPE (HF ``tokenizers``) with the Llama 3 split regex and one special
    token, ``<|endoftext|>`` (id 0, the EOS). Returns a ``tokenizers.Tokenizer``.

    Deterministic for the same texts and settings (tested). The result is returned in the
    tiktoken-converted form :func:`load_tokenizer` runs with tiktoken.
    """
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as _HF

    if vocab_size < 256 + 1:
        raise DelphiError(f"vocab size must be at least 257 (256 bytes + EOS), got {vocab_size}")
    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[BPE_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    # Re-express the result in tiktoken form (ranks = ids, all merges, ignore_merges), the form
    # every Delphi tokenizer uses: tiktoken encodes it fast and HF encodes it identically.
    table = _gpt2_byte_decoder()
    ranks = {bytes(table[c] for c in piece): i for piece, i in tok.get_vocab(with_added_tokens=False).items()
             if piece != BPE_EOS}
    return tiktoken_to_hf(ranks, LLAMA3_PATTERN, {BPE_EOS: tok.token_to_id(BPE_EOS)})

