"""Run directories that are safe to point anywhere: one trainer per directory, the user's own
files never overwritten or deleted, an unreadable summary or an older checkpoint resumed without
duplicated metric rows, orphaned temporaries cleaned, cached shards verified on reuse."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from delphi.cli import main
from delphi.config import DataSpec
from delphi.data import prepare_data
from delphi.data import shards as shards_mod
from delphi.errors import DelphiError
from delphi.sweep.executors import prepare_run_dir, record_failure
from delphi.train import checkpoint as ckpt
from delphi.train import rundir, train_run
from test_train import tiny_spec

MINI = Path(__file__).parent / "data" / "data" / "mini"
TIMING = ("tokens_per_s", "elapsed_s")  # the only fields of a metric row that depend on the clock


def _spec(**kw):
    return tiny_spec(name="dirs", train_steps=6, checkpoint_every=2, eval_every=3, **kw)


# Same intra-op thread count everywhere keeps float reductions (and so runs) reproducible.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirs") / "run"
    threads = torch.get_num_threads()
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setenv("DELPHI_THREADS", "1")
        summary = train_run(_spec(), out, progress=False)
    torch.set_num_threads(threads)
    assert summary["status"] == "completed"
    return out, summary


def _copy(finished, dst: Path) -> Path:
    shutil.copytree(finished[0], dst)
    return dst


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(_spec().to_json())
    return path


# ---- one trainer per directory -----------------------------------------------------------------

HOLD_LOCK = r"""
import sys, time
from delphi.train.rundir import RunDirLock
lock = RunDirLock(sys.argv[1])
print("LOCKED", flush=True)
time.sleep(60)
"""


def test_a_second_trainer_on_a_locked_directory_fails_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        assert main(["train", str(_spec_file(tmp_path)), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (f"delphi train: error: {out} is being trained by another process (pid {holder.pid}); "
                       f"wait for it or use another --out\n")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_the_trainer_holds_the_lock_for_the_whole_run_and_releases_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    seen = []
    commit = ckpt.commit

    def commit_and_look(root, step, world_size, keep=2):
        seen.append(rundir.is_locked(out))
        return commit(root, step, world_size, keep)

    monkeypatch.setattr(ckpt, "commit", commit_and_look)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train_run(tiny_spec(name="lk", train_steps=2, checkpoint_every=1, eval_every=0), out,
                         progress=False)["status"] == "completed"
    assert seen == [True, True]  # steps 1 (periodic) and 2 (final)
    assert not rundir.is_locked(out)


def test_the_sweep_refuses_a_run_directory_another_process_trains(tmp_path):
    spec = _spec()
    run_dir = tmp_path / "runs" / spec.name
    prepare_run_dir(spec, run_dir)
    with rundir.RunDirLock(run_dir):
        with pytest.raises(DelphiError) as e:
            prepare_run_dir(spec, run_dir)
        assert str(e.value) == (f"{run_dir} is being trained by another process (pid {os.getpid()}); "
                                f"wait for it, or use a new out_dir")
        record_failure(run_dir, spec, "worker exited with code 2")
        assert not (run_dir / "summary.json").exists()  # the holder writes the summary, not the sweep


# ---- the user's own files ----------------------------------------------------------------------

@pytest.mark.parametrize("no_resume", [False, True])
def test_a_non_empty_directory_that_is_not_a_run_directory_is_refused(tmp_path, capsys, no_resume):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text("my own metrics\n")
    (out / "notes.txt").write_text("keep me\n")
    args = ["train", str(_spec_file(tmp_path)), "--out", str(out), "--quiet"] + (["--no-resume"] if no_resume else [])
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"delphi train: error: {out} is not empty and is not a Delphi run directory (it has no run.json; "
        f"it holds metrics.jsonl, notes.txt); nothing was written there; choose a new or empty --out directory\n")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "notes.txt"]
    assert (out / "metrics.jsonl").read_text() == "my own metrics\n"
    # a run.json of someone else's is not ours either; a file is not a directory
    (out / "run.json").write_text('{"experiment": 1}\n')
    assert main(args) == 2
    assert "(its run.json is not a Delphi run spec; it holds metrics.jsonl, notes.txt, run.json)" in \
        capsys.readouterr().err
    assert main(["train", str(_spec_file(tmp_path)), "--out", str(out / "notes.txt")]) == 2
    assert f"{out / 'notes.txt'} exists and is not a directory" in capsys.readouterr().err


def test_the_sweep_refuses_a_directory_that_is_not_a_run_directory(tmp_path):
    spec = _spec()
    run_dir = tmp_path / "runs" / spec.name
    run_dir.mkdir(parents=True)
    (run_dir / "data.csv").write_text("a,b\n")
    with pytest.raises(DelphiError, match=r"is not empty and is not a Delphi run directory \(it has no run.json; "
                                          r"it holds data.csv\); nothing was written there; move it away"):
        prepare_run_dir(spec, run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["data.csv"]


def test_no_resume_deletes_only_what_the_run_wrote(finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    (out / "checkpoints" / "my-notes.txt").write_text("keep me\n")
    (out / "checkpoints" / "step-best").mkdir()
    (out / "checkpoints" / "step-best" / "model.pt").write_text("mine\n")
    (out / "analysis.ipynb").write_text("{}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = train_run(_spec(), out, progress=False, resume=False)
    assert s["status"] == "completed" and s["loss"] == finished[1]["loss"]
    assert (out / "checkpoints" / "my-notes.txt").read_text() == "keep me\n"
    assert (out / "checkpoints" / "step-best" / "model.pt").read_text() == "mine\n"
    assert (out / "analysis.ipynb").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["my-notes.txt", "step-00000004", "step-00000006", "step-best"]
    assert _rows(out) == _rows(finished[0])  # started over: every row once


# ---- resuming: unreadable summary, older checkpoint, orphaned temporaries -----------------------

def test_a_truncated_summary_is_ignored_with_a_warning_and_the_run_completes(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    metrics = (out / "metrics.jsonl").read_text()
    text = (out / "summary.json").read_text()
    (out / "summary.json").write_text(text[: len(text) // 2])
    with pytest.warns(RuntimeWarning, match=r"summary\.json is unreadable \(not valid JSON: .*\); ignoring it: "
                                            r"the run resumes from its newest intact checkpoint"):
        assert main(["train", str(_spec_file(tmp_path)), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "dirs: completed" in captured.out
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["loss"] == finished[1]["loss"] and s["eval"] == finished[1]["eval"]
    # resumed from the final checkpoint: no evaluation re-run, no row added
    assert (out / "metrics.jsonl").read_text() == metrics


def test_resume_from_an_older_checkpoint_leaves_every_row_once_and_cleans_temporaries(finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    (out / "summary.json").unlink()
    shutil.rmtree(out / "hf")
    shutil.rmtree(out / "checkpoints" / "step-00000006")  # the run now resumes from step 4
    with open(out / "metrics.jsonl", "a") as f:  # rows a killed run wrote after its last checkpoint
        f.write(json.dumps({"kind": "train", "step": 7, "loss": 99.0}) + "\n")
        f.write('{"kind": "train", "step": 8, "lo')  # cut by the kill
    for name in ("summary.json.tmp", "metrics.tmp", "run.json.tmp"):  # writes killed before their rename
        (out / name).write_text("{")
    (out / "checkpoints" / "step-00000006.tmp").mkdir()
    (out / "notes.tmp").write_text("a file of the user's\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = train_run(_spec(), out, progress=False)
    assert s["status"] == "completed" and s["loss"] == finished[1]["loss"]
    assert _rows(out) == _rows(finished[0])
    steps = [(r["kind"], r["step"]) for r in _rows(out)]
    assert len(steps) == len(set(steps))
    assert not any((out / n).exists() for n in ("summary.json.tmp", "metrics.tmp", "run.json.tmp"))
    assert not (out / "checkpoints" / "step-00000006.tmp").exists()
    assert (out / "notes.tmp").read_text() == "a file of the user's\n"


# ---- cached shards -----------------------------------------------------------------------------

def _data(cache: Path) -> DataSpec:
    return DataSpec(mixture=str(MINI / "mixture.toml"), cache_dir=str(cache))


def test_a_corrupted_cached_shard_of_the_same_size_is_rebuilt_not_served(tmp_path):
    first = prepare_data(_data(tmp_path / "c"), progress=False, workers=1)
    expected = np.array(first.train["prose"].tokens)
    path = first.train["prose"].path / "tokens.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    shards_mod._VERIFIED.clear()  # as a new process would see it
    with pytest.warns(RuntimeWarning, match=r"data: cached shard prose/train \(prose-train-\w+\) is damaged "
                                            r"\(tokens\.bin checksum mismatch \(corrupted\)\); rebuilding it"):
        again = prepare_data(_data(tmp_path / "c"), progress=False, workers=1)
    assert again.built == ["prose/train"]
    assert np.array_equal(np.array(again.train["prose"].tokens), expected)


def test_a_truncated_cached_shard_is_rebuilt_by_data_prepare(tmp_path, capsys):
    first = prepare_data(_data(tmp_path / "c"), progress=False, workers=1)
    path = first.validation["code"].path / "offsets.npy"
    path.write_bytes(path.read_bytes()[:40])
    shards_mod._VERIFIED.clear()
    args = ["data", "prepare", "--mixture", str(MINI / "mixture.toml"), "--cache-dir", str(tmp_path / "c"),
            "--json", "--workers", "1"]
    with pytest.warns(RuntimeWarning, match=r"code/validation .* is damaged \(offsets\.npy is 40 bytes, \d+ were "
                                            r"written \(truncated or replaced\)\); rebuilding it"):
        assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["summary"]
    assert [(r["domain"], r["split"]) for r in rows if not r["cached"]] == [("code", "validation")]


def test_shards_written_without_checksums_are_checked_and_adopted(tmp_path):
    first = prepare_data(_data(tmp_path / "c"), progress=False, workers=1)
    legacy = first.train["math"].path
    (legacy / "checksums.json").unlink()
    shards_mod._VERIFIED.clear()
    assert shards_mod.verify_shard(legacy) is None and (legacy / "checksums.json").exists()
    (legacy / "checksums.json").unlink()
    (legacy / "tokens.bin").write_bytes((legacy / "tokens.bin").read_bytes()[:-2])
    assert "tokens.bin holds" in shards_mod.verify_shard(legacy)


def test_orphaned_shard_temporaries_are_removed_on_the_next_prepare(tmp_path):
    root = tmp_path / "c" / "shards"
    root.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that has exited: its temporaries are orphans
    host = shards_mod._HOST
    orphan = root / f".prose-train-abc.tmp-{host}-{gone.pid}-0123abcd"
    live = root / f".prose-train-abc.tmp-{host}-{os.getpid()}-0123abcd"  # a prepare still running
    other = root / f".prose-train-abc.tmp-otherhost-{gone.pid}-0123abcd"  # another machine's
    mine = root / ".my-folder.tmp"
    for d in (orphan, live, other, mine):
        d.mkdir()
        (d / "tokens.bin").write_bytes(b"\0\0")
    prepare_data(_data(tmp_path / "c"), progress=False, workers=1)
    assert not orphan.exists() and live.exists() and other.exists() and mine.exists()
