"""One training run: `train_run(spec, out_dir)` — RunSpec in, run directory out.

The loop composes independent pieces (torchtitan style): the model (`delphi.model.Qwen3`),
its data-parallel wrapping (`delphi.train.distributed`), the optimizer and WSD schedule
(`delphi.optim`), the loss (`delphi.train.loss`), checkpoints (`delphi.train.checkpoint`) and the
data loader (`delphi.data`). One-process CPU runs and torchrun runs share every line but the
wrapping.

Run directory::

    run.json        the RunSpec (a re-run with a different spec in the same dir is refused)
    metrics.jsonl   {"kind": "train", step, lr, loss, grad_norm, tokens, tokens_per_s, elapsed_s, flops}
                    and {"kind": "eval", step, macro_loss, macro_bpb, micro_loss, micro_bpb, domains}
    checkpoints/    step-XXXXXXXX/ (atomic; newest two kept)
    hf/             the final model as a transformers Qwen3 checkpoint (+ tokenizer)
    summary.json    the row of the runs table (see docs/train.md)
    .lock           held (fcntl.flock) by the process training the directory

A directory is trained by one process at a time; a non-empty directory without a run.json of
ours is refused, and only files the run wrote are ever removed (`delphi.train.rundir`).

Determinism: everything that influences the trajectory (weights, optimizer moments, RNG states,
loader position) is checkpointed, so on CPU a run killed at any point and resumed ends bitwise
identical to an uninterrupted one (tests/test_train_resume.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.optim import WSD, build_optimizer, set_lr
from delphi.train import checkpoint as ckpt
from delphi.train import distributed as D
from delphi.train import rundir
from delphi.train.hardware import describe_hardware, peak_flops_per_s, resolve_precision
from delphi.train.loss import LOG2_E, lm_loss, token_nll

SUMMARY = rundir.SUMMARY
RUN_JSON = rundir.RUN_JSON
METRICS = rundir.METRICS


# ---- environment decisions -------------------------------------------------------------------

def resolve_compile(mode: str, device: str, spec: RunSpec, info: D.DistInfo) -> bool:
    """torch.compile where it pays: always on CUDA; on CPU only for runs long enough to amortise
    the one-off compile (~20–60 s on 2 cores; it buys ~1.1–1.3× per step, see benchmarks)."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if info.distributed and info.parallel == "fsdp" and not device.startswith("cuda"):
        return False
    if device.startswith("cuda"):
        return True
    # CPU: the compile pays back after a few minutes of training.
    est_flops_per_s = 2e10 * max(1, torch.get_num_threads())
    return spec.flops / est_flops_per_s > 600


def code_version() -> str:
    from delphi import __version__

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


# ---- divergence ------------------------------------------------------------------------------

@dataclass
class DivergenceGuard:
    """Stops a run whose loss is non-finite, or stays far above its running minimum
    (`> ratio · min` for `patience` consecutive observations)."""

    what: str
    ratio: float = 1.5
    patience: int = 3
    best: float = math.inf
    bad: int = 0

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"non-finite {self.what} ({value})"
        if value > self.ratio * self.best:
            self.bad += 1
            if self.bad >= self.patience:
                return (f"{self.what} {value:.4g} stayed above {self.ratio}x its running minimum "
                        f"{self.best:.4g} for {self.bad} consecutive checks")
        else:
            self.bad = 0
        self.best = min(self.best, value)
        return None


# ---- run-directory helpers -------------------------------------------------------------------

def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json_atomic(path: Path, obj) -> None:
    _write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite_or_none(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (they will be re-logged)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict) and isinstance(row.get("step", 0), int) and row.get("step", 0) <= last_step:
            keep.append(line)
    _write_text_atomic(path, "".join(line + "\n" for line in keep))


# ---- the step's forward ------------------------------------------------------------------------

def make_forward_loss(model, amp_dtype: torch.dtype | None, z_loss_weight: float, *, compile: bool = False,
                      fused: bool = True):
    """`fn(inputs, targets, document_ids) -> (objective, cross entropy)`: forward under autocast
    (when `amp_dtype`), float32 loss with z-loss.

    `fused` (default): the model computes the head and the loss together a chunk of tokens at a
    time (`delphi.train.loss.fused_linear_lm_loss`), never materialising the [B, T, V] logits;
    otherwise logits, then `lm_loss` (the reference path, kept for comparison). With `compile`,
    forward and loss are compiled as one graph."""
    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"

    def forward_loss(inputs, targets, doc):
        with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if fused:
                return model(inputs, doc, targets=targets, z_loss_weight=z_loss_weight)
            logits = model(inputs, doc)
        return lm_loss(logits, targets, z_loss_weight)

    return torch.compile(forward_loss) if compile else forward_loss


# ---- data --------------------------------------------------------------------------------------

def open_data(spec: RunSpec, info: D.DistInfo, progress: bool):
    """(prepared, loader, validation sets). Rank 0 prepares (tokenises) first, others reuse its cache."""
    from delphi.data import PackedLoader, prepare_data, validation_sets

    if info.is_main:
        prepared = prepare_data(spec.data, progress=progress)
    D.barrier(info)
    if not info.is_main:
        prepared = prepare_data(spec.data, progress=False)
    vocab = prepared.tokenizer.vocab_size
    if vocab > spec.shape.vocab_size:
        raise DelphiError(f"run {spec.name}: tokenizer {prepared.tokenizer.name!r} has {vocab} tokens but the model's "
                          f"vocab_size is {spec.shape.vocab_size}; set shape.vocab_size >= {vocab}")
    loader = PackedLoader(prepared, spec.shape.seq_len, spec.batch_size, spec.seed)
    val = validation_sets(prepared, spec.shape.seq_len, spec.eval_windows_per_domain)
    return prepared, loader, val


# ---- evaluation ------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, val_sets: dict, *, batch_size: int, device: str, autocast, use_doc_ids: bool,
             info: D.DistInfo) -> dict:
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
        sums = D.all_reduce_sum(sums.to(device), info).cpu()
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


# ---- progress --------------------------------------------------------------------------------

class _Progress:
    """A rich progress bar (step, loss, tokens/s, ETA), or in quiet mode one plain line about
    every 5% of the run on stderr (for logs)."""

    def __init__(self, enabled: bool, name: str, total: int, start: int):
        self.enabled, self.total, self.name = enabled, total, name
        self._bar = None
        self._next_line = start
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(name, total=total, completed=start, loss="-", tps="-")

    def update(self, step: int, loss: float, tps: float, eta_s: float | None):
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
        elif step >= self._next_line or step == self.total:
            eta = f"{eta_s:.0f}s" if eta_s is not None else "?"
            print(f"[{self.name}] step {step}/{self.total} loss {loss:.4f} {tps:,.0f} tok/s ETA {eta}",
                  file=sys.stderr, flush=True)
            self._next_line = step + max(1, self.total // 20)

    def message(self, text: str):
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.stop()


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class _State:
    step: int = 0
    tokens: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    window_losses: list = field(default_factory=list)
    last_eval: dict | None = None
    train_guard: DivergenceGuard = field(default_factory=lambda: DivergenceGuard("train loss"))
    eval_guard: DivergenceGuard = field(default_factory=lambda: DivergenceGuard("eval macro loss"))

    def to_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "train_time_s": self.train_time_s,
                "wall_time_s": self.wall_time_s, "window_losses": list(self.window_losses),
                "last_eval": self.last_eval, "train_guard": vars(self.train_guard).copy(),
                "eval_guard": vars(self.eval_guard).copy()}

    @classmethod
    def from_dict(cls, d: dict) -> "_State":
        return cls(step=d["step"], tokens=d["tokens"], train_time_s=d["train_time_s"], wall_time_s=d["wall_time_s"],
                   window_losses=list(d["window_losses"]), last_eval=d["last_eval"],
                   train_guard=DivergenceGuard(**d["train_guard"]), eval_guard=DivergenceGuard(**d["eval_guard"]))


def _rng_state() -> dict:
    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _micro_batch_size(local_rows: int) -> int:
    """Rows per forward/backward: `DELPHI_MICRO_BATCH` (gradient accumulation), else all rows."""
    env = os.environ.get("DELPHI_MICRO_BATCH")
    if not env:
        return local_rows
    mb = int(env)
    if mb <= 0 or local_rows % mb:
        raise DelphiError(f"DELPHI_MICRO_BATCH={mb} must divide the per-process batch {local_rows}")
    return mb


def train_run(spec: RunSpec, out_dir, *, progress: bool = True, resume: bool = True) -> dict:
    """Train `spec` into `out_dir`; return the summary dict (also written to summary.json).

    With `resume` (default) a finished run is returned as is and an interrupted one continues
    from its newest intact checkpoint (an unreadable summary.json counts as absent);
    `resume=False` discards earlier checkpoints and metrics. The directory is locked for the whole
    run: a second trainer on it fails at once. A non-empty directory that is not a run directory
    is refused.
    Divergence ends the run with status "diverged" (no exception); an unexpected error writes
    status "failed" with the reason and re-raises.
    """
    if not isinstance(spec, RunSpec):
        raise DelphiError(f"train_run needs a RunSpec, got {type(spec).__name__}")
    out = Path(out_dir)
    info = D.init_distributed()
    if spec.batch_size % info.world_size:
        raise DelphiError(f"run {spec.name}: batch_size {spec.batch_size} is not divisible by the "
                          f"{info.world_size} processes; choose a batch size that is a multiple of it")
    # Rank 0 checks the directory and takes its lock; every rank learns the outcome.
    lock, error = None, None
    if info.is_main:
        try:
            rundir.check_out_dir(out)
            rundir.make_run_dir(out)
            lock = rundir.RunDirLock(out)
        except DelphiError as e:
            error = str(e)
    error = D.broadcast_object(error, info)
    if error is not None:
        raise DelphiError(error)
    try:
        return _train_locked(spec, out, info, progress=progress, resume=resume)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(spec: RunSpec, out: Path, info: D.DistInfo, *, progress: bool, resume: bool) -> dict:
    if info.is_main:
        rundir.clean_temporaries(out)
    D.barrier(info)
    run_json = out / RUN_JSON
    if run_json.exists() and resume:
        try:
            old = json.loads(run_json.read_text())
        except ValueError:
            old = None
        if old != json.loads(spec.to_json()):
            raise DelphiError(f"{out} already holds a different run ({RUN_JSON} differs); use another --out "
                              f"directory or pass --no-resume to start over there")
        summary = rundir.read_summary(out, warn=info.is_main)
        if summary is not None and summary.get("status") in ("completed", "diverged"):
            return summary
    if info.is_main:
        if not resume:
            rundir.discard_outputs(out)
        _write_text_atomic(run_json, spec.to_json() + "\n")
    D.barrier(info)
    trainer = _Trainer(spec, out, info, progress and info.is_main)
    try:
        return trainer.run()
    except BaseException as e:
        if not isinstance(e, (KeyboardInterrupt, SystemExit)) and info.is_main:
            with contextlib.suppress(Exception):
                trainer.write_summary("failed", f"{type(e).__name__}: {e}")
        raise


class _Trainer:
    def __init__(self, spec: RunSpec, out: Path, info: D.DistInfo, progress: bool):
        self.spec, self.out, self.info, self.show = spec, out, info, progress
        self.ckpt_root = out / "checkpoints"
        self.state = _State()
        self.device = info.device
        self.model = None
        self.loader = None
        self.t_start = time.perf_counter()
        self.wall_offset = 0.0
        self.threads = D.configure_threads(info)
        self.amp_dtype = resolve_precision(spec.precision, self.device)
        if self.device.startswith("cuda"):
            # fp32 matmuls on tensor cores (TF32) where bf16 autocast does not already cover them.
            torch.set_float32_matmul_precision("high")
        self.flops_per_token = spec.shape.flops_per_token
        self.peak = None
        # Where this process's wall time went besides training steps (summary.json "time_s"):
        # setup (data, model, optimizer, checkpoint restore), the first step (compilation when
        # compiled), evaluation, checkpoints, the HF export.
        self.timings = {"setup": 0.0, "first_step": 0.0, "eval": 0.0, "checkpoint": 0.0, "export": 0.0}

    # -- pieces ---------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=self.amp_dtype)

    def build(self):
        from delphi.model import Qwen3

        spec, info = self.spec, self.info
        self.prepared, self.loader, self.val_sets = open_data(spec, info, self.show)
        torch.manual_seed(spec.seed)
        model = Qwen3(spec.shape).to(self.device)
        self.raw_model = model
        self.model = D.wrap_model(model, info)
        all_reduce = None
        if info.distributed and info.parallel == "fsdp":
            all_reduce = lambda t: D.all_reduce_sum(t.to(self.device), info).cpu()  # noqa: E731
        self.optimizer = build_optimizer(D.unwrap(self.model), spec.optimizer, all_reduce=all_reduce)
        self.schedule = WSD.from_hparams(spec.optimizer, spec.train_steps)
        self.compiled = resolve_compile(spec.compile, self.device, spec, info)
        self.loss_fn = make_forward_loss(self.model, self.amp_dtype, spec.optimizer.z_loss_weight,
                                         compile=self.compiled)

    def save(self):
        t0 = time.perf_counter()
        info, st = self.info, self.state
        payload = {"step": st.step, "model": D.local_state_dict(self.model),
                   "optimizer": self.optimizer.state_dict(), "rng": _rng_state(),
                   "loader": self.loader.state_dict(), "trainer": st.to_dict(), "spec": self.spec.to_dict()}
        if info.is_main:
            ckpt.clean_partial(self.ckpt_root)
        D.barrier(info)
        ckpt.write_rank_file(self.ckpt_root, st.step, info.rank, payload)
        D.barrier(info)
        if info.is_main:
            ckpt.commit(self.ckpt_root, st.step, info.world_size)
        D.barrier(info)
        self.last_save = time.perf_counter()
        self.timings["checkpoint"] += self.last_save - t0

    def restore(self) -> bool:
        found = ckpt.latest_valid(self.ckpt_root, self.info.rank, self.info.world_size)
        if found is None:
            return False
        step, payload = found
        D.load_local_state_dict(self.model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.loader.load_state_dict(payload["loader"])
        _set_rng_state(payload["rng"])
        self.state = _State.from_dict(payload["trainer"])
        self.wall_offset = self.state.wall_time_s
        return True

    def log(self, row: dict):
        if self.info.is_main:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")

    def run_eval(self) -> dict:
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        local_rows = self.spec.batch_size // self.info.world_size
        result = evaluate(self.model, self.val_sets, batch_size=_micro_batch_size(local_rows), device=self.device,
                          autocast=self.autocast, use_doc_ids=self.spec.data.block_cross_document_attention,
                          info=self.info)
        self.model.train(was_training)
        self.timings["eval"] += time.perf_counter() - t0
        self.state.last_eval = result
        self.log({"kind": "eval", "step": self.state.step, **_clean_eval(result)})
        return result

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        spec, info, st = self.spec, self.info, self.state
        t_setup = time.perf_counter()
        self.build()
        resumed = self.restore()
        self.timings["setup"] = time.perf_counter() - t_setup
        st = self.state
        if info.is_main:
            _truncate_metrics(self.out / METRICS, st.step if resumed else 0)
        self.peak = peak_flops_per_s(self.device, self.amp_dtype)
        N = spec.train_steps
        local_rows = spec.batch_size // info.world_size
        r0 = info.rank * local_rows
        micro = _micro_batch_size(local_rows)
        tokens_per_step = spec.batch_size * spec.shape.seq_len
        log_every = max(1, min(50, N // 500))
        window = max(5, N // 50)  # train-loss divergence checks average this many steps
        use_doc = spec.data.block_cross_document_attention
        self.last_save = time.perf_counter()
        resumed_step = st.step
        bar = _Progress(self.show, spec.name, N, st.step)
        if resumed:
            bar.message(f"resumed from step {st.step}")
        reason = None
        win_t0, win_tokens, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
        self.model.train()
        try:
            while st.step < N:
                t0 = time.perf_counter()
                batch = self.loader.next_batch()
                tokens = batch.tokens[r0:r0 + local_rows].to(self.device, non_blocking=True)
                docs = batch.document_ids[r0:r0 + local_rows].to(self.device, non_blocking=True) if use_doc else None
                ce_sum = torch.zeros((), device=self.device)
                for m0 in range(0, local_rows, micro):
                    tk = tokens[m0:m0 + micro]
                    dc = docs[m0:m0 + micro, :-1] if docs is not None else None
                    obj, ce = self.loss_fn(tk[:, :-1], tk[:, 1:], dc)
                    (obj * (tk.shape[0] / local_rows)).backward()
                    ce_sum += ce.detach() * (tk.shape[0] / local_rows)
                lr_factor = set_lr(self.optimizer, self.schedule, st.step)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                loss = float(D.all_reduce_sum(ce_sum, info)) / info.world_size
                st.step += 1
                st.tokens += tokens_per_step
                dt = time.perf_counter() - t0
                st.train_time_s += dt
                if not self.timings["first_step"]:
                    self.timings["first_step"] = dt
                win_tokens += tokens_per_step
                loss_acc += loss
                loss_n += 1
                st.window_losses.append(loss)
                if not math.isfinite(loss):
                    reason = f"non-finite train loss ({loss}) at step {st.step}"
                    break
                if len(st.window_losses) >= window:
                    reason = st.train_guard.observe(sum(st.window_losses) / len(st.window_losses))
                    st.window_losses = []
                    if reason:
                        reason += f" (step {st.step})"
                        break
                if st.step % log_every == 0 or st.step == N:
                    el = time.perf_counter() - win_t0
                    tps = win_tokens / el if el > 0 else 0.0
                    self.log({"kind": "train", "step": st.step, "lr": spec.optimizer.lr * lr_factor,
                              "lr_factor": lr_factor, "loss": loss_acc / loss_n,
                              "grad_norm": dict(self.optimizer.last_grad_norms), "tokens": st.tokens,
                              "tokens_per_s": tps, "elapsed_s": self.wall_offset + time.perf_counter() - self.t_start,
                              "flops": 3.0 * self.flops_per_token * st.tokens})
                    eta = (N - st.step) * (st.train_time_s / max(st.step, 1)) if st.step else None
                    bar.update(st.step, loss_acc / loss_n, tps, eta)
                    win_t0, win_tokens, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
                if spec.eval_every and st.step % spec.eval_every == 0 and st.step < N:
                    ev = self.run_eval()
                    reason = st.eval_guard.observe(ev["macro_loss"] if ev["macro_loss"] is not None else math.nan)
                    if reason:
                        reason += f" (step {st.step})"
                        break
                if st.step < N and self._checkpoint_due(st.step, log_every):
                    self._sync_wall()
                    self.save()
        finally:
            bar.close()
        self._sync_wall()
        if reason is not None:
            bar.message(f"diverged: {reason}")
            return self.write_summary("diverged", reason)
        if resumed and resumed_step == N and st.last_eval is not None:
            # Resumed from the final checkpoint (killed before the summary, or the summary was
            # unreadable): the final evaluation is in the checkpoint and already in metrics.jsonl.
            ev = st.last_eval
        else:
            ev = self.run_eval()
        if ev["macro_loss"] is None or not math.isfinite(ev["macro_loss"]):
            return self.write_summary("diverged", f"non-finite final eval loss ({ev['macro_loss']})")
        self._sync_wall()
        self.save()
        t_export = time.perf_counter()
        self.export()
        self.timings["export"] = time.perf_counter() - t_export
        return self.write_summary("completed", None)

    def _checkpoint_due(self, step: int, log_every: int) -> bool:
        spec = self.spec
        if spec.checkpoint_every and step % spec.checkpoint_every == 0:
            return True
        if spec.checkpoint_every_minutes and step % log_every == 0:
            due = (time.perf_counter() - self.last_save) / 60.0 >= spec.checkpoint_every_minutes
            return bool(D.broadcast_object(due, self.info))
        return False

    def _sync_wall(self):
        self.state.wall_time_s = self.wall_offset + (time.perf_counter() - self.t_start)

    def export(self):
        from delphi.model import Qwen3
        from delphi.model.hf import export_hf

        if self.info.distributed:
            full = D.full_state_dict(self.model)  # collective: every rank
            if not self.info.is_main:
                return
            with torch.device("meta"):
                model = Qwen3(self.spec.shape)
            model = model.to_empty(device="cpu")
            model.init_rope()
            model.load_state_dict(full)
        else:
            model = D.unwrap(self.model)
        export_hf(model, self.prepared.tokenizer, self.out / "hf")

    def write_summary(self, status: str, reason: str | None) -> dict:
        spec, st = self.spec, self.state
        self._sync_wall()
        ev = st.last_eval or {}
        tps = st.tokens / st.train_time_s if st.train_time_s > 0 else None
        achieved = 3.0 * self.flops_per_token * tps if tps else None
        mfu = achieved / (self.peak * self.info.world_size) if achieved and self.peak else None
        last = []
        with contextlib.suppress(OSError):
            for line in (self.out / METRICS).read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    last.append(json.loads(line))
        train_rows = [r for r in last if isinstance(r, dict) and r.get("kind") == "train"]
        final_train = train_rows[-1]["loss"] if train_rows else None
        epochs = {}
        with contextlib.suppress(Exception):
            epochs = {k: float(v) for k, v in self.loader.epochs().items()}
        summary = {
            "name": spec.name, "status": status, "reason": reason, "budget": spec.budget, "seed": spec.seed,
            "recipe": spec.recipe, "hidden_size": spec.shape.hidden_size, "num_layers": spec.shape.num_layers,
            "batch_size": spec.batch_size, "train_steps": spec.train_steps, "steps_done": st.step,
            "learning_rate": spec.optimizer.lr, "optimizer": spec.optimizer.name,
            "params": spec.shape.num_params, "tokens": st.tokens,
            "flops": 3.0 * self.flops_per_token * st.tokens,
            "loss": _finite_or_none(ev.get("macro_loss")), "bpb": _finite_or_none(ev.get("macro_bpb")),
            "eval": _clean_eval(ev) if ev else None,
            "final_train_loss": _finite_or_none(final_train),
            "wall_time_s": st.wall_time_s, "train_time_s": st.train_time_s,
            "tokens_per_s": tps, "flops_per_s": achieved, "mfu": mfu,
            "precision": "bf16" if self.amp_dtype == torch.bfloat16 else "fp32", "compiled": bool(
                getattr(self, "compiled", False)),
            "world_size": self.info.world_size, "threads": self.threads,
            "time_s": {k: round(v, 3) for k, v in self.timings.items()},
            "hardware": {**describe_hardware(self.device), "peak_flops_per_s": self.peak},
            "epochs": epochs, "code_version": code_version(), "tags": dict(spec.tags),
        }
        if self.info.is_main:
            _write_json_atomic(self.out / SUMMARY, summary)
        return summary


def _clean_eval(ev: dict) -> dict:
    out = {k: _finite_or_none(ev.get(k)) for k in ("macro_loss", "macro_bpb", "micro_loss", "micro_bpb")}
    out["domains"] = {name: {"loss": _finite_or_none(d["loss"]), "bpb": _finite_or_none(d["bpb"]),
                             "tokens": d["tokens"], "bytes": d["bytes"]} for name, d in ev.get("domains", {}).items()}
    return out
