"""One training run: `train_run(spec, out_dir)` — RunSpec in, run directory out.

The trainer is composed from parts applied from outside the loop (torchtitan's shape): the model
and optimizer from their registries (`components`), data-parallel wrapping (`distributed`), the
step's forward and gradient accumulation (`step`), the WSD schedule (`delphi.optim`), the
`Evaluator`, the `CheckpointPolicy`, the `MetricsLogger` and its trackers (`metrics`,
`tracking`), hardware decisions (`hardware`) and the `RunState`. One-process and torchrun runs
share every line but the wrapping. The run directory (run.json, metrics.jsonl, checkpoints/, hf/,
summary.json) is described in docs/train.md; `rundir` keeps it safe (one trainer per directory,
only our own files touched). Everything that influences the trajectory is checkpointed, so on CPU
a run killed at any point and resumed ends bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from functools import partial
from pathlib import Path

import torch

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.optim import WSD, set_lr
from delphi.train import components, rundir, tracking
from delphi.train import distributed as dist
from delphi.train.checkpoint_policy import CheckpointPolicy
from delphi.train.evaluator import Evaluator, clean_eval
from delphi.train.hardware import describe_hardware, keep_freed_memory, peak_flops_per_s, resolve_precision
from delphi.train.metrics import MetricsLogger
from delphi.train.progress import Progress
from delphi.train.state import DivergenceGuard, RunState  # noqa: F401 (DivergenceGuard: older import path)
from delphi.train.step import accumulate_gradients, autocast, make_forward_loss, micro_batch_size, resolve_compile
from delphi.train.summary import Environment, build_summary

_micro_batch_size = micro_batch_size  # older import path


def train_run(spec: RunSpec, out_dir, *, progress: bool = True, resume: bool = True) -> dict:
    """Train `spec` into `out_dir`; return the summary dict (also written to summary.json).

    With `resume` (default) a finished run is returned as is and an interrupted one continues
    from its newest intact checkpoint (an unreadable summary.json counts as absent);
    `resume=False` discards earlier checkpoints and metrics. The directory is locked for the whole
    run: a second trainer on it fails at once. A non-empty directory that is not a run directory
    is refused. A tracking backend whose package is missing is refused before anything starts.
    Divergence ends the run with status "diverged" (no exception); an unexpected error writes
    status "failed" with the reason and re-raises.
    """
    if not isinstance(spec, RunSpec):
        raise DelphiError(f"train_run needs a RunSpec, got {type(spec).__name__}")
    tracking.check_available(spec.tracking.backends, f"run {spec.name}")
    out = Path(out_dir)
    info = dist.init_distributed()
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
    error = dist.broadcast_object(error, info)
    if error is not None:
        raise DelphiError(error)
    try:
        return _train_locked(spec, out, info, progress=progress, resume=resume)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(spec: RunSpec, out: Path, info: dist.DistInfo, *, progress: bool, resume: bool) -> dict:
    if info.is_main:
        rundir.clean_temporaries(out)
    dist.barrier(info)
    run_json = out / rundir.RUN_JSON
    if run_json.exists() and resume:
        rundir.check_same_run(out, json.loads(spec.to_json()))
        summary = rundir.read_summary(out, warn=info.is_main)
        if summary is not None and summary.get("status") in ("completed", "diverged"):
            return summary
    if info.is_main:
        if not resume:
            rundir.discard_outputs(out)
        rundir.write_run_spec(out, spec)
    dist.barrier(info)
    trainer = Trainer(spec, out, info, progress and info.is_main)
    try:
        return trainer.run()
    except BaseException as e:
        if not isinstance(e, (KeyboardInterrupt, SystemExit)) and info.is_main:
            with contextlib.suppress(Exception):
                trainer.finish("failed", f"{type(e).__name__}: {e}")
        trainer.metrics.close()
        raise


class Trainer:
    """One run: its parts (built in `build`) and the loop that drives them."""

    def __init__(self, spec: RunSpec, out: Path, info: dist.DistInfo, progress: bool):
        self.spec, self.out, self.info, self.show, self.device = spec, out, info, progress, info.device
        self.t_start, self.wall_offset = time.perf_counter(), 0.0
        self.state = RunState()
        threads = dist.configure_threads(info)  # before anything runs a kernel
        allocator = keep_freed_memory()  # before the step's memory is first allocated
        self.env = Environment(amp_dtype=resolve_precision(spec.precision, self.device), world_size=info.world_size,
                               threads=threads, hardware={**describe_hardware(self.device), "allocator": allocator})
        if self.device.startswith("cuda"):
            # fp32 matmuls on tensor cores (TF32) where bf16 autocast does not already cover them.
            torch.set_float32_matmul_precision("high")
        self.metrics = MetricsLogger(out, spec, enabled=info.is_main)
        self.checkpoints = CheckpointPolicy(out / rundir.CHECKPOINTS, info, every_steps=spec.checkpoint_every,
                                            every_minutes=spec.checkpoint_every_minutes)
        self.loader = self.evaluator = None

    def build(self):
        spec, info = self.spec, self.info
        self.prepared, self.loader, val_sets = components.open_data(spec, info, self.show)
        self.local_rows = spec.batch_size // info.world_size
        self.evaluator = Evaluator(val_sets, batch_size=micro_batch_size(self.local_rows), device=self.device,
                                   autocast=partial(autocast, self.device, self.env.amp_dtype),
                                   use_doc_ids=spec.data.block_cross_document_attention, info=info)
        self.model = components.build_model(spec, info)
        self.optimizer = components.build_optimizer(self.model, spec.optimizer, info=info)
        self.schedule = WSD.from_hparams(spec.optimizer, spec.train_steps)
        self.env.compiled = resolve_compile(spec.compile, self.device, spec, info)
        self.loss_fn = make_forward_loss(self.model, self.env.amp_dtype, spec.optimizer.z_loss_weight,
                                         compile=self.env.compiled)

    def run(self) -> dict:
        spec = self.spec
        t_setup = time.perf_counter()
        self.build()
        restored = self.checkpoints.restore(model=self.model, optimizer=self.optimizer, loader=self.loader)
        resumed = restored is not None
        st = self.state = restored or RunState()
        self.wall_offset = st.wall_time_s
        self.env.time_s["setup"] = time.perf_counter() - t_setup
        st.tracking_id = st.tracking_id or tracking.new_run_id()
        self.metrics.start(st.step, st.tracking_id)
        self.env.peak_flops_per_s = peak_flops_per_s(self.device, self.env.amp_dtype)
        N, resumed_step = spec.train_steps, st.step
        log_every = max(1, min(50, N // 500))
        self.checkpoints.start(check_every=log_every)
        bar = Progress(self.show, spec.name, N, st.step)
        if resumed:
            bar.message(f"resumed from step {st.step}")
        try:
            reason = self.train_loop(bar, log_every, window=max(5, N // 50))
        finally:
            bar.close()
        self._sync_wall()
        if reason is not None:
            bar.message(f"diverged: {reason}")
            return self.finish("diverged", reason)
        if resumed and resumed_step == N and st.last_eval is not None:
            # Resumed from the final checkpoint (killed before the summary, or the summary was
            # unreadable): the final evaluation is in the checkpoint and already in metrics.jsonl.
            ev = st.last_eval
        else:
            ev = self.evaluate()
        if ev["macro_loss"] is None or not math.isfinite(ev["macro_loss"]):
            return self.finish("diverged", f"non-finite final eval loss ({ev['macro_loss']})")
        self._sync_wall()
        self.save()
        t_export = time.perf_counter()
        components.export_model(self.model, self.spec, self.info, self.prepared.tokenizer, self.out / "hf")
        self.env.time_s["export"] = time.perf_counter() - t_export
        return self.finish("completed", None)

    def train_loop(self, bar: Progress, log_every: int, window: int) -> str | None:
        """Steps to `train_steps`, logging, evaluating and checkpointing as due; why the run
        diverged, or None. `window`: steps whose mean train loss the divergence guard sees."""
        spec, info, st, N, rows = self.spec, self.info, self.state, self.spec.train_steps, self.local_rows
        r0, micro, tokens_per_step = info.rank * rows, micro_batch_size(rows), spec.batch_size * spec.shape.seq_len
        use_doc = spec.data.block_cross_document_attention
        win_t0, win_tokens, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
        self.model.train()
        while st.step < N:
            t0 = time.perf_counter()
            batch = self.loader.next_batch()
            tokens = batch.tokens[r0:r0 + rows].to(self.device, non_blocking=True)
            docs = batch.document_ids[r0:r0 + rows].to(self.device, non_blocking=True) if use_doc else None
            ce = accumulate_gradients(self.loss_fn, tokens, docs, micro)
            lr_factor = set_lr(self.optimizer, self.schedule, st.step)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss = float(dist.all_reduce_sum(ce, info)) / info.world_size
            st.step, st.tokens = st.step + 1, st.tokens + tokens_per_step
            dt = time.perf_counter() - t0
            st.train_time_s += dt
            self.env.time_s["first_step"] = self.env.time_s["first_step"] or dt
            win_tokens, loss_acc, loss_n = win_tokens + tokens_per_step, loss_acc + loss, loss_n + 1
            if reason := st.observe_train_loss(loss, window):
                return reason
            if st.step % log_every == 0 or st.step == N:
                el = time.perf_counter() - win_t0
                tps = win_tokens / el if el > 0 else 0.0
                self.metrics.log({"kind": "train", "step": st.step, "lr": spec.optimizer.lr * lr_factor,
                                  "lr_factor": lr_factor, "loss": loss_acc / loss_n,
                                  "grad_norm": dict(self.optimizer.last_grad_norms), "tokens": st.tokens,
                                  "tokens_per_s": tps, "elapsed_s": self._wall(),
                                  "flops": 3.0 * spec.shape.flops_per_token * st.tokens})
                bar.update(st.step, loss_acc / loss_n, tps, (N - st.step) * (st.train_time_s / st.step))
                win_t0, win_tokens, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
            if spec.eval_every and st.step % spec.eval_every == 0 and st.step < N:
                if reason := st.observe_eval(self.evaluate()):
                    return reason
            if st.step < N and self.checkpoints.due(st.step):
                self._sync_wall()
                self.save()
        return None

    def evaluate(self) -> dict:
        ev = self.state.last_eval = self.evaluator(self.model)
        self.metrics.log({"kind": "eval", "step": self.state.step, **clean_eval(ev)})
        return ev

    def save(self):
        self.checkpoints.save(model=self.model, optimizer=self.optimizer, loader=self.loader, state=self.state,
                              spec=self.spec)

    def _wall(self) -> float:
        return self.wall_offset + (time.perf_counter() - self.t_start)

    def _sync_wall(self):
        self.state.wall_time_s = self._wall()

    def finish(self, status: str, reason: str | None) -> dict:
        """Write summary.json (rank 0), hand it to the trackers and close them; return it."""
        self._sync_wall()
        self.env.time_s["eval"] = self.evaluator.time_s if self.evaluator is not None else 0.0
        self.env.time_s["checkpoint"] = self.checkpoints.time_s
        summary = build_summary(self.spec, self.state, self.env, status=status, reason=reason,
                                final_train_loss=self.metrics.last_train_loss(), loader=self.loader)
        if self.info.is_main:
            rundir.write_summary(self.out, summary)
        self.metrics.close(summary)
        return summary
