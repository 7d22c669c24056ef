"""The local and Ray executors produce identical run directories; failures are recorded, not fatal."""

import json
import subprocess
import sys
import time

from delphi.config import DataSpec
from delphi.recipe import get_recipe
from delphi.sweep import executors
from delphi.sweep.executors import ExecutorSettings, execute, read_summary

DATA = DataSpec(mixture="embedded", tokenizer="embedded-bpe-1k")


def _specs():
    cands = get_recipe("cpu").candidates(6e10)[:2]
    return [c.to_run_spec(data=DATA, precision="fp32", compile="off", eval_windows_per_domain=4) for c in cands]


def _files(run_dir):
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                  if p.is_file() and "checkpoints" not in p.parts and p.name != "worker.log")


def test_ray_and_local_executors_write_identical_runs(tmp_path):
    specs = _specs()  # Ray is in the test extra
    local = execute(specs, tmp_path / "local", ExecutorSettings(kind="local"), progress=False)
    ray_out = execute(specs, tmp_path / "ray", ExecutorSettings(kind="ray", cpus_per_run=1), progress=False)
    import ray

    ray.shutdown()
    assert [o.status for o in local] == [o.status for o in ray_out] == ["completed"] * len(specs)
    for spec in specs:
        a, b = tmp_path / "local" / spec.name, tmp_path / "ray" / spec.name
        assert _files(a) == _files(b)
        sa, sb = read_summary(a), read_summary(b)
        for key in ("loss", "bpb", "final_train_loss", "tokens", "params", "flops"):
            assert sa[key] == sb[key], key
        assert (a / "hf" / "model.safetensors").read_bytes() == (b / "hf" / "model.safetensors").read_bytes()


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    good, bad = _specs()
    # a run whose data cannot be found: the worker fails; the sweep records it and runs the other
    import dataclasses

    bad = dataclasses.replace(bad, data=DataSpec(mixture=str(tmp_path / "missing.toml"), tokenizer="embedded-bpe-1k"))
    out = execute([bad, good], tmp_path / "runs", ExecutorSettings(kind="local"), progress=False)
    assert [o.status for o in out] == ["failed", "completed"]
    s = json.loads((tmp_path / "runs" / bad.name / "summary.json").read_text())
    assert s["status"] == "failed" and s["reason"]
    # re-running skips both (failed runs are re-tried only when asked)
    again = execute([bad, good], tmp_path / "runs", ExecutorSettings(kind="local"), progress=False)
    assert [o.ran for o in again] == [False, False]
    assert again[0].status == "skipped-failed"


def test_a_worker_killed_mid_run_fails_that_run_only(tmp_path):
    """The local executor's long-lived worker dies (SIGKILL, as the OOM killer would) during the
    first run: that run is recorded as failed, a new worker trains the next one, and a re-run with
    retry resumes the killed run from its checkpoint."""
    import os
    import signal
    import threading
    import time

    first, second = _specs()
    runs = tmp_path / "runs"
    killed = []

    def kill_when_training():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if (runs / first.name / "metrics.jsonl").exists():
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
                    # only this test's own serve workers (children of this process), never another sweep's
                    if ppid == os.getpid() and b"delphi.sweep.worker" in cmd and b"--serve" in cmd:
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_when_training)
    t.start()
    out = execute([first, second], runs, ExecutorSettings(kind="local"), progress=False)
    t.join()
    assert killed, "no serve worker was found to kill"
    assert [o.status for o in out] == ["failed", "completed"]
    assert "exited with code" in read_summary(runs / first.name)["reason"]
    again = execute([first, second], runs, ExecutorSettings(kind="local"), progress=False, retry_failed=True)
    assert [o.status for o in again] == ["completed", "completed"] and [o.ran for o in again] == [True, False]


def test_multithreaded_workers_sleep_at_barriers_only_when_the_cpu_is_shared(monkeypatch, capsys):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    # A real competitor: one core kept busy is seen by the /proc/stat sample.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load = executors.busy_cores()
    finally:
        busy.kill()
        busy.wait()
    assert load is not None and load >= executors.BUSY_CORES_FOR_PASSIVE
    # The decision: passive only for multi-threaded workers on a shared CPU, and never over the
    # user's own OpenMP setting; the worker environment carries it.
    monkeypatch.setattr(executors, "busy_cores", lambda seconds=0.25: 1.0)
    assert executors.wait_policy_passive(threads=2, workers=1)
    assert "OMP_WAIT_POLICY=PASSIVE" in capsys.readouterr().err
    assert not executors.wait_policy_passive(threads=1, workers=2)
    assert executors.worker_env(2, passive=True)["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in executors.worker_env(2)
    monkeypatch.setattr(executors, "busy_cores", lambda seconds=0.25: 0.1)
    assert not executors.wait_policy_passive(threads=2, workers=1)
    monkeypatch.setattr(executors, "busy_cores", lambda seconds=0.25: 1.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not executors.wait_policy_passive(threads=2, workers=1)
