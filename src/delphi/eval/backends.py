"""Log-likelihood backends: a local Hugging Face causal LM, or an in-memory Delphi `Qwen3`.

Both share one scorer (`TokenScorer.loglikelihood`) that follows lm-evaluation-harness's
`HFLM.loglikelihood` exactly, so numbers agree with it (tests cross-check to 1e-4):
trailing context whitespace moves to the continuation; context and context+continuation are
encoded and the continuation is the tail of the joint encoding; an empty context is replaced by
the prefix token (BOS, else EOS); over-long inputs are truncated from the left; requests are
sorted longest first and right-padded into batches; log-softmax is taken in float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from delphi.errors import DelphiError


def pick_device(device: str | None = None) -> torch.device:
    """"auto" (CUDA when present, else CPU), or a device this machine has: cpu, cuda, cuda:N, mps."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DelphiError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DelphiError(f"device {device!r}: this machine has no usable CUDA GPU; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DelphiError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DelphiError(f"device {device!r}: MPS is not available on this machine; use --device cpu or auto")
    elif dev.type != "cpu":
        raise DelphiError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


class TokenScorer:
    """Scores (context, continuation) pairs with a causal LM given as `forward(ids) -> logits`."""

    def __init__(self, *, name: str, encode: Callable[[str], list[int]], prefix_id: int,
                 forward: Callable[[torch.Tensor], torch.Tensor], vocab_size: int, max_length: int,
                 device: torch.device, batch_size: int = 16, max_batch_tokens: int | None = None,
                 pad_id: int = 0):
        self.name = name
        self.encode = encode
        self.prefix_id = prefix_id
        self.forward = forward
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        # Bound the [B, T, V] logits the forward pass materialises (~2 GB of float32 by default).
        self.max_batch_tokens = max_batch_tokens or max(1024, int(2e9 / (4 * vocab_size)))
        self.pad_id = pad_id

    # -- tokenisation (lm-eval's _encode_pair and empty-context rule) ---------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.encode(continuation)
            if cont and cont[0] == self.prefix_id:
                return cont[:1], cont[1:]
            return [self.prefix_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    # -- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]], *, progress: bool = False,
                      description: str = "scoring") -> list[tuple[float, bool]]:
        """(sum of continuation token log-probs in nats, continuation is the greedy decode) per request."""
        encoded = [self.encode_pair(c, x) for c, x in requests]
        for (c, x), (_, cont) in zip(requests, encoded):
            if not cont:
                raise DelphiError(f"eval: continuation {x!r} encodes to no tokens after context {c[-40:]!r}")
        inputs = []
        for ctx, cont in encoded:
            inp = (ctx + cont)[-(self.max_length + 1):][:-1]
            inputs.append((inp, len(cont)))
        order = sorted(range(len(inputs)), key=lambda i: (-len(inputs[i][0]), i))
        results: list[tuple[float, bool] | None] = [None] * len(inputs)

        bar = _progress(progress, len(order), description)
        pos = 0
        while pos < len(order):
            longest = len(inputs[order[pos]][0])
            n = max(1, min(self.batch_size, self.max_batch_tokens // max(longest, 1)))
            chunk = order[pos:pos + n]
            ids = torch.full((len(chunk), longest), self.pad_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                inp = inputs[i][0]
                ids[row, :len(inp)] = torch.tensor(inp, dtype=torch.long)
            logits = self.forward(ids.to(self.device))
            for row, i in enumerate(chunk):
                inp, contlen = inputs[i]
                cont = torch.tensor(encoded[i][1][-contlen:], dtype=torch.long, device=logits.device)
                piece = F.log_softmax(logits[row, len(inp) - contlen:len(inp), : self.vocab_size].float(), dim=-1)
                ll = piece.gather(-1, cont[:, None]).squeeze(-1).sum().item()
                greedy = bool((piece.argmax(-1) == cont).all().item())
                results[i] = (float(ll), greedy)
            pos += len(chunk)
            if bar is not None:
                bar[0].update(bar[1], advance=len(chunk))
        if bar is not None:
            bar[0].stop()
        return results  # type: ignore[return-value]


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                 TimeRemainingColumn(), transient=True)
    p.start()
    return p, p.add_task(description, total=total)


# ---- Hugging Face ----------------------------------------------------------------------------
def hf_backend(path: str | Path, *, device: str | None = None, dtype: str = "auto", batch_size: int = 16,
               max_length: int | None = None, name: str | None = None) -> TokenScorer:
    """A local `transformers` causal-LM directory (config.json + weights + tokenizer files)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise DelphiError(f"{path} is not a Hugging Face model directory (no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    torch_dtype = _dtype(dtype, dev)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DelphiError(f"cannot load the model in {path}: {str(e).splitlines()[0]}") from None
    model.to(dev).eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if prefix is None:
        raise DelphiError(f"tokenizer in {path} has neither a BOS nor an EOS token")
    cfg = model.config
    if max_length is None:
        max_length = next((getattr(cfg, a) for a in ("max_position_embeddings", "n_positions", "n_ctx")
                           if getattr(cfg, a, None)), 2048)
    return TokenScorer(
        name=name or path.name, encode=lambda s: tok.encode(s), prefix_id=int(prefix),
        forward=lambda ids: model(ids).logits, vocab_size=int(cfg.vocab_size), max_length=int(max_length),
        device=dev, batch_size=batch_size, pad_id=int(tok.pad_token_id if tok.pad_token_id is not None else prefix))


def model_backend(model: torch.nn.Module, tokenizer, *, name: str = "model", device: str | None = None,
                  batch_size: int = 16, max_length: int | None = None) -> TokenScorer:
    """An in-memory Delphi `Qwen3` (`model(ids) -> logits`) with a `delphi.data` tokenizer
    (`encode` without special tokens; the empty-context prefix is its EOS, the document
    separator it was trained with)."""
    dev = pick_device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    shape = getattr(model, "shape", None)
    if max_length is None:
        max_length = int(getattr(shape, "seq_len", 2048))
    return TokenScorer(
        name=name, encode=tokenizer.encode, prefix_id=int(tokenizer.eos_id), forward=lambda ids: model(ids),
        vocab_size=int(tokenizer.vocab_size), max_length=max_length, device=dev, batch_size=batch_size,
        pad_id=int(tokenizer.eos_id))


def _dtype(dtype: str, dev: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    try:
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
    except KeyError:
        raise DelphiError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16") from None
