"""Validation loss during training: per-domain loss (nats/token) and bits-per-byte on fixed
validation windows, their macro and micro averages (`evaluate_validation`), and the `Evaluator`
the trainer calls every `eval_every` steps and at the end."""

from __future__ import annotations

import math
import time

import torch

from delphi.train import distributed as dist
from delphi.train.loss import LOG2_E, token_nll


@torch.no_grad()
def evaluate_validation(model, val_sets: dict, *, batch_size: int, device: str, autocast, use_doc_ids: bool,
                        info: dist.DistInfo) -> dict:
    """Per-domain loss (nats/token) and bits-per-byte, their macro (unweighted mean over domains,
    like Paloma's macro loss) and micro (token-weighted) averages. Windows are split across ranks;
    every rank runs the same number of forward passes (FSDP2 forwards are collective)."""
    domains = {}
    for name in sorted(val_sets):
        vs = val_sets[name]
        n = int(vs.tokens.shape[0])
        per_rank = -(-n // info.world_size)
        idx = torch.arange(info.rank * per_rank, (info.rank + 1) * per_rank)
        valid = idx < n
        idx = torch.where(valid, idx, torch.zeros_like(idx))
        sums = torch.zeros(3, dtype=torch.float64)  # loss, tokens, bytes
        for start in range(0, per_rank, batch_size):
            rows, w = idx[start:start + batch_size], valid[start:start + batch_size]
            if rows.numel() == 0:
                break
            tokens = vs.tokens[rows].to(device)
            doc = vs.document_ids[rows, :-1].to(device) if use_doc_ids else None
            with autocast():
                logits = model(tokens[:, :-1], doc)
            nll, _ = token_nll(logits, tokens[:, 1:])
            wt = w.to(device=device, dtype=torch.float64)[:, None]
            sums[0] += float((nll.double() * wt).sum())
            sums[1] += float(wt.sum()) * nll.shape[1]
            sums[2] += float((vs.target_bytes[rows].double() * w.double()[:, None]).sum())
        sums = dist.all_reduce_sum(sums.to(device), info).cpu()
        loss_sum, toks, nbytes = (float(x) for x in sums)
        domains[name] = {"loss": loss_sum / toks if toks else None,
                         "bpb": loss_sum / nbytes * LOG2_E if nbytes else None,
                         "tokens": int(toks), "bytes": int(nbytes), "_sum": loss_sum}
    live = [d for d in domains.values() if d["tokens"] > 0]
    tot_sum = sum(d["_sum"] for d in live)
    tot_tok = sum(d["tokens"] for d in live)
    tot_bytes = sum(d["bytes"] for d in live)
    for d in domains.values():
        d.pop("_sum")
    bpbs = [d["bpb"] for d in live if d["bpb"] is not None]
    return {
        "macro_loss": sum(d["loss"] for d in live) / len(live) if live else None,
        "macro_bpb": sum(bpbs) / len(bpbs) if bpbs else None,
        "micro_loss": tot_sum / tot_tok if tot_tok else None,
        "micro_bpb": tot_sum / tot_bytes * LOG2_E if tot_bytes else None,
        "domains": domains,
    }


def finite_or_none(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def clean_eval(ev: dict) -> dict:
    """An evaluation as metrics.jsonl and summary.json hold it: non-finite numbers as null."""
    out = {k: finite_or_none(ev.get(k)) for k in ("macro_loss", "macro_bpb", "micro_loss", "micro_bpb")}
    out["domains"] = {name: {"loss": finite_or_none(d["loss"]), "bpb": finite_or_none(d["bpb"]),
                             "tokens": d["tokens"], "bytes": d["bytes"]} for name, d in ev.get("domains", {}).items()}
    return out


class Evaluator:
    """Evaluates a model in eval mode on the run's validation windows (then restores its mode)."""

    def __init__(self, val_sets: dict, *, batch_size: int, device: str, autocast, use_doc_ids: bool,
                 info: dist.DistInfo):
        self.val_sets, self.info = val_sets, info
        self.kw = dict(batch_size=batch_size, device=device, autocast=autocast, use_doc_ids=use_doc_ids, info=info)
        self.time_s = 0.0  # spent evaluating (summary.json time_s.eval)

    def __call__(self, model) -> dict:
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        result = evaluate_validation(model, self.val_sets, **self.kw)
        model.train(was_training)
        self.time_s += time.perf_counter() - t0
        return result
