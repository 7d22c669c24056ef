"""Experiment tracking for real: a tiny run logs to TensorBoard and to an offline W&B run, and both
are read back from disk (event files; the W&B run's record file). A resumed run shows every step
once in TensorBoard and continues its W&B run; a backend whose package is missing stops the run
before anything is written; suites pass `[tracking]` to their runs."""

import importlib.util
import json
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch

from delphi.config import RunSpec, TrackingSpec
from delphi.errors import DelphiError
from delphi.train import tracking, train_run
from test_train import tiny_spec

HAVE_TB = importlib.util.find_spec("tensorboard") is not None
HAVE_WANDB = importlib.util.find_spec("wandb") is not None
needs_tb = pytest.mark.skipif(not HAVE_TB, reason="tensorboard is not installed: pip install 'delphi[tracking]'")
needs_wandb = pytest.mark.skipif(not HAVE_WANDB, reason="wandb is not installed: pip install 'delphi[tracking]'")


def _spec(backends=("tensorboard", "wandb"), **kw):
    return tiny_spec(name="tracked", train_steps=6, eval_every=3, checkpoint_every=2,
                     tags={"suite": "s1", "role": "grid"}, tracking=TrackingSpec(backends=tuple(backends), project="delphi-test"), **kw)


def _isolate_wandb(mp, root: Path):
    """W&B's own files (settings, cache) go under `root`; the mode is left to the default."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(var, str(root / var.lower()))
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        mp.delenv(var, raising=False)


# Same intra-op thread count everywhere keeps float reductions (and so runs) reproducible.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    if not (HAVE_TB and HAVE_WANDB):
        pytest.skip("tensorboard and wandb are not both installed: pip install 'delphi[tracking]'")
    root = tmp_path_factory.mktemp("tracked")
    threads = torch.get_num_threads()
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setenv("DELPHI_THREADS", "1")
        _isolate_wandb(mp, root)
        summary = train_run(_spec(), root / "run", progress=False)
    torch.set_num_threads(threads)
    assert summary["status"] == "completed"
    return root / "run", summary


def _rows(out: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def _tb_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header (":W&B", magic, version),
    then LevelDB-log framing (32 KiB blocks; each chunk: crc32 u32, length u16, type u8 — full,
    first, middle, last) around protobuf `Record` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


def _wandb_run(out: Path) -> list:
    """The records of the one offline W&B run under the run directory."""
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    return _wandb_records(run_file)


def _items(items) -> dict:
    """W&B key/value items; a key with "/" may be stored split (`nested_key`)."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def _history(records) -> list[dict]:
    return [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]


@needs_tb
def test_tensorboard_event_files_hold_the_logged_scalars(tracked):
    out, summary = tracked
    scalars = _tb_scalars(out)
    train = _rows(out, "train")
    assert [s for s, _ in scalars["train/loss"]] == [r["step"] for r in train] == list(range(1, 7))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([r["lr"] for r in train], rel=1e-6)
    assert {"train/grad_norm/adamh", "train/grad_norm/adam", "train/tokens_per_s"} <= set(scalars)
    evals = _rows(out, "eval")
    assert [s for s, _ in scalars["eval/macro_loss"]] == [3, 6]
    assert scalars["eval/macro_loss"][-1][1] == pytest.approx(summary["loss"], rel=1e-6)
    domain = next(iter(evals[-1]["domains"]))
    assert scalars[f"eval/bpb/{domain}"][-1][1] == pytest.approx(evals[-1]["domains"][domain]["bpb"], rel=1e-6)


@needs_wandb
def test_wandb_offline_run_holds_config_history_and_summary(tracked):
    out, summary = tracked
    records = _wandb_run(out)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.job_type, run.display_name) == ("delphi-test", "s1", "grid", "tracked")
    config = _items(run.config.update)
    assert RunSpec.from_dict({k: v for k, v in config.items() if not k.startswith("_")}) == _spec()
    history = _history(records)
    logged = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-9)) for r in _rows(out, "train")]
    assert [h["eval/macro_loss"] for h in history if "eval/macro_loss" in h][-1] == pytest.approx(summary["loss"])
    final = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            final.update(_items(r.summary.update))
    assert final["status"] == "completed" and final["loss"] == pytest.approx(summary["loss"])


def test_a_resumed_run_shows_every_step_once_and_continues_its_wandb_run(tracked, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(tracked[0], out, symlinks=True)
    first = set((out / "wandb").glob("offline-run-*"))
    (out / "summary.json").unlink()
    shutil.rmtree(out / "hf")
    shutil.rmtree(out / "checkpoints" / "step-00000006")  # resumes from step 4
    _isolate_wandb(monkeypatch, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = train_run(_spec(), out, progress=False)
    assert s["status"] == "completed", s["reason"]
    assert s["loss"] == tracked[1]["loss"]
    # TensorBoard hides what the first process logged after step 4 (purge step): each step once
    scalars = _tb_scalars(out)
    assert [st for st, _ in scalars["train/loss"]] == list(range(1, 7))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in _rows(out, "train")], rel=1e-6)
    # the second process continues the same W&B run (same id; `wandb sync` appends it) from step 5
    runs = set((out / "wandb").glob("offline-run-*"))
    assert len({p.name.rsplit("-", 1)[-1] for p in runs}) == 1
    (second,) = [f for d in runs - first for f in d.glob("run-*.wandb")]
    assert [h["_step"] for h in _history(_wandb_records(second)) if "train/loss" in h] == [5, 6]


def test_a_missing_tracking_package_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(DelphiError, match=r"needs the wandb package: pip install 'delphi\[wandb\]'") as e:
        train_run(_spec(backends=["wandb"]), tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_tracking_is_part_of_the_spec_file_but_not_of_the_run():
    plain = tiny_spec()
    assert "tracking" not in plain.to_dict()  # run.json and ledger entries of untracked runs are unchanged
    tracked = _spec()
    assert tracked.to_dict()["tracking"] == {"backends": ["tensorboard", "wandb"], "project": "delphi-test"}
    assert RunSpec.from_json(tracked.to_json()).tracking == tracked.tracking
    assert _spec(backends=()) == tracked  # equality (and so resume and checks) ignore the trackers
    short = {**json.loads(plain.to_json()), "tracking": ["tensorboard"]}
    assert RunSpec.from_dict(short).tracking == TrackingSpec(backends=("tensorboard",))
    with pytest.raises(DelphiError, match=r"tracking\.backends entry \"mlflow\" must be one of tensorboard, wandb"):
        RunSpec.from_dict({**short, "tracking": ["mlflow"]})
    with pytest.raises(DelphiError, match=r"tracking unknown field group"):
        RunSpec.from_dict({**short, "tracking": {"group": "x"}})


def test_a_suite_passes_its_tracking_section_to_every_run(monkeypatch):
    from delphi.sweep.suite import load_suite, parse_suite, preset_text, readiness_problems

    text = preset_text("tiny") + '\n[tracking]\nbackends = ["tensorboard"]\nproject = "scaling"\n'
    suite = parse_suite(text)
    assert suite.tracking == TrackingSpec(backends=("tensorboard",), project="scaling")
    assert {s.tracking for s in suite.grid_specs()} == {suite.tracking}
    assert load_suite("tiny").grid_specs()[0].tracking == TrackingSpec()
    with pytest.raises(DelphiError, match=r"\[tracking\] backends entry \"mlflow\" must be one of"):
        parse_suite(preset_text("tiny") + '\n[tracking]\nbackends = ["mlflow"]\n')
    monkeypatch.setattr(tracking, "missing_packages", lambda backends: [f"{b} is missing" for b in backends])
    assert any("tensorboard is missing" in p for p in readiness_problems(suite))
