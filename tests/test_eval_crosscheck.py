"""Our per-choice log-likelihoods equal lm-evaluation-harness's HFLM.loglikelihood (to 1e-4)
on a tiny randomly initialised transformers model, for requests built from several tasks."""

import math

import pytest

from delphi.eval import hf_backend, parse_tasks
from delphi.eval.sources import load_records
from delphi.eval.tiny import make_tiny_hf_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("tiny-hf"), seed=3)


def _requests():
    reqs = []
    for task in parse_tasks("arc_easy:2,winogrande,lambada_openai,mmlu_sl_verb:5,hellaswag,gsm8k:2"):
        docs = task.docs(load_records(task.defn.dataset))[:4]
        reqs += [r for d in docs for r in d.requests]
    # Edge cases of lm-eval's encoding rules: empty context (prefix token), trailing spaces moved
    # into the continuation, a one-token continuation.
    reqs += [("", "The quick brown fox."), ("Question: what is it? ", "answer"), ("A", "B")]
    return reqs


def test_loglikelihood_matches_lm_eval_hflm(tiny_dir):
    # lm-eval with its HF backend (`lm-eval[hf]`, which brings accelerate) is in the test extra.
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    reqs = _requests()
    ours = hf_backend(tiny_dir, device="cpu", dtype="fp32", batch_size=5).loglikelihood(reqs)

    lm = HFLM(pretrained=str(tiny_dir), device="cpu", batch_size=3, dtype="float32")
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)]
    theirs = lm.loglikelihood(instances, disable_tqdm=True)

    assert len(ours) == len(theirs) == len(reqs)
    spread = max(ll for ll, _ in ours) - min(ll for ll, _ in ours)
    assert spread > 10  # the requests really differ: this comparison is not trivially satisfied
    for (a, ga), (b, gb), r in zip(ours, theirs, reqs):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-4), (r, a, b)
        assert ga == gb, r
