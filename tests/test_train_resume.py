"""A run killed with SIGKILL right after a checkpoint and resumed ends bitwise identical to an
uninterrupted run (final weights, eval loss and every logged train loss)."""

import json
import os
import signal
import subprocess
import sys
import warnings

import torch

from delphi.train import train_run
from test_train import tiny_spec

# The child trains normally; only the checkpoint commit is wrapped, so that after the step-6
# checkpoint is durable the process announces it and waits to be killed mid-run.
CHILD = r"""
import sys, time
from delphi.config import RunSpec
from delphi.train import checkpoint, train_run
commit = checkpoint.commit
def commit_then_wait(root, step, world_size, keep=2):
    out = commit(root, step, world_size, keep)
    if step == 6:
        print("CHECKPOINTED", flush=True)
        time.sleep(120)
    return out
checkpoint.commit = commit_then_wait
spec = RunSpec.from_json(open(sys.argv[1]).read())
train_run(spec, sys.argv[2], progress=False)
"""


def _train_losses(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]


def test_sigkill_and_resume_is_bitwise_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("DELPHI_THREADS", "1")
    threads = torch.get_num_threads()
    spec = tiny_spec(name="resume", train_steps=12, checkpoint_every=3, eval_every=5)
    spec_path = tmp_path / "run.json"
    spec_path.write_text(spec.to_json())
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spec_path), str(killed)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "DELPHI_THREADS": "1"})
    try:
        for line in child.stdout:
            if "CHECKPOINTED" in line:
                break
        else:
            raise AssertionError(f"child exited ({child.wait()}) before its step-6 checkpoint")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = train_run(spec, tmp_path / "straight", progress=False)
            resumed = train_run(spec, killed, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed["status"] == ref["status"] == "completed"
    assert resumed["loss"] == ref["loss"] and resumed["eval"] == ref["eval"]
    assert resumed["final_train_loss"] == ref["final_train_loss"]
    assert _train_losses(killed) == _train_losses(tmp_path / "straight")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "hf" / "model.safetensors")
    b = load_file(killed / "hf" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
