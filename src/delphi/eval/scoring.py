"""Metrics from per-choice log-likelihoods (delphi-notes §7.4). Pure numpy, no model.

For a document with choice log-likelihoods `ll_j` (nats, summed over the continuation's tokens),
byte lengths `b_j` and character lengths `c_j` of the choice strings, and gold index `g`:

* `acc`  = 1[argmax_j ll_j = g]; `acc_norm` = 1[argmax_j ll_j / c_j = g] (lm-eval);
* `bpb`  = −ll_g / b_g / ln 2; `logprob` = ll_g;
* `choice_logprob` = ll_g − logsumexp_j ll_j;
* `choice_prob_norm` = softmax_j(ll_j / b_j)[g] (Marin's lm-eval fork: byte-normalised scores),
  `choice_logprob_norm` its log.

Target tasks (one reference continuation): `bpb`, `nll` = −ll, and for LAMBADA `acc` = the whole
continuation is the greedy decode. Every metric is a mean over documents, except that for tasks
with groups (MMLU subjects) the soft metrics are unweighted means over groups while `acc` and
`acc_norm` stay size-weighted (Delphi's aggregation).
"""

from __future__ import annotations

import math

import numpy as np

from delphi.eval.tasks import Doc

LN2 = math.log(2.0)
ACCURACY_METRICS = ("acc", "acc_norm")
# For each soft metric: is a larger value better? (Step 1 of the downstream fit needs the sign.)
HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "bpb": False, "nll": False, "logprob": True,
                    "choice_logprob": True, "choice_prob_norm": True, "choice_logprob_norm": True}


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + math.log(float(np.sum(np.exp(x - m))))


def doc_metrics(doc: Doc, results: list[tuple[float, bool]], kind: str, greedy_acc: bool = False) -> dict[str, float]:
    """Metrics of one document from its requests' (log-likelihood, is_greedy) results."""
    ll = np.array([r[0] for r in results], dtype=np.float64)
    nbytes = np.array([max(len(t.encode("utf-8")), 1) for t in doc.norm_texts], dtype=np.float64)
    g = doc.gold
    if kind == "target":
        out = {"bpb": -ll[0] / nbytes[0] / LN2, "nll": -ll[0]}
        if greedy_acc:
            out["acc"] = float(results[0][1])
        return out
    nchars = np.array([max(len(t), 1) for t in doc.norm_texts], dtype=np.float64)
    scores = ll / nbytes
    log_p_norm = scores[g] - _logsumexp(scores)
    return {
        "acc": float(int(np.argmax(ll)) == g),
        "acc_norm": float(int(np.argmax(ll / nchars)) == g),
        "bpb": -ll[g] / nbytes[g] / LN2,
        "logprob": float(ll[g]),
        "choice_logprob": float(ll[g] - _logsumexp(ll)),
        "choice_prob_norm": math.exp(log_p_norm),
        "choice_logprob_norm": float(log_p_norm),
    }


def aggregate(docs: list[Doc], per_doc: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, dict]]:
    """Task metrics (and per-group metrics when documents carry groups)."""
    names = list(per_doc[0])
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(d.group, []).append(i)
    group_metrics = {g: {m: float(np.mean([per_doc[i][m] for i in idx])) for m in names} | {"n": len(idx)}
                     for g, idx in groups.items()}
    metrics = {}
    for m in names:
        if len(groups) > 1 and m not in ACCURACY_METRICS:
            metrics[m] = float(np.mean([gm[m] for gm in group_metrics.values()]))
        else:
            metrics[m] = float(np.mean([p[m] for p in per_doc]))
    # Standard error of the document mean, so users can see how stable a subset's metric is.
    for m in names:
        vals = np.array([p[m] for p in per_doc])
        metrics[f"{m}_stderr"] = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
    return metrics, (group_metrics if len(groups) > 1 else {})
