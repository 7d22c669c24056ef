"""Bad input never ends in a traceback: every spec reader (suite TOML, RunSpec JSON, mixture TOML,
tuned-recipe TOML) and the CLI flags answer a mistake with one line naming the key and exit 2.

A table of bad inputs, each run through the command a person would type (in-process, through
`delphi.cli.main`), checks the exit code and the message; property-based fuzzing checks that the
readers either parse or raise `DelphiError`, never anything else.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delphi.cli import main as cli_main
from delphi.config import RunSpec
from delphi.data.mixture import mixture_from_dict
from delphi.errors import DelphiError
from delphi.recipe import get_recipe
from delphi.recipe.presets import recipe_from_table
from delphi.sweep.suite import parse_suite

# ---- a valid suite, run spec, mixture and recipe; every case below breaks one of them ------------

SUITE = {
    "suite": {"name": "ci"},
    "recipe": {"preset": "cpu", "name": "ci", "name_suffix": "ci", "min_tokens_per_param": 0.6,
               "max_tokens_per_param": 30.0, "target_steps": 128},
    "grid": {"budgets": [6e10, 1e11, 2e11, 3e11]},
    "heldout": {"budgets": [1e12], "seeds": [0]},
    "data": {"mixture": "embedded", "tokenizer": "embedded-bpe-1k"},
    "eval": {"windows_per_domain": 4},
    "train": {"precision": "fp32", "compile": "off"},
    "fit": {"bootstrap": 200},
    "executor": {"kind": "local", "workers": 1},
}

RUN = {
    "name": "tiny", "batch_size": 4, "train_steps": 10, "seed": 0,
    "shape": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "head_dim": 16,
              "intermediate_size": 64, "vocab_size": 4096, "seq_len": 32},
    "optimizer": {"name": "adamh", "lr": 0.02, "adam_lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    "data": {"mixture": "embedded", "tokenizer": "embedded-bpe"},
}

MIXTURE = {"domains": {"web": {"weight": 0.7, "train": ["train.jsonl"], "validation": ["val.jsonl"]},
                       "code": {"weight": 0.3, "train": ["train.jsonl"], "validation": ["val.jsonl"]}}}

RECIPE = {"recipe": {"preset": "cpu", "lr0": 0.02, "adam_lr0": 0.06}}

DOWNSTREAM = {"downstream": ["arc_easy:5"], "pool": "{tmp}/pool.csv", "soft": "arc_easy_5shot/bpb", "floor": 0.25}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_dump(doc: dict) -> str:
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}"
             for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(name, ensure_ascii=False)}]")
            lines += [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_toml_dump_round_trips():
    assert tomllib.loads(toml_dump(SUITE)) == SUITE


# ---- mutations of the valid documents --------------------------------------------------------------

def S(section, key, value):
    """Set [section] key = value (a value of _DEL removes the key)."""
    def f(doc):
        if value is _DEL:
            doc.get(section, {}).pop(key, None)
        else:
            doc.setdefault(section, {})[key] = value
    return f


def J(path, value):
    """Set a dotted path of a JSON document (a value of _DEL removes it)."""
    def f(doc):
        *parents, last = path.split(".")
        for p in parents:
            doc = doc[p]
        if value is _DEL:
            doc.pop(last, None)
        else:
            doc[last] = value
    return f


def M(*fs):
    def f(doc):
        for g in fs:
            g(doc)
    return f


_DEL = object()

SUITE_CASES = [
    # [executor]
    ("workers-string", S("executor", "workers", "two"),
     '[executor] workers must be an integer in [1, 4096], got "two"'),
    ("workers-zero", S("executor", "workers", 0), "[executor] workers must be an integer"),
    ("workers-float", S("executor", "workers", 1.5), "[executor] workers must be an integer"),
    ("threads-negative", S("executor", "threads_per_worker", -1), "[executor] threads_per_worker must be an integer"),
    ("executor-kind", S("executor", "kind", "slurm"), '[executor] kind must be one of local, ray, got "slurm"'),
    ("cpus-per-run-zero", S("executor", "cpus_per_run", 0), "[executor] cpus_per_run must be a positive number"),
    ("gpus-per-run-negative", S("executor", "gpus_per_run", -1), "[executor] gpus_per_run must be a non-negative"),
    ("executor-address-int", S("executor", "address", 5), "[executor] address must be a Ray cluster address"),
    ("executor-unknown-key", S("executor", "nodes", 3), "[executor] unknown key nodes"),
    # [train]
    ("ckpt-minutes-string", S("train", "checkpoint_every_minutes", "soon"),
     '[train] checkpoint_every_minutes must be a non-negative number of minutes'),
    ("ckpt-minutes-negative", S("train", "checkpoint_every_minutes", -5), "checkpoint_every_minutes must be"),
    ("ckpt-minutes-inf", S("train", "checkpoint_every_minutes", math.inf), "checkpoint_every_minutes must be"),
    ("ckpt-every-negative", S("train", "checkpoint_every", -1), "[train] checkpoint_every must be an integer ≥ 0"),
    ("ckpt-every-float", S("train", "checkpoint_every", 2.5), "[train] checkpoint_every must be an integer"),
    ("precision", S("train", "precision", "fp16"), '[train] precision must be one of auto, fp32, bf16, got "fp16"'),
    ("compile-bool", S("train", "compile", True), "[train] compile must be one of auto, on, off, got true"),
    ("train-unknown-key", S("train", "epochs", 3), "[train] unknown key epochs"),
    # [eval]
    ("floor-string", M(S("eval", "floor", "x")), '[eval] floor must be a number in [0, 1)'),
    ("floor-one", S("eval", "floor", 1.0), "[eval] floor must be a number in [0, 1)"),
    ("floor-negative", S("eval", "floor", -0.1), "[eval] floor must be a number in [0, 1)"),
    ("eval-every-negative", S("eval", "every", -3), "[eval] every must be an integer ≥ 0"),
    ("windows-zero", S("eval", "windows_per_domain", 0), "[eval] windows_per_domain must be an integer ≥ 1"),
    ("limit-zero", S("eval", "limit", 0), "[eval] limit must be an integer ≥ 1"),
    ("downstream-string", S("eval", "downstream", "arc_easy"), "[eval] downstream must be a list of task names"),
    ("downstream-unknown-task", S("eval", "downstream", ["no_such_task"]), "[eval] downstream: unknown task"),
    ("pool-without-tasks", S("eval", "pool", "{tmp}/pool.csv"), "[eval] pool is used only with downstream tasks"),
    ("pool-missing", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()), S("eval", "pool", "{tmp}/nope.csv")),
     "[eval] pool", "no such file or directory"),
    ("pool-without-soft", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()), S("eval", "soft", _DEL)),
     "[eval] pool needs [eval] soft"),
    ("soft-task-not-evaluated", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()), S("eval", "soft", "mmlu/bpb")),
     "[eval] soft must be <task>/<metric>"),
    ("soft-unknown-metric", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()),
                              S("eval", "soft", "arc_easy_5shot/zzz")), "[eval] soft must be <task>/<metric>"),
    ("pool-non-numeric-cell", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()),
                                S("eval", "pool", "{tmp}/badpool.csv")), "column 'soft' must hold finite numbers"),
    ("pool-missing-column", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()),
                              S("eval", "pool", "{tmp}/nocol.csv")), "needs columns model, soft, hard"),
    ("pool-bootstrap-too-small", M(*(S("eval", k, v) for k, v in DOWNSTREAM.items()), S("fit", "bootstrap", 5)),
     "[fit] bootstrap must be at least 10"),
    ("floor-without-pool", M(S("eval", "downstream", ["arc_easy:5"]), S("eval", "floor", 0.25)),
     "[eval] floor is used only with [eval] pool"),
    # [fit]
    ("fit-metric-unknown", S("fit", "metric", "accuracy"), "[fit] metric must be loss, bpb, loss/<domain>"),
    ("fit-metric-domain", S("fit", "metric", "loss/klingon"), "domains of mixture 'embedded': prose, code, math"),
    ("fit-metric-downstream", S("fit", "metric", "arc_easy_5shot/bpb"), "downstream columns are measured after"),
    ("fit-metric-int", S("fit", "metric", 3), "[fit] metric must be a metric name"),
    ("fit-compute", S("fit", "compute", "flops"), "[fit] compute must be one of total, non-embedding"),
    ("fit-ceiling-word", S("fit", "ceiling", "bigram"), '[fit] ceiling must be "unigram" (measured on the data) or a positive number'),
    ("fit-ceiling-negative", S("fit", "ceiling", -2.0), '[fit] ceiling must be "unigram"'),
    ("fit-bootstrap-negative", S("fit", "bootstrap", -1), "[fit] bootstrap must be an integer"),
    ("fit-bootstrap-string", S("fit", "bootstrap", "many"), "[fit] bootstrap must be an integer"),
    ("fit-seed-negative", S("fit", "seed", -1), "[fit] seed must be an integer ≥ 0"),
    # [grid] and [heldout]
    ("grid-empty", S("grid", "budgets", []), "[grid] budgets must be a non-empty list of FLOP budgets"),
    ("grid-negative", S("grid", "budgets", [1e10, -3e10, 1e11]), "entry -30000000000.0 must be a positive number"),
    ("grid-string", S("grid", "budgets", ["1e11", 2e11, 3e11]), 'entry "1e11" must be a positive number of FLOPs'),
    ("grid-duplicate", S("grid", "budgets", [6e10, 6e10, 1e11, 2e11]), "lists 60000000000.0 more than once"),
    ("grid-two", S("grid", "budgets", [6e10, 1e11]), "needs at least 3 budgets"),
    ("grid-inf", S("grid", "budgets", [6e10, 1e11, math.inf]), "entry inf must be a positive number"),
    ("grid-huge", S("grid", "budgets", [6e10, 1e11, 1e40]), "must be a positive number of FLOPs ≤ 1e+30"),
    ("grid-scalar", S("grid", "budgets", 1e11), "[grid] budgets must be a non-empty list"),
    ("grid-missing", S("grid", "budgets", _DEL), "[grid] budgets is missing"),
    ("grid-seed-negative", S("grid", "seed", -2), "[grid] seed must be an integer ≥ 0, got -2"),
    ("grid-seed-string", S("grid", "seed", "0"), '[grid] seed must be an integer ≥ 0, got "0"'),
    ("grid-too-small", S("grid", "budgets", [1e3, 2e3, 3e3]), "has 0 candidate(s)"),
    ("heldout-no-candidate", S("heldout", "budgets", [1e3]), "no valid candidate"),
    ("heldout-seeds-empty", S("heldout", "seeds", []), "[heldout] seeds must be a non-empty list"),
    ("heldout-seed-negative", S("heldout", "seeds", [-1]), "entry -1 must be an integer ≥ 0"),
    ("heldout-seed-duplicate", S("heldout", "seeds", [0, 0]), "lists 0 more than once"),
    ("spread-seeds-scalar", S("heldout", "spread_seeds", 1), "[heldout] spread_seeds must be a list"),
    ("heldout-batch-zero", S("heldout", "batch_size", 0), "[heldout] batch_size must be an integer ≥ 1"),
    ("heldout-batch-float", S("heldout", "batch_size", 64.0), "[heldout] batch_size must be an integer ≥ 1"),
    ("heldout-batch-too-big", S("heldout", "batch_size", 10**9), "leaves no training step"),
    # [data]
    ("mixture-unknown", S("data", "mixture", "no-such-mixture"), "[data] mixture: unknown mixture"),
    ("mixture-bad-file", S("data", "mixture", "{tmp}/badmix.toml"), "[data] mixture:", "positive number 'weight'"),
    ("tokenizer-unknown", S("data", "tokenizer", "gpt7"), "[data] tokenizer: unknown tokenizer"),
    ("tokenizer-vocab", S("data", "tokenizer", "embedded-bpe"), "has 4096 tokens but the recipe's vocab_size is 1024"),
    ("data-bool", S("data", "block_cross_document_attention", "yes"),
     '[data] block_cross_document_attention must be true or false, got "yes"'),
    ("data-cache-dir-int", S("data", "cache_dir", 3), "[data] cache_dir must be a directory path"),
    ("data-nul", S("data", "mixture", "a\x00b"), "must not contain a NUL character"),
    ("data-unknown-key", S("data", "colour", 1), "[data] unknown key colour"),
    # [suite] and structure
    ("suite-name-empty", S("suite", "name", ""), "[suite] name must be a non-empty suite name"),
    ("suite-name-slash", S("suite", "name", "a/b"), "[suite] name must be a name usable as a directory name"),
    ("suite-out-dir-int", S("suite", "out_dir", 7), "[suite] out_dir must be a directory path"),
    ("suite-unknown-key", S("suite", "colour", "red"), "[suite] unknown key colour"),
    ("unknown-section", S("bogus", "x", 1), "unknown section [bogus]"),
    ("section-not-table", lambda d: d.update(fit=3), "[fit] must be a table, got 3"),
    # [recipe]
    ("recipe-unknown-preset", S("recipe", "preset", "nope"), "[recipe] preset: unknown recipe 'nope'"),
    ("recipe-preset-int", S("recipe", "preset", 3), "[recipe] preset must be a recipe name"),
    ("recipe-lr0-negative", S("recipe", "lr0", -0.1), "[recipe] lr0 must be a positive number ≤ 10, got -0.1"),
    ("recipe-lr0-absurd", S("recipe", "lr0", 1e6), "[recipe] lr0 must be a positive number ≤ 10"),
    ("recipe-beta2", S("recipe", "beta2_0", 1.0), "[recipe] beta2_0 must be a number in [0, 1), got 1.0"),
    ("recipe-unknown-constant", S("recipe", "warp", 9), "unknown recipe constant(s) warp"),
    ("recipe-min-batch", S("recipe", "min_batch", 4096), "[recipe] min_batch (4096) must be at most max_batch"),
    ("recipe-min-width", S("recipe", "min_width", 17), "[recipe] min_width (17) must be a multiple of head_dim"),
    ("recipe-width-step-zero", S("recipe", "width_step", 0), "[recipe] width_step must be an integer"),
    ("recipe-isoflop-empty", S("recipe", "isoflop_budgets", []), "[recipe] isoflop_budgets must be a non-empty list"),
    ("recipe-batch-rounding", S("recipe", "batch_rounding", "nearest"), "batch_rounding must be one of"),
    ("recipe-batch-rounding-int", S("recipe", "batch_rounding", 2), "[recipe] batch_rounding must be like"),
    ("recipe-steps-string", S("recipe", "target_steps", "many"), "[recipe] target_steps must be an integer"),
    ("recipe-schedule", M(S("recipe", "warmup_fraction", 0.8), S("recipe", "decay_fraction", 0.5)),
     "[recipe] warmup_fraction and decay_fraction must sum to at most 1"),
    ("recipe-epsilon-zero", S("recipe", "epsilon0", 0), "[recipe] epsilon0 must be a positive number"),
    ("recipe-depth", S("recipe", "depth_offset", 1000.0), "[recipe] depth_offset is too large"),
    ("recipe-not-table", lambda d: d.update(recipe="cpu"), "[recipe] must be a table"),
    # several problems: all in one message
    ("several-at-once", M(S("executor", "workers", "two"), S("train", "checkpoint_every_minutes", "soon"),
                          S("eval", "floor", "x"), S("fit", "metric", "acc")),
     '[executor] workers must be an integer in [1, 4096], got "two"',
     '[train] checkpoint_every_minutes must be a non-negative number of minutes (0: no time-based checkpoints), '
     'got "soon"', '[eval] floor must be a number in [0, 1)', '[fit] metric must be loss, bpb'),
]

RAW_SUITES = [
    ("toml-syntax", "[fit\n", "not valid TOML"),
    ("toml-binary", b"\xff\xfe[suite]\x00", "not UTF-8 text"),
    ("toml-nested", "a = " + "[" * 3000, "not valid TOML (nested too deeply)"),
    ("toml-empty", "", "[grid] budgets is missing"),
]

RUN_CASES = [
    ("array", "[1, 2]", "a run spec must be a JSON object", "got an array"),
    ("string", '"run"', "got a string"),
    ("null", "null", "got null"),
    ("not-json", "{", "not valid JSON"),
    ("binary", b"\xff\xfe{}", "not UTF-8 text"),
    ("nested", "[" * 100000, "not valid JSON"),
    ("lr-string", J("optimizer.lr", "0.1"), 'optimizer.lr must be a positive number ≤ 10, got "0.1"'),
    ("beta2-above-one", J("optimizer.beta2", 1.5), "optimizer.beta2 must be a number in [0, 1), got 1.5"),
    ("beta2-one", J("optimizer.beta2", 1.0), "optimizer.beta2 must be a number in [0, 1)"),
    ("beta1-negative", J("optimizer.beta1", -0.1), "optimizer.beta1 must be a number in [0, 1)"),
    ("lr-negative", J("optimizer.lr", -1), "optimizer.lr must be a positive number ≤ 10, got -1"),
    ("lr-zero", J("optimizer.lr", 0), "optimizer.lr must be a positive number"),
    ("lr-absurd", J("optimizer.lr", 1e6), "optimizer.lr must be a positive number ≤ 10, got 1000000.0"),
    ("lr-nan", '{"optimizer": {"lr": NaN}}', "optimizer.lr must be a positive number ≤ 10, got nan"),
    ("lr-bool", J("optimizer.lr", True), "optimizer.lr must be a positive number ≤ 10, got true"),
    ("epsilon-zero", J("optimizer.epsilon", 0), "optimizer.epsilon must be a positive number"),
    ("adam-lr-zero", J("optimizer.adam_lr", 0.0), "optimizer.adam_lr must be a positive number"),
    ("weight-decay-negative", J("optimizer.weight_decay", -0.1), "optimizer.weight_decay must be a"),
    ("grad-norm-negative", J("optimizer.max_grad_norm", -1), "optimizer.max_grad_norm must be a non-negative"),
    ("optimizer-name", J("optimizer.name", "sgd"), 'optimizer.name must be one of adamh, adamw, adamc, got "sgd"'),
    ("schedule-fractions", M(J("optimizer.warmup_fraction", 0.9), J("optimizer.decay_fraction", 0.2)),
     "optimizer.warmup_fraction and decay_fraction must sum to at most 1"),
    ("min-lr-ratio", J("optimizer.min_lr_ratio", 2), "optimizer.min_lr_ratio must be a number in [0, 1]"),
    ("optimizer-unknown", J("optimizer.momentum", 0.9), "optimizer unknown field momentum"),
    ("optimizer-array", J("optimizer", [0.1]), "optimizer must be an object, got an array"),
    ("seed-negative", J("seed", -1), "seed must be an integer ≥ 0, got -1"),
    ("seed-float", J("seed", 1.5), "seed must be an integer ≥ 0, got 1.5"),
    ("seed-huge", J("seed", 2**70), "seed must be at most"),
    ("batch-zero", J("batch_size", 0), "batch_size must be an integer ≥ 1, got 0"),
    ("steps-string", J("train_steps", "10"), 'train_steps must be an integer ≥ 1, got "10"'),
    ("eval-every-negative", J("eval_every", -1), "eval_every must be an integer ≥ 0"),
    ("ckpt-every-negative", J("checkpoint_every", -5), "checkpoint_every must be an integer ≥ 0"),
    ("ckpt-minutes-string", J("checkpoint_every_minutes", "soon"), "checkpoint_every_minutes must be a non-negative"),
    ("windows-zero", J("eval_windows_per_domain", 0), "eval_windows_per_domain must be an integer ≥ 1"),
    ("precision", J("precision", "fp16"), "precision must be one of auto, fp32, bf16"),
    ("compile", J("compile", "maybe"), "compile must be one of auto, on, off"),
    ("budget-negative", J("budget", -5), "budget must be a positive number of FLOPs"),
    ("name-empty", J("name", ""), "name must be a non-empty run name"),
    ("name-path", J("name", "../escape"), "name must be a name usable as a directory name"),
    ("tags-not-strings", J("tags", {"a": 1}), "tags must be a table of strings"),
    ("unknown-field", J("colour", "red"), "unknown field colour"),
    ("missing-shape", J("shape", _DEL), "missing field(s) shape"),
    ("shape-number", J("shape", 5), "shape must be an object, got a number"),
    ("hidden-zero", J("shape.hidden_size", 0), "shape.hidden_size must be an integer ≥ 1, got 0"),
    ("heads-not-multiple", M(J("shape.num_heads", 3), J("shape.num_kv_heads", 2)),
     "shape.num_heads (3) must be a multiple of num_kv_heads (2)"),
    ("rms-eps-negative", J("shape.rms_norm_eps", -1), "shape.rms_norm_eps must be a positive number"),
    ("tie-string", J("shape.tie_embeddings", "no"), 'shape.tie_embeddings must be true or false, got "no"'),
    ("rope-factors", J("shape.rope_high_freq_factor", 0.5), "shape.rope_high_freq_factor must be greater than"),
    ("shape-missing-field", J("shape.seq_len", _DEL), "shape is missing field(s) seq_len"),
    ("data-mixture-unknown", J("data.mixture", "no-such"), "data.mixture: unknown mixture 'no-such'"),
    ("data-tokenizer-unknown", J("data.tokenizer", "gpt7"), "data.tokenizer: unknown tokenizer"),
    ("data-bool", J("data.block_cross_document_attention", 1), "must be true or false, got 1"),
    ("vocab-too-small", J("shape.vocab_size", 100), "has 4096 tokens but shape.vocab_size is 100"),
    ("several-at-once", M(J("optimizer.lr", "0.1"), J("optimizer.beta2", 1.5), J("seed", -1)),
     'optimizer.lr must be a positive number ≤ 10, got "0.1"', "optimizer.beta2 must be a number in [0, 1)",
     "seed must be an integer ≥ 0"),
]

MIXTURE_CASES = [
    ("empty", {}, "needs a 'domains' table"),
    ("weight-negative", J("domains.web.weight", -1), "[domains.web] domain 'web' needs a positive number 'weight'"),
    ("weight-string", J("domains.web.weight", "heavy"), "needs a positive number 'weight', got \"heavy\""),
    ("weight-inf", J("domains.web.weight", math.inf), "needs a positive number 'weight', got inf"),
    ("weight-huge", M(J("domains.web.weight", 1e308), J("domains.code.weight", 1e308)), "weights are too large"),
    ("validation-missing", J("domains.web.validation", _DEL), "needs 'validation' as a list of paths"),
    ("train-empty", J("domains.web.train", []), "needs 'train' as a list of paths"),
    ("train-number", J("domains.web.train", [3]), "needs 'train' as a list of paths"),
    ("source-missing", J("domains.web.train", ["nowhere.jsonl"]), "[domains.web] train: data source",
     "nowhere.jsonl does not exist"),
    ("unknown-key", J("domains.web.lang", "en"), "domain 'web' has unknown key(s) lang"),
    ("text-field-empty", J("domains.web.text_field", ""), "text_field must be a non-empty string"),
    ("domain-not-table", J("domains.web", 3), "domain 'web' must be a table"),
    ("domain-name-slash", lambda d: d["domains"].update({"a/b": d["domains"]["web"]}), "bad domain name"),
    ("top-level-key", J("name", "x"), "unknown top-level key name"),
    ("toml-syntax", "[domains\n", "not valid TOML"),
    ("binary", b"\xff\xfe", "not UTF-8 text"),
    ("several-at-once", M(J("domains.web.weight", -1), J("domains.code.validation", _DEL)),
     "needs a positive number 'weight'", "domain 'code' needs 'validation'"),
]

RECIPE_CASES = [
    ("no-recipe-table", {"suite": {"name": "x"}}, "no [recipe] table"),
    ("no-preset", {"recipe": {"lr0": 0.01}}, '[recipe] needs preset = "NAME"'),
    ("unknown-preset", J("recipe.preset", "nope"), "[recipe] preset: unknown recipe 'nope'"),
    ("lr0-string", J("recipe.lr0", "fast"), '[recipe] lr0 must be a positive number ≤ 10, got "fast"'),
    ("lr0-zero", J("recipe.lr0", 0), "[recipe] lr0 must be a positive number"),
    ("lr-cap-absurd", J("recipe.lr_cap", 50.0), "[recipe] lr_cap must be a positive number ≤ 10"),
    ("beta2-above-one", J("recipe.beta2_0", 1.5), "[recipe] beta2_0 must be a number in [0, 1)"),
    ("unknown-constant", J("recipe.lr_zero", 0.1), "unknown recipe constant(s) lr_zero"),
    ("ref-batch-negative", J("recipe.ref_batch", -16), "[recipe] ref_batch must be a positive number"),
    ("isoflop-negative", J("recipe.isoflop_budgets", [1e11, -1]), "[recipe] isoflop_budgets entry -1"),
    ("tokens-per-param", M(J("recipe.min_tokens_per_param", 50.0), J("recipe.max_tokens_per_param", 10.0)),
     "[recipe] min_tokens_per_param (50) must be below max_tokens_per_param (10)"),
    ("beta2-bounds", M(J("recipe.beta2_min", 0.99), J("recipe.beta2_max", 0.9)), "must be at most beta2_max"),
    ("name-slash", J("recipe.name", "a/b"), "[recipe] name must be a name usable as a directory name"),
    ("rope-string", J("recipe.rope_scaling", "yes"), "[recipe] rope_scaling must be true or false"),
    ("horizon-exponent", J("recipe.horizon_exponent", 1e3), "[recipe] horizon_exponent must be a"),
    ("width-range-huge", M(J("recipe.width_step", 16), J("recipe.max_width", 1 << 21)), "more than 10000 widths"),
    ("toml-syntax", "[recipe\n", "not valid TOML"),
    ("several-at-once", M(J("recipe.lr0", -1), J("recipe.beta1", 2), J("recipe.colour", 1)),
     "[recipe] lr0 must be", "[recipe] beta1 must be", "unknown recipe constant(s) colour"),
]

ARGV_CASES = [
    ("plan-alloc-alpha-1000", ["plan", "--alloc-a", "1", "--alloc-alpha", "1000"],
     "--alloc-alpha must be a number in (0, 1)"),
    ("plan-alloc-alpha-nan", ["plan", "--alloc-a", "1", "--alloc-alpha", "nan"], "--alloc-alpha must be a number"),
    ("plan-alloc-alpha-inf", ["plan", "--alloc-a", "1", "--alloc-alpha", "inf"], "--alloc-alpha must be a number"),
    ("plan-alloc-alpha-text", ["plan", "--alloc-a", "1", "--alloc-alpha", "x"], "--alloc-alpha 'x' is not a number"),
    ("plan-alloc-a-negative", ["plan", "--alloc-a", "-1", "--alloc-alpha", "0.5"], "--alloc-a must be a positive"),
    ("plan-alloc-a-inf", ["plan", "--alloc-a", "inf", "--alloc-alpha", "0.5"], "--alloc-a must be a positive"),
    ("plan-budget-zero", ["plan", "--budget", "0"], "budget must be a positive"),
    ("eval-device-unknown", ["eval", "{tmp}", "--device", "gpu"], "unknown device 'gpu'"),
    ("eval-device-bad-index", ["eval", "{tmp}", "--device", "cuda:x"], "unknown device 'cuda:x'"),
    ("eval-device-tpu", ["eval", "{tmp}", "--device", "meta"], "device 'meta' is not supported"),
    ("downstream-pool-cell", ["downstream", "{tmp}/runs.csv", "--soft", "loss", "--pool", "{tmp}/badpool.csv",
                              "--target-flops", "1e21"], "column 'soft' must hold finite numbers",
     "(model 'b') has 'x'"),
    ("downstream-pool-binary", ["downstream", "{tmp}/runs.csv", "--soft", "loss", "--pool", "{tmp}/binpool.csv",
                                "--target-flops", "1e21"], "not a readable CSV"),
    ("train-steps-zero", ["train", "--budget", "2e11", "--hidden", "32", "--recipe", "cpu", "--out", "{tmp}/t",
                          "--steps", "0"], "--steps must be an integer ≥ 1, got 0"),
    ("train-seed-negative", ["train", "--budget", "2e11", "--hidden", "32", "--recipe", "cpu", "--out", "{tmp}/t",
                             "--seed", "-1"], "--seed must be an integer ≥ 0, got -1"),
    ("train-eval-every-negative", ["train", "{tmp}/run.json", "--out", "{tmp}/t", "--eval-every", "-2"],
     "--eval-every must be an integer ≥ 0"),
    ("train-steps-text", ["train", "{tmp}/run.json", "--out", "{tmp}/t", "--steps", "x"], "invalid int value"),
    ("suite-show-missing", ["suite", "show", "{tmp}/missing.toml"], "does not exist"),
    ("suite-show-unknown-preset", ["suite", "show", "nosuch"], "unknown suite preset 'nosuch'"),
    ("run-unknown-metric", ["run", "{tmp}/metric.toml", "--out", "{tmp}/out"], "[fit] metric must be"),
    ("run-workers-string", ["run", "{tmp}/workers.toml", "--out", "{tmp}/out"], "[executor] workers must be"),
    ("run-out-is-a-file", ["run", "{tmp}/good.toml", "--out", "{tmp}/pool.csv"], "is not a directory"),
    ("tune-recipe-missing", ["tune", "search", "--hidden", "32", "--recipe", "{tmp}/none.toml", "--out", "{tmp}/x"],
     "not found"),
]


def _fill(value, tmp: Path):
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [_fill(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, tmp) for k, v in value.items()}
    return value


def _document(base, payload, tmp: Path):
    """A mutation of `base`, a replacement document, or raw text/bytes."""
    if isinstance(payload, (str, bytes)):
        return payload
    if isinstance(payload, dict):
        return _fill(payload, tmp)
    doc = copy.deepcopy(base)
    payload(doc)
    return _fill(doc, tmp)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Pool and runs tables, a bad mixture, and guards so that no case can start real work."""
    rows = "\n".join(f"m{i},{1.0 + 0.1 * i},{0.3 + 0.05 * i}" for i in range(8))
    (tmp_path / "pool.csv").write_text("model,soft,hard\n" + rows + "\n")
    (tmp_path / "badpool.csv").write_text("model,soft,hard\na,1.0,0.5\nb,x,0.6\nc,1.2,0.7\nd,1.3,0.8\ne,1,1\n")
    (tmp_path / "binpool.csv").write_bytes(b"\xff\xfe\x00\x01garbage")
    (tmp_path / "nocol.csv").write_text("model,soft\na,1\nb,2\n")
    (tmp_path / "runs.csv").write_text("name,budget,flops,params,tokens,loss\na,1e11,1e11,1000,100000,3.0\n"
                                       "b,1e11,1e11,2000,50000,2.9\nc,1e11,1e11,4000,25000,3.1\n")
    (tmp_path / "badmix.toml").write_text('[domains.a]\nweight = -1\ntrain = ["x"]\nvalidation = ["y"]\n')
    (tmp_path / "run.json").write_text(json.dumps(RUN))
    (tmp_path / "good.toml").write_text(toml_dump(SUITE))
    (tmp_path / "metric.toml").write_text(toml_dump({**SUITE, "fit": {"metric": "acc"}}))
    (tmp_path / "workers.toml").write_text(toml_dump({**SUITE, "executor": {"workers": "two"}}))

    def refuse(*a, **k):
        raise AssertionError("a bad input reached the work it should have prevented")

    import importlib

    for module, name in (("delphi.train", "train_run"), ("delphi.sweep.pipeline", "run_suite"),
                         ("delphi.tune.search", "search")):
        monkeypatch.setattr(importlib.import_module(module), name, refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(argv, capsys):
    try:
        code = cli_main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    return code, capsys.readouterr().err


def _expect(code, err, fragments, expected_code=2):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def _write(path: Path, doc) -> Path:
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc)
    elif path.suffix == ".json":
        path.write_text(json.dumps(doc))
    else:
        path.write_text(toml_dump(doc))
    return path


@pytest.mark.parametrize("name,payload,fragments", [(c[0], c[1], c[2:]) for c in SUITE_CASES],
                         ids=[c[0] for c in SUITE_CASES])
def test_bad_suite_is_one_line_from_suite_show(workdir, capsys, name, payload, fragments):
    path = _write(workdir / "suite.toml", _document(SUITE, payload, workdir))
    code, err = _cli(["suite", "show", str(path)], capsys)
    _expect(code, err, [f"delphi suite: error: {path}: ", *fragments])


@pytest.mark.parametrize("name,text,fragment", RAW_SUITES, ids=[c[0] for c in RAW_SUITES])
def test_unreadable_suite_files(workdir, capsys, name, text, fragment):
    path = _write(workdir / "suite.toml", text)
    code, err = _cli(["suite", "show", str(path)], capsys)
    _expect(code, err, [fragment])


@pytest.mark.parametrize("name,payload,fragments", [(c[0], c[1], c[2:]) for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_bad_run_spec_is_one_line_from_train(workdir, capsys, name, payload, fragments):
    doc = _document(RUN, payload, workdir)
    path = workdir / "spec.json"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    code, err = _cli(["train", str(path), "--out", str(workdir / "out")], capsys)
    _expect(code, err, [f"delphi train: error: {path}: ", *fragments])
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("name,payload,fragments", [(c[0], c[1], c[2:]) for c in MIXTURE_CASES],
                         ids=[c[0] for c in MIXTURE_CASES])
def test_bad_mixture_is_one_line_from_data_info(workdir, capsys, name, payload, fragments):
    mix = workdir / "mix"
    mix.mkdir()
    (mix / "train.jsonl").write_text('{"text": "a"}\n')
    (mix / "val.jsonl").write_text('{"text": "b"}\n')
    path = _write(mix / "mixture.toml", _document(MIXTURE, payload, workdir))
    code, err = _cli(["data", "info", "--mixture", str(path)], capsys)
    _expect(code, err, [f"{path.resolve()}", *fragments])


@pytest.mark.parametrize("name,payload,fragments", [(c[0], c[1], c[2:]) for c in RECIPE_CASES],
                         ids=[c[0] for c in RECIPE_CASES])
def test_bad_tuned_recipe_is_one_line_from_tune(workdir, capsys, name, payload, fragments):
    path = _write(workdir / "tuned.toml", _document(RECIPE, payload, workdir))
    code, err = _cli(["tune", "search", "--hidden", "32", "--recipe", str(path), "--out", str(workdir / "x")], capsys)
    _expect(code, err, [str(path), *fragments])
    assert not (workdir / "x").exists()


@pytest.mark.parametrize("name,argv,fragments", [(c[0], c[1], c[2:]) for c in ARGV_CASES],
                         ids=[c[0] for c in ARGV_CASES])
def test_bad_flags_are_one_line(workdir, capsys, name, argv, fragments):
    code, err = _cli(_fill(argv, workdir), capsys)
    _expect(code, err, fragments)
    assert not (workdir / "out").exists() and not (workdir / "t").exists()


def test_device_without_cuda_is_one_line(workdir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda", "cuda:1"):
        code, err = _cli(["eval", str(workdir), "--device", device], capsys)
        _expect(code, err, [f"device '{device}': this machine has no usable CUDA GPU; use --device cpu or auto"])


def test_the_table_has_at_least_100_bad_inputs():
    n = len(SUITE_CASES) + len(RAW_SUITES) + len(RUN_CASES) + len(MIXTURE_CASES) + len(RECIPE_CASES) + len(ARGV_CASES)
    assert n >= 100, n


def test_the_valid_documents_are_valid(workdir):
    """Each bad case breaks exactly what it names: the documents it starts from are valid."""
    spec = parse_suite(toml_dump(SUITE))
    assert spec.executor.workers == 1 and spec.fit.metric == "loss"
    down = copy.deepcopy(SUITE)
    down["eval"].update(_fill(DOWNSTREAM, workdir))
    assert parse_suite(toml_dump(down)).eval.soft == "arc_easy_5shot/bpb"
    assert RunSpec.from_dict(copy.deepcopy(RUN), check_files=True).optimizer.beta2 == 0.999
    assert mixture_from_dict(copy.deepcopy(MIXTURE), base_dir=_mixture_dir(workdir), name="m").weights == \
        {"web": 0.7, "code": 0.3}
    assert recipe_from_table(RECIPE["recipe"]).lr0 == 0.02


def _mixture_dir(tmp: Path) -> Path:
    d = tmp / "mixdir"
    d.mkdir(exist_ok=True)
    for f in ("train.jsonl", "val.jsonl"):
        (d / f).write_text('{"text": "a"}\n')
    return d


def test_round_trip_and_direct_construction_share_the_rules():
    from delphi.config import ModelShape, OptimizerHParams

    spec = RunSpec.from_dict(copy.deepcopy(RUN))
    assert RunSpec.from_json(spec.to_json()) == spec
    with pytest.raises(DelphiError, match=r"optimizer: beta2 must be a number in \[0, 1\), got 1.5"):
        OptimizerHParams(beta2=1.5)
    with pytest.raises(DelphiError, match="model shape: hidden_size must be an integer ≥ 1, got 0"):
        ModelShape(**{**RUN["shape"], "hidden_size": 0})
    # code may build what a spec file may not (a divergence test trains at lr 1e30) ...
    assert OptimizerHParams(lr=1e30).lr == 1e30
    # ... but a run spec read from JSON keeps to sane values
    with pytest.raises(DelphiError, match="optimizer.lr must be a positive number ≤ 10"):
        RunSpec.from_dict({**RUN, "optimizer": {**RUN["optimizer"], "lr": 1e30}})


def test_existing_suite_and_recipe_files_stay_valid():
    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "src/delphi/sweep/presets").glob("*.toml"), *(root / "benchmarks/suites").glob("*.toml")]:
        parse_suite(path.read_text(), where=str(path))
    from delphi.tune.common import load_recipe

    for path in (root / "benchmarks/tune").glob("*.toml"):
        load_recipe(str(path))
    assert get_recipe("cpu").lr_cap == 0.1


# ---- fuzzing: the readers parse or raise DelphiError, nothing else ------------------------------------

_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.integers(-3, 5000)
            | st.floats(allow_nan=True, allow_infinity=True) | st.floats(-10, 1e13) | st.text(max_size=12)
            | st.sampled_from(["auto", "cpu", "loss", "embedded", "embedded-bpe-1k", "local", "ray", "arc_easy:5",
                               "bpb/prose", "loss/code", "total", "integer", "adamw", "", "a/b"]))
toml_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
json_values = st.recursive(st.none() | _scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)

_SUITE_KEYS = {
    "suite": ["name", "out_dir"], "grid": ["budgets", "seed"], "heldout": ["budgets", "seeds", "spread_seeds",
                                                                            "batch_size"],
    "data": ["mixture", "tokenizer", "block_cross_document_attention", "cache_dir"],
    "eval": ["every", "windows_per_domain", "downstream", "limit", "pool", "soft", "floor"],
    "train": ["precision", "compile", "checkpoint_every", "checkpoint_every_minutes"],
    "fit": ["metric", "bootstrap", "seed", "compute"],
    "executor": ["kind", "workers", "threads_per_worker", "address", "cpus_per_run", "gpus_per_run"],
    "recipe": ["preset", "lr0", "adam_lr0", "beta2_0", "min_width", "max_width", "width_step", "head_dim",
               "target_steps", "min_batch", "max_batch", "seq_len", "vocab_size", "depth_offset", "horizon_exponent",
               "max_tokens_per_param", "min_tokens_per_param", "isoflop_budgets", "batch_rounding", "lr_cap",
               "ref_tokens", "ref_batch", "large_step_above", "max_params_floor"],
}


@st.composite
def suite_docs(draw):
    doc = copy.deepcopy(SUITE)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*_SUITE_KEYS, "bogus"]))
        key = draw(st.sampled_from(_SUITE_KEYS.get(section, ["x"])) | st.text(min_size=1, max_size=6))
        doc.setdefault(section, {})[key] = draw(toml_values)
    return doc


def _parses_or_refuses(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except DelphiError as e:
        assert str(e) and "\n" not in str(e).strip(), str(e)


@given(suite_docs())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_suite_toml(doc):
    _parses_or_refuses(parse_suite, toml_dump(doc), where="suite.toml")


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_fuzz_suite_toml_text(text):
    _parses_or_refuses(parse_suite, text)


_RUN_PATHS = ["name", "batch_size", "train_steps", "seed", "budget", "recipe", "eval_every",
              "eval_windows_per_domain", "checkpoint_every", "checkpoint_every_minutes", "precision", "compile", "tags",
              "shape", "optimizer", "data", "extra", *(f"shape.{k}" for k in RUN["shape"]), "shape.rope_theta",
              "shape.rope_high_freq_factor", "shape.tie_embeddings", *(f"optimizer.{k}" for k in RUN["optimizer"]),
              "optimizer.warmup_fraction", "optimizer.decay_fraction", "optimizer.weight_decay", "data.mixture",
              "data.tokenizer", "data.cache_dir"]


@st.composite
def run_docs(draw):
    doc = copy.deepcopy(RUN)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_RUN_PATHS))
        value = draw(json_values)
        *parents, last = path.split(".")
        target = doc
        for p in parents:
            target = target.get(p) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[last] = value
    return doc


@given(run_docs(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_fuzz_run_spec_json(doc, check_files):
    _parses_or_refuses(RunSpec.from_json, json.dumps(doc), where="run.json", check_files=check_files)


@given(json_values | st.binary(max_size=64).map(bytes) | st.text(max_size=64))
@settings(max_examples=150, deadline=None)
def test_fuzz_run_spec_any_json(value):
    text = value if isinstance(value, (str, bytes)) else json.dumps(value)
    _parses_or_refuses(RunSpec.from_json, text)


@pytest.fixture(scope="module")
def mixdir(tmp_path_factory):
    return _mixture_dir(tmp_path_factory.mktemp("mixture"))


_domain = st.fixed_dictionaries({}, optional={
    "weight": json_values | st.floats(0, 1e308), "train": json_values | st.just(["train.jsonl"]),
    "validation": json_values | st.just(["val.jsonl"]), "text_field": json_values, "other": json_values})


@given(st.dictionaries(st.text(max_size=8), _domain | json_values, max_size=3) | json_values,
       st.dictionaries(st.sampled_from(["name", "x"]), json_values, max_size=1))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_mixture(mixdir, domains, extra):
    doc = {"domains": domains, **extra}
    _parses_or_refuses(mixture_from_dict, doc, base_dir=mixdir, name="m")
    # and as a file, through the TOML reader
    from delphi.data.mixture import resolve_mixture

    path = mixdir / "mixture.toml"
    try:
        path.write_text(toml_dump({k: v for k, v in doc.items() if v is not None}) if _tomlable(doc) else "[x")
    except UnicodeEncodeError:
        return
    _parses_or_refuses(resolve_mixture, str(path))


def _tomlable(v) -> bool:
    if v is None:
        return False
    if isinstance(v, dict):
        return all(_tomlable(x) for x in v.values())
    if isinstance(v, list):
        return all(_tomlable(x) for x in v)
    return True


_RECIPE_KEYS = sorted(f.name for f in __import__("dataclasses").fields(get_recipe("delphi-v1")))


@given(st.dictionaries(st.sampled_from([*_RECIPE_KEYS, "preset", "warp"]),
                       toml_values | st.sampled_from(["cpu", "delphi", "delphi-v1"]), max_size=5),
       st.sampled_from(["cpu", "delphi", "delphi-v1"]))
@settings(max_examples=200, deadline=None)
def test_fuzz_recipe_table(table, preset):
    table = {"preset": preset, **table}
    try:
        recipe = recipe_from_table(table)
    except DelphiError:
        return
    _parses_or_refuses(recipe.candidates, 1e11)  # a recipe that reads also plans without crashing


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_tuned_recipe_file(tmp_path, text):
    from delphi.tune.common import load_recipe

    path = tmp_path / "tuned.toml"
    path.write_text("[recipe]\n" + text, encoding="utf-8")
    _parses_or_refuses(load_recipe, str(path))


@given(st.lists(st.lists(st.text(max_size=6) | st.floats(allow_nan=True).map(str), min_size=1, max_size=4),
                max_size=8))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_pool_csv(tmp_path, rows):
    from delphi.downstream.forecast import load_pool

    path = tmp_path / "pool.csv"
    path.write_text("\n".join(["model,soft,hard", *(",".join(map(str, r)) for r in rows)]) + "\n")
    _parses_or_refuses(load_pool, str(path))
