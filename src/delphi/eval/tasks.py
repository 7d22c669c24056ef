"""Evaluation tasks: records → documents of (context, continuation) requests.

Formats follow lm-evaluation-harness (target delimiter " ", few-shot separator "\\n\\n", k-shot
prompts from a fixed pool, taken first-n) and, for `mmlu_sl_verb`, Delphi's verbalised MMLU
(delphi-notes §7.3: the continuation is "A. <option text>", after the subject description).

Kinds of task:
* `choice`  — one context, one continuation per choice (ARC, HellaSwag, PIQA, MMLU, …);
* `partial` — Winograd-style partial scoring: one context per option, the same continuation
  scored after each (WinoGrande, WSC273);
* `target`  — one reference continuation: LAMBADA (last word: bpb, nll, greedy accuracy) and
  GSM8K (bpb and nll of the full reference solution, 5-shot, as Delphi's `logprob_gsm8k_5shot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from delphi.errors import DelphiError

DELIM = " "
SEP = "\n\n"


@dataclass(frozen=True)
class Doc:
    """One scored item: a request per choice, the gold index, and the strings whose UTF-8 bytes
    (bpb, byte-normalised softmax) and characters (acc_norm) normalise each choice."""

    requests: tuple[tuple[str, str], ...]
    gold: int
    norm_texts: tuple[str, ...]
    group: str = ""


@dataclass(frozen=True)
class TaskDef:
    name: str
    dataset: str
    kind: str  # "choice" | "partial" | "target"
    default_fewshot: int
    chance: float
    build: Callable[[list[dict], list[dict], int], list[Doc]]
    greedy_acc: bool = False  # target tasks: report exact-greedy accuracy (LAMBADA)
    description: str = ""


@dataclass(frozen=True)
class Task:
    """A task at a fixed number of shots; `key` names it in results ("mmlu_sl_verb_5shot")."""

    defn: TaskDef
    num_fewshot: int

    @property
    def name(self) -> str:
        return self.defn.name

    @property
    def key(self) -> str:
        return f"{self.defn.name}_{self.num_fewshot}shot"

    def docs(self, records: list[dict]) -> list[Doc]:
        evals = [r for r in records if r["split"] == "eval"]
        pool = [r for r in records if r["split"] == "fewshot"]
        return self.defn.build(evals, pool, self.num_fewshot)


def _prefix(shots: list[str]) -> str:
    return "".join(s + SEP for s in shots)


# ---- multiple choice (llm-foundry records {query, choices, gold}) -----------------------------
def _choice_builder(text: Callable[[dict], str]):
    def build(evals: list[dict], pool: list[dict], k: int) -> list[Doc]:
        if k > len(pool):
            raise DelphiError(f"only {len(pool)} few-shot examples available, asked for {k}")
        prefix = _prefix([text(r) + DELIM + r["choices"][r["gold"]] for r in pool[:k]])
        docs = []
        for r in evals:
            ctx = prefix + text(r)
            docs.append(Doc(tuple((ctx, DELIM + c) for c in r["choices"]), int(r["gold"]), tuple(r["choices"])))
        return docs
    return build


def _q_answer(r: dict) -> str:
    return r["query"].rstrip() + "\nAnswer:"


def _query(r: dict) -> str:
    return r["query"]


# ---- Winograd-style partial scoring -----------------------------------------------------------
def _build_partial(evals: list[dict], pool: list[dict], k: int) -> list[Doc]:
    if k > len(pool):
        raise DelphiError(f"only {len(pool)} few-shot examples available, asked for {k}")
    prefix = _prefix([r["context_options"][r["gold"]] + DELIM + r["continuation"] for r in pool[:k]])
    docs = []
    for r in evals:
        cont = DELIM + r["continuation"]
        docs.append(Doc(tuple((prefix + o, cont) for o in r["context_options"]), int(r["gold"]),
                        tuple(r["continuation"] for _ in r["context_options"])))
    return docs


# ---- single-target tasks -----------------------------------------------------------------------
def _build_lambada(evals: list[dict], pool: list[dict], k: int) -> list[Doc]:
    prefix = _prefix([r["context"] + DELIM + r["continuation"] for r in pool[:k]])
    return [Doc(((prefix + r["context"], DELIM + r["continuation"]),), 0, (DELIM + r["continuation"],))
            for r in evals]


def _gsm8k_q(r: dict) -> str:
    return f"Question: {r['context']}\nAnswer:"


def _gsm8k_a(r: dict) -> str:
    # The HF `openai/gsm8k` answer field: the worked solution, then "#### <number>".
    return f" {r['chain_of_thought']}\n#### {r['answer']}"


def _build_gsm8k(evals: list[dict], pool: list[dict], k: int) -> list[Doc]:
    if k > len(pool):
        raise DelphiError(f"only {len(pool)} few-shot examples available, asked for {k}")
    prefix = _prefix([_gsm8k_q(r) + _gsm8k_a(r) for r in pool[:k]])
    return [Doc(((prefix + _gsm8k_q(r), _gsm8k_a(r)),), 0, (_gsm8k_a(r),)) for r in evals]


# ---- MMLU ------------------------------------------------------------------------------------
LETTERS = "ABCD"


def _mmlu_text(r: dict) -> str:
    opts = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"]))
    return f"{r['question'].strip()}{opts}\nAnswer:"


def _mmlu_builder(verbalised: bool):
    def choices(r: dict) -> list[str]:
        if verbalised:
            return [f"{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"])]
        return list(LETTERS[: len(r["choices"])])

    def build(evals: list[dict], pool: list[dict], k: int) -> list[Doc]:
        by_subject: dict[str, list[dict]] = {}
        for r in pool:
            by_subject.setdefault(r["subject"], []).append(r)
        docs = []
        for r in evals:
            s = r["subject"]
            shots = by_subject.get(s, [])
            if k > len(shots):
                raise DelphiError(f"MMLU {s}: only {len(shots)} dev examples for {k}-shot")
            desc = f"The following are multiple choice questions (with answers) about {s.replace('_', ' ')}.\n\n"
            ctx = desc + _prefix([_mmlu_text(x) + DELIM + choices(x)[x["answer"]] for x in shots[:k]]) + _mmlu_text(r)
            cs = choices(r)
            docs.append(Doc(tuple((ctx, DELIM + c) for c in cs), int(r["answer"]), tuple(cs), group=s))
        return docs
    return build


TASKS: dict[str, TaskDef] = {t.name: t for t in [
    TaskDef("arc_easy", "arc_easy", "choice", 0, 0.25, _choice_builder(_q_answer)),
    TaskDef("arc_challenge", "arc_challenge", "choice", 0, 0.25, _choice_builder(_q_answer)),
    TaskDef("boolq", "boolq", "choice", 0, 0.5, _choice_builder(_q_answer)),
    TaskDef("commonsense_qa", "commonsense_qa", "choice", 0, 0.2, _choice_builder(_query)),
    TaskDef("copa", "copa", "choice", 0, 0.5, _choice_builder(_query)),
    TaskDef("hellaswag", "hellaswag", "choice", 0, 0.25, _choice_builder(_query)),
    TaskDef("openbook_qa", "openbook_qa", "choice", 0, 0.25, _choice_builder(_query)),
    TaskDef("piqa", "piqa", "choice", 0, 0.5, _choice_builder(_q_answer)),
    TaskDef("siqa", "siqa", "choice", 0, 1 / 3, _choice_builder(_query)),
    TaskDef("winogrande", "winogrande", "partial", 0, 0.5, _build_partial),
    TaskDef("winograd_wsc", "winograd_wsc", "partial", 0, 0.5, _build_partial),
    TaskDef("lambada_openai", "lambada_openai", "target", 0, 0.0, _build_lambada, greedy_acc=True),
    TaskDef("gsm8k", "gsm8k", "target", 5, 0.0, _build_gsm8k),
    TaskDef("mmlu", "mmlu", "choice", 5, 0.25, _mmlu_builder(verbalised=False)),
    TaskDef("mmlu_sl_verb", "mmlu", "choice", 5, 0.25, _mmlu_builder(verbalised=True)),
]}

PRESETS = {
    # Delphi's downstream suite (delphi-notes §7.2): verbalised MMLU 0- and 5-shot, GSM8K 5-shot.
    "delphi": ["mmlu_sl_verb:0", "mmlu_sl_verb:5", "gsm8k:5"],
    "core": ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "lambada_openai",
             "mmlu_sl_verb:5", "gsm8k:5"],
    "all": sorted(TASKS),
}


def parse_tasks(spec: str | list[str]) -> list[Task]:
    """'arc_easy,mmlu_sl_verb:5,core' → tasks (name[:shots], or a preset name)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Task] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in PRESETS:
            out += parse_tasks(PRESETS[item])
            continue
        name, _, shots = item.partition(":")
        if name not in TASKS:
            raise DelphiError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}; "
                              f"presets: {', '.join(sorted(PRESETS))}")
        try:
            k = int(shots) if shots else TASKS[name].default_fewshot
        except ValueError:
            raise DelphiError(f"task {item!r}: the number of shots after ':' must be an integer") from None
        if k < 0:
            raise DelphiError(f"task {item!r}: the number of shots must be >= 0")
        task = Task(TASKS[name], k)
        if task.key not in {t.key for t in out}:
            out.append(task)
    if not out:
        raise DelphiError("no tasks given; e.g. --tasks core or --tasks arc_easy,mmlu_sl_verb:5")
    return out
