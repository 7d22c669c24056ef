"""The packed, deterministic, resumable training loader and the fixed validation windows.

Packing: each domain's train shard is one token stream (documents in file order, EOS after
each). A window is ``seq_len + 1`` consecutive tokens starting at a multiple of ``seq_len`` (plus
a per-epoch offset), so consecutive windows share one token and every token is a target exactly
once per epoch. Windows, not documents, are shuffled: a long book is spread over the whole epoch
instead of filling many consecutive batches, which matters for small CPU runs.

Mixing: batch ``step`` gets its rows' domains by systematic sampling from the weights with an RNG
seeded by ``(seed, step)``: every batch holds each domain in proportion to its weight (⌊w·B⌋ or
⌈w·B⌉ rows), rows in random order (a distributed trainer slices rows by rank).

Order: domain ``d``'s windows in epoch ``e`` follow a permutation seeded by ``(seed, crc32(d), e)``.
So the whole loader state is the step and, per domain, (epoch, cursor) — a few integers, saved in
every checkpoint; resuming reproduces the uninterrupted run's batches exactly.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from delphi.errors import DelphiError

STATE_VERSION = 1
_MASK64 = (1 << 64) - 1


class DataRepeatWarning(UserWarning):
    """A domain's train tokens ran out and the loader started another epoch of it."""


@dataclass
class Batch:
    tokens: Any  # torch.LongTensor [batch_size, seq_len + 1]; inputs tokens[:, :-1], targets tokens[:, 1:]
    document_ids: Any  # torch.LongTensor [batch_size, seq_len + 1]; document index within its domain's shard
    domains: list[str]  # the domain of each row
    step: int  # index of this batch (0 for the first)


def _document_ids(offsets: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Index of the document each token position belongs to (a document owns its trailing EOS)."""
    pos = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.searchsorted(offsets, pos, side="right") - 1


def _gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    out = np.empty((len(starts), length), dtype=np.int64)
    for i, s in enumerate(starts):
        out[i] = tokens[s:s + length]
    return out


class PackedLoader:
    """``next_batch()`` → :class:`Batch`; ``state_dict()``/``load_state_dict()``; ``epochs()``."""

    def __init__(self, prepared, seq_len: int, batch_size: int, seed: int):
        if seq_len <= 0 or batch_size <= 0:
            raise DelphiError(f"loader: seq_len and batch_size must be positive, got {seq_len} and {batch_size}")
        self.prepared = prepared
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.domains = list(prepared.domains)
        self._weights = np.array([prepared.weights[d] for d in self.domains], dtype=np.float64)
        self._cdf = np.cumsum(self._weights / self._weights.sum())
        self._shards = [prepared.train[d] for d in self.domains]
        for d, sh in zip(self.domains, self._shards):
            if sh.num_tokens < self.seq_len + 1:
                raise DelphiError(f"loader: domain {d!r} has {sh.num_tokens} train tokens, fewer than one "
                                  f"window of seq_len + 1 = {self.seq_len + 1}; use a shorter seq_len or more data")
        self._tags = [zlib.crc32(d.encode()) for d in self.domains]
        self.step = 0
        self._epoch = [0] * len(self.domains)
        self._cursor = [0] * len(self.domains)
        self._windows = [0] * len(self.domains)  # windows drawn in total (all epochs)
        self._plans: dict[int, tuple[int, np.ndarray, int]] = {}

    # ---- deterministic plans ------------------------------------------------------------------
    def _plan(self, i: int) -> tuple[np.ndarray, int]:
        """(window permutation, start offset) of domain ``i`` in its current epoch."""
        e = self._epoch[i]
        cached = self._plans.get(i)
        if cached is None or cached[0] != e:
            rng = np.random.default_rng([self.seed & _MASK64, self._tags[i], e, 1])
            # Later epochs shift the window grid so a repeat does not replay identical windows.
            off = 0 if e == 0 else int(rng.integers(self.seq_len))
            n = (self._shards[i].num_tokens - 1 - off) // self.seq_len
            if n <= 0:
                off, n = 0, (self._shards[i].num_tokens - 1) // self.seq_len
            cached = (e, rng.permutation(n), off)
            self._plans[i] = cached
        return cached[1], cached[2]

    def _row_domains(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed & _MASK64, step, 0])
        pos = (rng.random() + np.arange(self.batch_size)) / self.batch_size
        rows = np.minimum(np.searchsorted(self._cdf, pos, side="right"), len(self.domains) - 1)
        rng.shuffle(rows)
        return rows

    def _next_start(self, i: int) -> int:
        perm, off = self._plan(i)
        if self._cursor[i] >= len(perm):
            self._epoch[i] += 1
            self._cursor[i] = 0
            if self._epoch[i] == 1:
                warnings.warn(DataRepeatWarning(
                    f"data: domain {self.domains[i]!r} has used all of its {self._shards[i].num_tokens:,} train "
                    f"tokens and starts repeating (epoch 2); the run sees repeated data"), stacklevel=3)  # the caller of next_batch
            perm, off = self._plan(i)
        k = int(perm[self._cursor[i]])
        self._cursor[i] += 1
        self._windows[i] += 1
        return off + k * self.seq_len

    # ---- public API ---------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        import torch

        rows = self._row_domains(self.step)
        L = self.seq_len + 1
        tokens = np.empty((self.batch_size, L), dtype=np.int64)
        doc_ids = np.empty((self.batch_size, L), dtype=np.int64)
        for i in np.unique(rows):
            idx = np.nonzero(rows == i)[0]
            starts = np.empty(len(idx), dtype=np.int64)
            for j in range(len(idx)):
                starts[j] = self._next_start(int(i))
            sh = self._shards[i]
            tokens[idx] = _gather(sh.tokens, starts, L)
            doc_ids[idx] = _document_ids(sh.offsets, starts, L)
        batch = Batch(torch.from_numpy(tokens), torch.from_numpy(doc_ids),
                      [self.domains[i] for i in rows], self.step)
        self.step += 1
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def epochs(self) -> dict[str, float]:
        """Fraction of each domain's train tokens consumed so far (> 1: data repeated)."""
        return {d: self._windows[i] * self.seq_len / max(self._shards[i].num_tokens - 1, 1)
                for i, d in enumerate(self.domains)}

    def tokens_seen(self) -> dict[str, int]:
        return {d: self._windows[i] * self.seq_len for i, d in enumerate(self.domains)}

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION, "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
            "step": self.step,
            "domains": {d: {"epoch": self._epoch[i], "cursor": self._cursor[i], "windows": self._windows[i]}
                        for i, d in enumerate(self.domains)},
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise DelphiError("loader state: not a PackedLoader state of this version; the checkpoint is from "
                              "another Delphi version or corrupt")
        for key in ("seed", "seq_len", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise DelphiError(f"loader state: {key} {state.get(key)!r} differs from this loader's "
                                  f"{getattr(self, key)!r}; resume with the run's original settings")
        if set(state.get("domains", {})) != set(self.domains):
            raise DelphiError(f"loader state: domains {sorted(state.get('domains', {}))} differ from the mixture's "
                              f"{sorted(self.domains)}; resume with the run's original data")
        self.step = int(state["step"])
        for i, d in enumerate(self.domains):
            s = state["domains"][d]
            self._epoch[i], self._cursor[i], self._windows[i] = int(s["epoch"]), int(s["cursor"]), int(s["windows"])


# ---- validation -----------------------------------------------------------------------------------

@dataclass
class ValidationSet:
    domain: str
    tokens: Any  # torch.LongTensor [n, seq_len + 1]
    document_ids: Any  # torch.LongTensor [n, seq_len + 1]
    target_bytes: Any  # torch.LongTensor [n, seq_len]: UTF-8 bytes of each target token (EOS: 0)

    @property
    def num_tokens(self) -> int:
        return int(self.target_bytes.numel())

    @property
    def num_bytes(self) -> int:
        return int(self.target_bytes.sum())


def validation_sets(prepared, seq_len: int, windows_per_domain: int) -> dict[str, "ValidationSet"]:
    """Fixed windows per domain from its validation documents, spread evenly over the validation
    stream: identical across runs for the same data, tokenizer and ``seq_len``."""
    import torch

    if seq_len <= 0 or windows_per_domain <= 0:
        raise DelphiError(f"validation: seq_len and windows_per_domain must be positive, "
                          f"got {seq_len} and {windows_per_domain}")
    byte_len = prepared.tokenizer.token_byte_lengths()
    out = {}
    for d in prepared.domains:
        sh = prepared.validation[d]
        available = (sh.num_tokens - 1) // seq_len
        if windows_per_domain > available:
            raise DelphiError(f"validation: domain {d!r} holds {available} windows of {seq_len + 1} tokens, "
                              f"fewer than the {windows_per_domain} requested; lower eval_windows_per_domain")
        starts = (np.arange(windows_per_domain, dtype=np.int64) * available // windows_per_domain) * seq_len
        toks = _gather(sh.tokens, starts, seq_len + 1)
        out[d] = ValidationSet(d, torch.from_numpy(toks), torch.from_numpy(_document_ids(sh.offsets, starts, seq_len + 1)),
                               torch.from_numpy(byte_len[toks[:, 1:]]))
    return out


def unigram_baseline(prepared, seq_len: int, windows_per_domain: int) -> dict[str, float]:
    """The validation metrics of a model that knows only the training mixture's token frequencies.

    Each token of the fixed validation windows (`validation_sets`) is scored by
    −log p(token) under the unigram distribution of the training shards, mixed by the mixture's
    weights (what a model trained on that stream learns first); add-one counts keep unseen
    tokens finite. Keys follow a run's summary: "loss" and "bpb" (macro: unweighted mean over
    domains), "loss/<domain>", "bpb/<domain>". The loss law's ceiling form uses the value of the
    fitted metric as its H: the loss an IsoFLOP optimum starts from before any power law.
    """
    vocab = prepared.tokenizer.vocab_size
    weights = prepared.weights
    total = sum(weights.values())
    p = np.zeros(vocab, dtype=np.float64)
    for d, w in weights.items():
        counts = np.bincount(np.asarray(prepared.train[d].tokens, dtype=np.int64), minlength=vocab)[:vocab]
        p += (w / total) * (counts + 1.0) / (counts.sum() + vocab)
    logp = np.log(p)  # a mixture of normalised distributions: sums to 1
    out: dict[str, float] = {}
    for name, vs in validation_sets(prepared, seq_len, windows_per_domain).items():
        targets = vs.tokens[:, 1:].numpy()
        nats = float(-logp[targets].sum())
        out[f"loss/{name}"] = nats / targets.size
        out[f"bpb/{name}"] = nats / max(vs.num_bytes, 1) / math.log(2)
    for metric in ("loss", "bpb"):
        out[metric] = sum(out[f"{metric}/{d}"] for d in prepared.domains) / len(prepared.domains)
    return out
