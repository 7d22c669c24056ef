"""Sweep executors: run many RunSpecs, skip finished work, resume interrupted runs.

`execute(specs, runs_dir, settings)` is the one entry point; `ExecutorSettings` is how runs are
executed everywhere (a suite's `[executor]` section, the tune commands' --executor, --workers,
--threads and --ray-address). Each run lives in
`runs_dir/<spec.name>/`; its state is read from disk (`summary.json`), so re-running a sweep
after a crash or a SIGKILL does only the unfinished work:

* completed or diverged (a real outcome)  → skipped;
* failed                                  → skipped unless `retry_failed`;
* anything else (never started, killed)   → (re)started; the trainer resumes from its newest
                                            valid checkpoint.

`local` trains on up to `workers` long-lived worker processes on this machine (`python -m
delphi.sweep.worker --serve`, one run at a time each, so imports are paid once per worker, not
once per run); `ray` submits each run as a Ray task with declared CPU/GPU resources, which starts
`python -m delphi.sweep.worker RUN_DIR`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from delphi.config import RunSpec
from delphi.errors import DelphiError
from delphi.files import atomic_write_json
from delphi.forecast.ledger import utc_now
from delphi.train import rundir
from delphi.validate import Int, Num, Optional, Str, dataclass_problems

FINAL_STATES = ("completed", "diverged")
EXECUTOR_KINDS = ("local", "ray")
# The rules of every ExecutorSettings field: the suite reader checks `[executor]` against them
# (each problem under its key path) and the dataclass checks itself with them.
EXECUTOR_RULES = {
    "kind": Str(EXECUTOR_KINDS), "workers": Int(1, 4096),
    "threads_per_worker": Int(0, 4096, note="0: cores ÷ workers"),
    "address": Optional(Str(what="a Ray cluster address")), "cpus_per_run": Num(0, lo_open=True),
    "gpus_per_run": Num(0),
}


@dataclass(frozen=True)
class ExecutorSettings:
    """How a sweep's runs are executed, not what they train.

    kind: "local" (long-lived worker processes on this machine) or "ray" (a Ray task per run);
    workers: local runs in parallel; threads_per_worker: intra-op threads per run (0: the cores
    shared among the runs that will actually train); address: the Ray cluster (None: start a
    local Ray instance); cpus_per_run, gpus_per_run: the resources each Ray task declares."""

    kind: str = "local"
    workers: int = 1
    threads_per_worker: int = 0
    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self):
        dataclass_problems(self, EXECUTOR_RULES, "executor")


@dataclass
class RunOutcome:
    name: str
    status: str  # completed | diverged | failed | skipped-failed
    reason: str | None
    ran: bool  # False when skipped because already done


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary; None when absent or unreadable (a truncated one: the run is resumed)."""
    return rundir.read_summary(run_dir, warn=False)


def prepare_run_dir(spec: RunSpec, run_dir: Path) -> None:
    """Write run.json (refusing a directory that holds a different run, a non-empty directory that
    is not a run directory, and one another process is training) and started.json."""
    hint = "move it away (or use a new out_dir)"
    rundir.check_out_dir(run_dir, hint=hint)
    rundir.make_run_dir(run_dir, hint="check the suite's out_dir")
    rundir.check_not_locked(run_dir, hint="wait for it, or use a new out_dir")
    spec_path = run_dir / "run.json"
    if spec_path.exists():
        text = spec_path.read_text()
        try:
            same = RunSpec.from_json(text) == spec
        except DelphiError:  # not readable as a spec here: compare the JSON as the trainer does
            same = json.loads(text) == json.loads(spec.to_json())
        if not same:
            raise DelphiError(f"{run_dir} holds a different run spec than the suite now plans; "
                              "move it away (or use a new out_dir) to train the new plan")
    else:
        rundir.write_run_spec(run_dir, spec)
    started = run_dir / "started.json"
    if not started.exists():  # first start only: `check` compares it with the registration time
        atomic_write_json(started, {"started_at": utc_now()})


def needs_work(run_dir: Path, retry_failed: bool) -> bool:
    s = read_summary(run_dir)
    if s is None:
        return True
    if s.get("status") in FINAL_STATES:
        return False
    return s.get("status") == "failed" and retry_failed


def _pdeathsig():  # runs in the child before exec: die when the parent dies
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def worker_command(run_dir: Path | None) -> list[str]:
    """One run (`run_dir`), or a long-lived worker that reads run directories on stdin (None)."""
    return [sys.executable, "-m", "delphi.sweep.worker", str(run_dir) if run_dir is not None else "--serve"]


def worker_env(threads: int, passive: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["DELPHI_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


# Other processes using at least this many cores when multi-threaded workers start make them
# sleep at OpenMP barriers instead of spinning (measured: benchmarks/RESULTS.md, "sharing").
BUSY_CORES_FOR_PASSIVE = 0.5


def busy_cores(seconds: float = 0.25) -> float | None:
    """Cores in use by every process on the machine over the next `seconds` (Linux /proc/stat;
    None elsewhere). The caller samples while it is itself idle, so this is other processes' load."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def wait_policy_passive(threads: int, workers: int) -> bool:
    """Whether multi-threaded workers should sleep at OpenMP barriers: only when other processes
    already hold a share of the cores (spinning threads then wait on descheduled ones, 2.8-3x
    slower per step; sleeping ones 1.2-1.4x) and the user has not chosen a policy. On an idle
    machine spinning stays, it is 24-33% faster there."""
    if threads <= 1 or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    load = busy_cores()
    if load is None or load < BUSY_CORES_FOR_PASSIVE:
        return False
    print(f"cpu: other processes are using {load:.1f} of {os.cpu_count()} cores: {workers} worker(s) x "
          f"{threads} threads sleep at OpenMP barriers (OMP_WAIT_POLICY=PASSIVE; set it yourself to choose)",
          file=sys.stderr, flush=True)
    return True


def record_failure(run_dir: Path, spec: RunSpec, reason: str) -> None:
    """A run whose process died without a summary is recorded as failed (the sweep goes on);
    not while another process trains the directory (its trainer writes the summary)."""
    if read_summary(run_dir) is not None or rundir.is_locked(run_dir):
        return
    summary = {"name": spec.name, "status": "failed", "reason": reason, "budget": spec.budget, "seed": spec.seed,
               "params": spec.shape.num_params, "tokens": spec.tokens, "flops": spec.flops, "tags": spec.tags}
    rundir.write_summary(run_dir, summary)


def execute(specs: Sequence[RunSpec], runs_dir: Path, settings: ExecutorSettings = ExecutorSettings(), *,
            retry_failed: bool = False, progress: bool = True, label: str = "runs") -> list[RunOutcome]:
    """Train every spec that is not finished in `runs_dir/<name>/` as `settings` say; return
    each spec's outcome, in order (see the module docstring for what is skipped)."""
    runs_dir = Path(runs_dir)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DelphiError("two planned runs share a name; run names must be unique within a suite")
    todo, outcomes = [], {}
    for spec in specs:
        run_dir = runs_dir / spec.name
        if needs_work(run_dir, retry_failed):
            if retry_failed and (s := read_summary(run_dir)) and s.get("status") == "failed":
                (run_dir / "summary.json").unlink()
            prepare_run_dir(spec, run_dir)
            todo.append(spec)
        else:
            s = read_summary(run_dir) or {}
            st = s.get("status", "?")
            outcomes[spec.name] = RunOutcome(spec.name, st if st in FINAL_STATES else "skipped-failed",
                                             s.get("reason"), False)
    # Cores are shared among the workers that will actually run: one held-out run on a 2-worker
    # suite gets both cores.
    s = settings
    threads = s.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, min(s.workers, len(todo))))
    passive = s.kind == "local" and bool(todo) and wait_policy_passive(threads, min(s.workers, len(todo)))
    monitor = SweepMonitor(specs, runs_dir, done={n for n in outcomes}, enabled=progress, label=label)
    with monitor:
        if s.kind == "local":
            results = _run_local(todo, runs_dir, s.workers, threads, monitor, passive)
        else:  # "ray" (ExecutorSettings admits no other kind)
            results = _run_ray(todo, runs_dir, threads, s.address, s.cpus_per_run, s.gpus_per_run, monitor)
    for spec, (rc, err) in zip(todo, results):
        run_dir = runs_dir / spec.name
        if rc != 0:
            record_failure(run_dir, spec, f"worker exited with code {rc}: {err.strip()[-500:]}" if err
                           else f"worker exited with code {rc}")
        s = read_summary(run_dir) or {"status": "failed", "reason": "no summary written"}
        outcomes[spec.name] = RunOutcome(spec.name, s.get("status", "failed"), s.get("reason"), True)
    return [outcomes[s.name] for s in specs]


class _ServeWorker:
    """A long-lived `python -m delphi.sweep.worker --serve` process that trains one run at a time."""

    def __init__(self, threads: int, first_run_dir: Path, passive: bool = False):
        # Until its first run redirects them, the worker's stderr (an import failure, say) goes to
        # the first run's worker.log, as a one-run process's would.
        with open(first_run_dir / "worker.log", "ab") as err:
            self.proc = subprocess.Popen(worker_command(None), env=worker_env(threads, passive), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, preexec_fn=_pdeathsig)
        self.job: tuple[int, Path] | None = None

    def send(self, i: int, run_dir: Path) -> None:
        self.job = (i, run_dir)
        self.proc.stdin.write(f"{run_dir}\n".encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # end of input: an idle worker exits


def _run_local(todo: list[RunSpec], runs_dir: Path, workers: int, threads: int, monitor: "SweepMonitor",
               passive: bool = False):
    """Train `todo` on up to `workers` long-lived worker processes. With several workers the
    longest runs start first, so the sweep does not end waiting on one straggler."""
    order = sorted(range(len(todo)), key=lambda i: -todo[i].flops) if workers > 1 else list(range(len(todo)))
    pending = [(i, todo[i]) for i in order]
    idle: list[_ServeWorker] = []
    busy: dict[int, _ServeWorker] = {}  # stdout fd -> worker
    results: list[tuple[int, str]] = [(0, "")] * len(todo)
    try:
        while pending or busy:
            while pending and len(busy) < workers:
                i, spec = pending.pop(0)
                run_dir = runs_dir / spec.name
                w = idle.pop() if idle else _ServeWorker(threads, run_dir, passive)
                w.send(i, run_dir)
                busy[w.proc.stdout.fileno()] = w
                monitor.started(spec.name)
            ready, _, _ = select.select(list(busy), [], [], 0.25)
            for fd in ready:
                w = busy.pop(fd)
                i, run_dir = w.job
                line = w.proc.stdout.readline()
                try:
                    answer = json.loads(line)
                    results[i] = (int(answer["rc"]), str(answer.get("reason") or "") if answer["rc"] else "")
                    idle.append(w)
                except (ValueError, KeyError, TypeError):  # the worker died mid-run (killed, out of memory)
                    rc = w.proc.wait()
                    results[i] = (rc or 1, _tail(run_dir / "worker.log"))
                w.job = None
                monitor.finished(todo[i].name)
            monitor.refresh()
    finally:
        for w in idle:
            w.stop()
        for w in busy.values():  # interrupted: stop the running ones; their checkpoints remain
            w.proc.send_signal(signal.SIGTERM)
        for w in [*idle, *busy.values()]:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
    return results


def _ray_train(run_dir: str, threads: int) -> tuple[int, str]:
    proc = subprocess.run(worker_command(Path(run_dir)), env=worker_env(threads), capture_output=True, text=True)
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""


def _run_ray(todo, runs_dir, threads, address, cpus_per_run, gpus_per_run, monitor: "SweepMonitor"):
    try:
        import ray
    except ImportError:
        raise DelphiError("the ray executor needs Ray: pip install 'delphi[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address else max(1, os.cpu_count() or 1))
    remote = ray.remote(_ray_train)
    refs = {}
    for i, spec in enumerate(todo):
        ref = remote.options(num_cpus=cpus_per_run, num_gpus=gpus_per_run).remote(str(runs_dir / spec.name), threads)
        refs[ref] = i
        monitor.started(spec.name)
    results: list[tuple[int, str]] = [(0, "")] * len(todo)
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, timeout=0.5)
        for ref in ready:
            i = refs[ref]
            try:
                results[i] = ray.get(ref)
            except Exception as e:  # a task that died (node lost, OOM): recorded as a failed run
                results[i] = (1, f"ray task failed: {e}")
            monitor.finished(todo[i].name)
        monitor.refresh()
    return results


def _tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in data.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class SweepMonitor:
    """Overall progress (runs, FLOPs, ETA) and a bar per active run, read from metrics.jsonl."""

    def __init__(self, specs: Sequence[RunSpec], runs_dir: Path, done: set[str], enabled: bool, label: str):
        self.specs = {s.name: s for s in specs}
        self.runs_dir = runs_dir
        self.done = set(done)
        self.active: dict[str, int] = {}
        self.enabled = enabled
        self.label = label
        self.total_flops = sum(s.flops for s in specs)
        self.t0 = time.time()
        self.flops_at_start = sum(self.specs[n].flops for n in done)
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      refresh_per_second=2)
            self._progress.__enter__()
            self._overall = self._progress.add_task(f"[bold]{self.label}", total=len(self.specs),
                                                    completed=len(self.done), info="")
            self.refresh()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self.refresh()
            self._progress.__exit__(*exc)
        return False

    def started(self, name: str) -> None:
        if self._progress is not None:
            self.active[name] = self._progress.add_task(f"  {name}", total=self.specs[name].train_steps, info="")

    def finished(self, name: str) -> None:
        self.done.add(name)
        if self._progress is not None and name in self.active:
            self._progress.remove_task(self.active.pop(name))

    def _run_state(self, name: str) -> dict:
        path = self.runs_dir / name / "metrics.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 4096))
                lines = f.read().decode("utf-8", "replace").splitlines()
            for line in reversed(lines):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "step" in rec and "loss" in rec:
                    return rec
        except OSError:
            pass
        return {}

    def refresh(self) -> None:
        if self._progress is None:
            return
        flops_done = sum(self.specs[n].flops for n in self.done)
        for name, task in self.active.items():
            st = self._run_state(name)
            if st:
                flops_done += self.specs[name].flops * min(1.0, st["step"] / self.specs[name].train_steps)
                self._progress.update(task, completed=st["step"],
                                      info=f"loss {st['loss']:.3f}  {st.get('tokens_per_s', 0):,.0f} tok/s")
        elapsed = time.time() - self.t0
        new = flops_done - self.flops_at_start
        eta = (self.total_flops - flops_done) * elapsed / new if new > 0 else float("nan")
        info = f"FLOPs {flops_done:.2e}/{self.total_flops:.2e}" + (f"  ETA {eta / 60:.1f} min" if eta == eta else "")
        self._progress.update(self._overall, completed=len(self.done), info=info)
