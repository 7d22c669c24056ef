"""The trainer end to end on a tiny model and the embedded data: run directory, summary schema,
evaluation arithmetic, HF export, re-runs, corrupt checkpoints, divergence, the CLI."""

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from delphi.config import DataSpec, ModelShape, OptimizerHParams, RunSpec
from delphi.errors import DelphiError
from delphi.train import checkpoint as ckpt
from delphi.train import train_run
from delphi.train.hardware import resolve_precision
from delphi.train.state import DivergenceGuard
from delphi.train.step import resolve_compile

SUMMARY_KEYS = {"name", "status", "reason", "budget", "seed", "recipe", "hidden_size", "num_layers", "batch_size",
                "train_steps", "learning_rate", "params", "tokens", "flops", "loss", "bpb", "eval",
                "final_train_loss", "wall_time_s", "tokens_per_s", "mfu", "epochs", "code_version", "tags"}


def tiny_spec(**overrides) -> RunSpec:
    """A model small enough that a few steps take well under a second on one core."""
    shape = ModelShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16,
                       intermediate_size=128, vocab_size=4096, seq_len=32)
    fields = dict(name="tiny", shape=shape, optimizer=OptimizerHParams(lr=0.02, adam_lr=0.01),
                  batch_size=4, train_steps=10, data=DataSpec(), eval_every=4, eval_windows_per_domain=3,
                  checkpoint_every=4, precision="fp32", compile="off", tags={"suite": "test"})
    fields.update(overrides)
    return RunSpec(**fields)


# Same intra-op thread count everywhere keeps float reductions (and so runs) reproducible.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    threads = torch.get_num_threads()
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setenv("DELPHI_THREADS", "1")  # module fixtures run before the autouse one
        summary = train_run(tiny_spec(), out, progress=False)
    torch.set_num_threads(threads)
    return out, summary


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_and_summary_schema(finished_run):
    out, s = finished_run
    spec = tiny_spec()
    for name in ("run.json", "metrics.jsonl", "summary.json", "hf/config.json", "hf/model.safetensors",
                 "hf/tokenizer.json"):
        assert (out / name).exists(), name
    assert RunSpec.from_json((out / "run.json").read_text()) == spec
    assert json.loads((out / "summary.json").read_text()) == s
    assert SUMMARY_KEYS <= set(s)
    assert s["status"] == "completed" and s["reason"] is None
    assert s["tokens"] == 10 * 4 * 32
    assert s["params"] == spec.shape.num_params
    assert s["flops"] == pytest.approx(3 * spec.shape.flops_per_token * s["tokens"])
    assert s["tags"] == {"suite": "test"} and s["seed"] == 0 and s["hidden_size"] == 32
    assert s["tokens_per_s"] > 0 and s["wall_time_s"] > 0 and 0 < s["mfu"] < 1
    assert set(s["epochs"]) and all(v > 0 for v in s["epochs"].values())


def test_eval_macro_micro_and_bpb_arithmetic(finished_run):
    out, s = finished_run
    ev = s["eval"]
    doms = ev["domains"]
    assert len(doms) >= 2
    assert s["loss"] == ev["macro_loss"] and s["bpb"] == ev["macro_bpb"]
    assert ev["macro_loss"] == pytest.approx(sum(d["loss"] for d in doms.values()) / len(doms))
    assert ev["macro_bpb"] == pytest.approx(sum(d["bpb"] for d in doms.values()) / len(doms))
    tok = sum(d["tokens"] for d in doms.values())
    assert ev["micro_loss"] == pytest.approx(sum(d["loss"] * d["tokens"] for d in doms.values()) / tok)
    for d in doms.values():
        assert d["tokens"] == 3 * 32  # windows × seq_len
        assert d["bpb"] == pytest.approx(d["loss"] * d["tokens"] / d["bytes"] / math.log(2))
    # The model learned something in 8 steps (Delphi's init starts near ln(4096) + 0.5 = 8.8).
    first = next(r for r in _metrics(out) if r["kind"] == "train")
    assert ev["macro_loss"] < first["loss"] - 0.2


def test_metrics_rows_and_periodic_eval(finished_run):
    out, _ = finished_run
    rows = _metrics(out)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 11))
    assert [r["step"] for r in evals] == [4, 8, 10]
    # WSD with N = 10: w = 1 (the first update at lr 0), d = 2 (the last update at peak/2).
    assert [r["lr_factor"] for r in train] == [0.0] + [1.0] * 8 + [0.5]
    assert train[0]["lr"] == 0.0 and train[1]["lr"] == 0.02
    assert set(train[0]["grad_norm"]) == {"adamh", "adam"}
    assert train[-1]["tokens"] == 10 * 4 * 32
    assert train[-1]["flops"] == pytest.approx(3 * tiny_spec().shape.flops_per_token * 10 * 4 * 32)


def test_hf_export_matches_final_checkpoint(finished_run):
    from delphi.model.hf import load_hf

    out, _ = finished_run
    model = load_hf(out / "hf")
    step, payload = ckpt.latest_valid(out / "checkpoints")
    assert step == 10
    for name, t in model.state_dict().items():
        assert torch.equal(t, payload["model"][name]), name


def test_rerun_returns_finished_summary_and_refuses_a_different_spec(finished_run):
    out, s = finished_run
    before = (out / "metrics.jsonl").read_text()
    assert train_run(tiny_spec(), out, progress=False) == s
    assert (out / "metrics.jsonl").read_text() == before  # nothing retrained
    with pytest.raises(DelphiError, match="different run"):
        train_run(tiny_spec(seed=1), out, progress=False)


def test_corrupt_newest_checkpoint_is_skipped_and_resume_reproduces_the_run(finished_run, tmp_path):
    out, s = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "summary.json").unlink()
    shutil.rmtree(copy / "hf")
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["step-00000008", "step-00000010"]
    newest = copy / "checkpoints" / "step-00000010" / "rank-0.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte: same size, wrong checksum
    newest.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="step-00000010.*checksum"):
        s2 = train_run(tiny_spec(), copy, progress=False)
    assert s2["status"] == "completed"
    assert s2["loss"] == s["loss"] and s2["final_train_loss"] == s["final_train_loss"]
    from safetensors.torch import load_file

    a, b = load_file(out / "hf" / "model.safetensors"), load_file(copy / "hf" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Metrics after the resumed-from step were rewritten, not duplicated.
    assert [r["step"] for r in _metrics(copy) if r["kind"] == "train"] == list(range(1, 11))


def test_checkpoint_verification_detects_truncation_and_missing_manifest(tmp_path):
    root = tmp_path / "ck"
    ckpt.write_rank_file(root, 3, 0, {"w": torch.arange(1000)})
    ckpt.commit(root, 3, 1)
    d = root / "step-00000003"
    assert ckpt.verify(d, 1) is None
    assert "processes" in ckpt.verify(d, 2)
    f = d / "rank-0.pt"
    f.write_bytes(f.read_bytes()[:-100])
    assert "truncated" in ckpt.verify(d, 1)
    # An interrupted save (no rename) is never a candidate and is cleaned up.
    ckpt.write_rank_file(root, 5, 0, {"w": 1})
    assert [s for s, _ in ckpt.candidates(root)] == [3]
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert ckpt.latest_valid(root) is None
    ckpt.clean_partial(root)
    assert not (root / "step-00000005.tmp").exists()


def test_divergence_stops_the_run_with_status_diverged(tmp_path):
    spec = tiny_spec(name="boom", optimizer=OptimizerHParams(name="adamw", lr=1e30, max_grad_norm=0.0,
                                                             warmup_fraction=0.0),
                     train_steps=40, eval_every=0, checkpoint_every=0)
    s = train_run(spec, tmp_path / "boom", progress=False)
    assert s["status"] == "diverged"
    assert s["reason"].startswith("non-finite train loss")  # the loss is nan by the second step
    assert s["steps_done"] < 40
    assert json.loads((tmp_path / "boom" / "summary.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "boom" / "hf").exists()


def test_divergence_guard_rules():
    g = DivergenceGuard("loss", ratio=1.5, patience=2)
    assert g.observe(4.0) is None and g.observe(3.0) is None
    assert g.observe(5.0) is None  # one bad check is a spike, not divergence
    assert g.observe(3.1) is None  # recovered: the count resets
    assert g.observe(5.0) is None
    assert "running minimum" in g.observe(6.0)
    assert "non-finite" in DivergenceGuard("loss").observe(float("nan"))


def test_precision_and_compile_resolution(monkeypatch):
    spec = tiny_spec()
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    monkeypatch.delenv("DELPHI_CPU_BF16", raising=False)
    from delphi.train.hardware import cpu_has_fast_bf16

    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    monkeypatch.setenv("DELPHI_CPU_BF16", "0")
    assert resolve_precision("auto", "cpu") is None
    from delphi.train.distributed import DistInfo

    assert resolve_compile("on", "cpu", spec, DistInfo()) is True
    assert resolve_compile("off", "cuda", spec, DistInfo()) is False
    assert resolve_compile("auto", "cpu", spec, DistInfo()) is False  # a seconds-long run: not worth compiling


@pytest.mark.parametrize("flags, native", [({"avx2", "fma"}, False), ({"avx2", "avx512f"}, False),
                                           ({"avx512f", "avx512_bf16"}, True), ({"avx512f", "amx_bf16"}, True)])
def test_hardware_decisions_follow_the_cpu_flags(monkeypatch, flags, native):
    """AMD/older Intel (AVX2, or AVX-512 without bf16) train "auto" in fp32 (emulated bf16 is
    slower); only native bf16 (AMX, AVX512-BF16) picks bf16. What was detected is reported."""
    from delphi.train import hardware

    monkeypatch.delenv("DELPHI_CPU_BF16", raising=False)
    monkeypatch.setattr(hardware, "_cpu_flags_and_model", lambda: (frozenset(flags), "Test CPU"))
    assert hardware.cpu_has_fast_bf16() is native
    assert hardware.resolve_precision("auto", "cpu") == (torch.bfloat16 if native else None)
    info = hardware.describe_hardware("cpu")
    assert info["cpu"] == "Test CPU" and info["bf16_native"] is native
    assert info["auto_precision"] == ("bf16" if native else "fp32")
    assert info["isa"] == torch.backends.cpu.get_cpu_capability()
    line = hardware.hardware_line(info)
    assert "Test CPU" in line and ("trains in bf16" if native else "trains in fp32") in line


_FAULTS_PER_STEP = r"""
import json, resource, sys
import torch
from delphi.config import ModelShape, OptimizerHParams
from delphi.model import Qwen3
from delphi.optim import build_optimizer
from delphi.train.hardware import keep_freed_memory
from delphi.train.step import make_forward_loss
torch.set_num_threads(1)
allocator = keep_freed_memory()
shape = ModelShape(hidden_size=16, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=16, intermediate_size=64,
                   vocab_size=1024, seq_len=128)
torch.manual_seed(0)
model = Qwen3(shape)
opt = build_optimizer(model, OptimizerHParams())
loss_fn = make_forward_loss(model, None, 1e-4)
tokens = torch.randint(0, 1024, (26, 129))
def step():
    obj, _ = loss_fn(tokens[:, :-1], tokens[:, 1:], None)
    obj.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(json.dumps({"faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 8, "allocator": allocator}))
"""


def _faults_per_step(env: dict) -> dict:
    """Minor page faults per step of a width-16 grid step in a fresh process with `env` added to
    an environment cleared of every allocator setting."""
    mine = ("DELPHI_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in mine}
    out = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP], env={**full, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="page-fault counts need Linux")
def test_trainer_processes_reuse_freed_memory_instead_of_faulting_it_back_in(monkeypatch):
    """glibc's default hands a step's freed few-MB buffers (logit chunks, activations) back to the
    kernel, so every step page-faults them in again; the trainer's allocator setting keeps them.
    Measured on a width-16 grid step in fresh processes: minor page faults per step."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc's")
    # A user's own malloc settings or preloaded allocator win (decided before any mallopt call).
    from delphi.train.hardware import keep_freed_memory

    decide = keep_freed_memory.__wrapped__
    with monkeypatch.context() as mp:
        mp.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
        assert decide() == "glibc, settings from the environment"
        mp.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
        assert decide() == "jemalloc (preloaded)"
    kept = _faults_per_step({})
    default = _faults_per_step({"DELPHI_MALLOC": "default"})
    assert kept["allocator"].startswith("glibc, freed memory kept")
    assert default["allocator"] == "glibc default (DELPHI_MALLOC=default)"
    if default["faults"] <= 200:  # e.g. transparent huge pages for everything: faults are rare anyway
        pytest.skip(f"glibc's default took only {default['faults']:.0f} page faults a step on this machine")
    assert kept["faults"] < 0.1 * default["faults"], (kept, default)


def test_cpu_peak_probe_runs_once_per_dtype_and_leaves_the_global_rng(monkeypatch):
    # A long-lived worker trains dozens of short runs: the ~0.2 s matmul probe behind MFU is
    # measured once per dtype and thread count, and it must not move the global RNG that seeds
    # the next run's weights.
    from delphi.train import hardware

    monkeypatch.delenv("DELPHI_PEAK_FLOPS", raising=False)
    hardware._cpu_matmul_peak.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    first = hardware.peak_flops_per_s("cpu", None)
    assert torch.equal(torch.rand(4), expected)
    assert first > 0 and hardware.peak_flops_per_s("cpu", None) == first  # a second probe would differ
    assert hardware._cpu_matmul_peak.cache_info().hits == 1
    monkeypatch.setenv("DELPHI_PEAK_FLOPS", "1e12")
    assert hardware.peak_flops_per_s("cpu", None) == 1e12


def test_summary_records_the_hardware(finished_run):
    _, s = finished_run
    hw = s["hardware"]
    assert hw["device"] == "cpu" and hw["isa"] == torch.backends.cpu.get_cpu_capability()
    assert hw["auto_precision"] in ("bf16", "fp32") and hw["peak_flops_per_s"] > 0
    assert s["mfu"] == pytest.approx(s["flops_per_s"] / hw["peak_flops_per_s"])
    # where the wall time went besides the training steps (this run evaluates every 4 of 10 steps)
    t = s["time_s"]
    assert set(t) == {"setup", "first_step", "eval", "checkpoint", "export"}
    assert all(t[k] > 0 for k in t)
    assert t["first_step"] <= s["train_time_s"] <= s["wall_time_s"]
    assert hw["allocator"]  # what served the run's memory (benchmarks/RESULTS.md, "Allocator")


def test_cli_trains_a_spec_file_and_reports_bad_input(tmp_path, capsys):
    from delphi.cli import main

    path = tmp_path / "spec.json"
    path.write_text(tiny_spec(name="cli", eval_every=0, checkpoint_every=0).to_json())
    rc = main(["train", str(path), "--out", str(tmp_path / "cli"), "--steps", "3", "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert s["status"] == "completed" and s["train_steps"] == 3 and s["tokens"] == 3 * 4 * 32
    assert "cli: completed" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--budget", "1e18", "--out", str(tmp_path / "x")]) == 2


def test_cli_convenience_form_trains_the_recipe_candidate(tmp_path, capsys):
    from delphi.cli import main
    from delphi.recipe import get_recipe

    cand = next(c for c in get_recipe("cpu").candidates(2e11) if c.shape.hidden_size == 64)
    out = tmp_path / "conv"
    rc = main(["train", "--budget", "2e11", "--hidden", "64", "--recipe", "cpu", "--steps", "2", "--eval-every", "0",
               "--precision", "fp32", "--out", str(out), "--quiet", "--json"])
    assert rc == 0
    spec = RunSpec.from_json((out / "run.json").read_text())
    assert spec.shape == cand.shape and spec.optimizer == cand.optimizer and spec.batch_size == cand.batch_size
    assert spec.budget == 2e11 and spec.recipe == cand.recipe and spec.train_steps == 2
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    assert main(["train", "--budget", "2e11", "--hidden", "72", "--recipe", "cpu", "--out", str(tmp_path / "y")]) == 2
    widths = ", ".join(str(c.shape.hidden_size) for c in get_recipe("cpu").candidates(2e11))
    assert f"widths there: {widths}" in capsys.readouterr().err
    assert spec.data.tokenizer == "embedded-bpe-1k"  # the built-in tokenizer matching the recipe's vocab


def test_a_failing_run_records_status_failed_and_raises(tmp_path):
    shape = ModelShape(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16,
                       intermediate_size=64, vocab_size=100, seq_len=32)  # smaller than the tokenizer
    with pytest.raises(DelphiError, match="vocab_size"):
        train_run(tiny_spec(name="bad", shape=shape), tmp_path / "bad", progress=False)
    s = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert s["status"] == "failed" and "vocab_size" in s["reason"] and s["tokens"] == 0


# ---- the parts the trainer is built from ---------------------------------------------------------

def test_every_optimizer_a_spec_may_name_is_registered_and_unknown_parts_are_user_errors():
    from delphi.config import OPTIMIZERS
    from delphi.train import components

    assert set(components.OPTIMIZERS) == set(OPTIMIZERS)
    assert components.DEFAULT_MODEL in components.MODELS
    with pytest.raises(DelphiError, match="unknown model 'nope'; registered models: qwen3"):
        components.model_def("nope")


@pytest.mark.parametrize("name", ["adamh", "adamw", "adamc"])
def test_each_registered_optimizer_splits_matrices_from_the_rest_and_steps(name):
    from delphi.train import components
    from delphi.train.distributed import DistInfo
    from delphi.train.step import make_forward_loss

    spec = tiny_spec(optimizer=OptimizerHParams(name=name, lr=0.02, adam_lr=0.01, weight_decay=0.1))
    model = components.build_model(spec, DistInfo())
    opt = components.build_optimizer(model, spec.optimizer)
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    first, second = opt.param_groups
    assert {id(p) for p in first["params"]} == matrices
    assert not matrices & {id(p) for p in second["params"]}
    assert len(first["params"]) + len(second["params"]) == len(list(model.parameters()))
    if name == "adamh":
        assert (first["lr"], second["lr"]) == (0.02, 0.01)
    else:
        assert (first["weight_decay"], second["weight_decay"]) == (0.1, 0.0)
    before = [p.detach().clone() for p in model.parameters()]
    tokens = torch.randint(0, spec.shape.vocab_size, (2, spec.shape.seq_len + 1))
    obj, _ = make_forward_loss(model, None, 0.0)(tokens[:, :-1], tokens[:, 1:], None)
    obj.backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
