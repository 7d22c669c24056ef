"""The pre-registration ledger catches every edit, removal and reordering; `check` refuses
held-out runs whose entry, spec, start time or summary does not hold up; a published head or
an SSH signature catches a rewritten (recomputed) chain; damaged files are one clear line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from delphi.cli import main
from delphi.config import DataSpec, ModelShape, OptimizerHParams, RunSpec
from delphi.errors import DelphiError
from delphi.forecast.forecast import Forecast, register
from delphi.forecast.ledger import Ledger, entry_hash, utc_now


def _filled(tmp_path, n=4):
    led = Ledger(tmp_path / "ledger.jsonl")
    for i in range(n):
        led.append({"kind": "forecast", "forecast": {"run": f"r{i}", "loss": 3.0 - 0.1 * i}})
    return led


def _lines(led):
    return led.path.read_text().splitlines()


def _write(led, lines):
    led.path.write_text("".join(line + "\n" for line in lines))


def test_append_chains_hashes(tmp_path):
    led = _filled(tmp_path)
    entries = led.read()
    assert [e["index"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["prev_hash"] == ""
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert all(e["hash"] == entry_hash(e) for e in entries)
    assert led.verify().ok


def test_edit_is_detected(tmp_path):
    led = _filled(tmp_path)
    lines = _lines(led)
    e = json.loads(lines[1])
    e["forecast"]["loss"] = 2.5  # a forecast nudged after the fact
    lines[1] = json.dumps(e, sort_keys=True)
    _write(led, lines)
    res = led.verify()
    assert not res.ok and any("edited" in p for p in res.problems)


def test_edit_with_recomputed_hash_breaks_the_chain(tmp_path):
    led = _filled(tmp_path)
    lines = _lines(led)
    e = json.loads(lines[1])
    e["forecast"]["loss"] = 2.5
    e["hash"] = entry_hash(e)
    lines[1] = json.dumps(e, sort_keys=True)
    _write(led, lines)
    assert not led.verify().ok


@pytest.mark.parametrize("drop", [0, 2, 3])
def test_removal_is_detected(tmp_path, drop):
    led = _filled(tmp_path)
    lines = _lines(led)
    del lines[drop]
    _write(led, lines)
    assert not led.verify().ok


def test_reorder_is_detected(tmp_path):
    led = _filled(tmp_path)
    lines = _lines(led)
    lines[1], lines[2] = lines[2], lines[1]
    _write(led, lines)
    assert not led.verify().ok


def test_garbage_line_and_refusal_to_append(tmp_path):
    led = _filled(tmp_path)
    with open(led.path, "a") as f:
        f.write("{not json\n")
    assert not led.verify().ok
    with pytest.raises(DelphiError):
        led.append({"kind": "forecast"})


def test_cli_verify_exit_codes(tmp_path):
    led = _filled(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "delphi.cli", "ledger", "verify", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    lines = _lines(led)
    del lines[1]
    _write(led, lines)
    bad = subprocess.run([sys.executable, "-m", "delphi.cli", "ledger", "verify", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "FAILS" in bad.stdout


# ---- tampering with a suite: check, anchors, signatures, damaged files ------------------------

SHAPE = ModelShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, intermediate_size=128,
                   vocab_size=4096, seq_len=32)
LOSS = 3.02  # every fake held-out run's final eval loss; the forecasts bracket it


def _spec(name: str, **kw) -> RunSpec:
    fields = dict(name=name, shape=SHAPE, optimizer=OptimizerHParams(lr=0.02, adam_lr=0.01), batch_size=4,
                  train_steps=3, data=DataSpec(), eval_windows_per_domain=2, precision="fp32", compile="off",
                  tags={"role": "heldout", "suite": "t"})
    fields.update(kw)
    return RunSpec(**fields)


def _register(led: Ledger, spec: RunSpec, loss: float = 3.0) -> dict:
    fc = Forecast(run=spec.name, seed=spec.seed, budget=1e12, flops=spec.flops, extrapolation=10.0, metric="loss",
                  loss=loss, ci_low=loss - 0.1, ci_high=loss + 0.1, loo_min=loss - 0.05, loo_max=loss + 0.05)
    return register(led, fc, spec, runs_table_sha256="0" * 64, fit_settings={"metric": "loss"}, suite="t")


def _start(d, spec: RunSpec, entry: dict) -> Path:
    run = d / "runs" / spec.name
    run.mkdir(parents=True)
    tagged = RunSpec.from_dict({**spec.to_dict(), "tags": {**spec.tags, "ledger_entry": entry["hash"]}})
    (run / "run.json").write_text(tagged.to_json())
    (run / "started.json").write_text(json.dumps({"started_at": utc_now()}) + "\n")
    return run


def _finish(run: Path, loss: float = LOSS) -> None:
    ev = {"macro_loss": loss, "macro_bpb": loss / 3, "micro_loss": loss, "micro_bpb": loss / 3, "domains": {}}
    rows = [{"kind": "train", "step": 3, "loss": loss + 0.1}, {"kind": "eval", "step": 3, **ev}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"name": run.name, "status": "completed", "reason": None,
                                                  "steps_done": 3, "loss": loss, "bpb": loss / 3, "eval": ev}))


def _suite(tmp_path, names=("heldout-a", "heldout-b")):
    """A suite directory with one registered, started and finished held-out run per name."""
    d = tmp_path / "suite"
    led = Ledger(d / "ledger.jsonl")
    for name in names:
        spec = _spec(name)
        _finish(_start(d, spec, _register(led, spec)))
    return d, led


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _rechain(led: Ledger, entries: list[dict], runs=None) -> None:
    """What a forger with write access does: recompute every index, prev_hash, hash and the .head,
    and (with `runs`, a suite's runs directory) re-point each run's run.json at its forged entry."""
    prev = ""
    for i, e in enumerate(entries):
        e["index"], e["prev_hash"] = i, prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
        if runs is not None and isinstance(e.get("run_spec"), dict):
            p = runs / e["run_spec"]["name"] / "run.json"
            spec = json.loads(p.read_text())
            spec["tags"]["ledger_entry"] = e["hash"]
            p.write_text(json.dumps(spec))
    led.path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    led.head_path.write_text(json.dumps({"entries": len(entries), "last_hash": prev or None}) + "\n")


def test_clean_suite_checks_scored_and_exits_0(tmp_path, capsys):
    d, led = _suite(tmp_path)
    code, out, _ = _cli(capsys, "check", d)
    assert code == 0, out
    assert out.count("yes") == 2 and "check FAILS" not in out
    assert f"ledger head: {led.head()}" in out
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 0 and out.startswith("ledger OK: 2 entries, hash chain intact")


def test_deleted_last_entry_with_rewritten_head_is_caught(tmp_path, capsys):
    d, led = _suite(tmp_path)
    entries = led.read()
    _rechain(led, entries[:-1])  # drop the last entry and make .head agree
    assert led.verify().ok  # the file alone cannot tell: the runs and anchors must
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 1
    assert (f"ledger FAILS (ledger.jsonl): run heldout-b names ledger entry {entries[1]['hash'][:12]}…, which is "
            "not in the ledger (entry removed or rewritten)") in out
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert (f"heldout-b: refused: its run.json names ledger entry {entries[1]['hash'][:12]}…, which is not in "
            "the ledger (entry removed or rewritten)") in out
    assert "check FAILS: 2 held-out runs refused and the ledger fails verification" in out


def test_emptied_ledger_without_head_does_not_verify(tmp_path, capsys):
    d, led = _suite(tmp_path)
    head = led.head()
    led.path.write_text("")
    led.head_path.unlink()
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 1 and "run heldout-a names ledger entry" in out and "0 entries" not in out
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1 and "heldout-a: refused: its run.json names ledger entry" in out
    # the ledger alone (no runs next to it), anchored by the published head
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(led.path, alone / "ledger.jsonl")
    code, out, _ = _cli(capsys, "ledger", "verify", alone, "--expect-head", head)
    assert code == 1
    assert out.strip() == (f"ledger FAILS (ledger.jsonl): the published head 2:{head[2:14]}… is entry 1, but the "
                           "ledger has only 0 entries: entries were removed after that head was published")
    # a deleted ledger whose runs still name entries
    led.path.unlink()
    code, _, err = _cli(capsys, "check", d)
    assert code == 2 and "is missing, but run(s) heldout-a, heldout-b name entries in it" in err


def test_edited_summary_loss_is_refused(tmp_path, capsys):
    d, _ = _suite(tmp_path)
    path = d / "runs" / "heldout-b" / "summary.json"
    s = json.loads(path.read_text())
    s["loss"] = 2.999  # nudged into the forecast
    path.write_text(json.dumps(s))
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert "heldout-b: refused: summary.json loss 2.999 disagrees with its own eval record (3.02): the summary " \
           "was edited" in out
    s["eval"]["macro_loss"] = 2.999  # edited consistently inside the summary: metrics.jsonl still disagrees
    path.write_text(json.dumps(s))
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert "heldout-b: refused: summary.json loss 2.999 disagrees with the final evaluation in metrics.jsonl " \
           "(3.02): the summary was edited" in out
    assert "check FAILS: 1 held-out run refused\n" in out and out.count(" yes") == 1  # heldout-a is still scored


def test_reordered_entries_fail_check(tmp_path, capsys):
    d, led = _suite(tmp_path)
    lines = _lines(led)
    _write(led, [lines[1], lines[0]])
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert "LEDGER FAILS VERIFICATION: entry 0: index 1 out of order (entries removed or reordered)" in out
    assert "heldout-a: refused: the ledger fails verification" in out


def test_truncated_ledger_is_one_clear_line(tmp_path, capsys):
    d, led = _suite(tmp_path)
    data = led.path.read_bytes()
    led.path.write_bytes(data[:-40])  # cut inside the last entry
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 1
    assert out.strip() == (f"ledger FAILS (ledger.jsonl): {led.path}: entry 1 (line 2) is cut short: the ledger "
                           "was truncated (restore it from a copy: a ledger must never be edited)")
    code, out, err = _cli(capsys, "check", d)
    assert code == 2 and out == ""
    assert err.strip() == f"delphi check: error: {led.path}: entry 1 (line 2) is cut short: the ledger was " \
                          "truncated (restore it from a copy: a ledger must never be edited)"


def test_invalid_utf8_is_one_clear_line_without_traceback(tmp_path):
    d, led = _suite(tmp_path)
    lines = led.path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"heldout-b"', b'"heldout-\xff"')
    led.path.write_bytes(b"\n".join(lines))
    for args in (["ledger", "verify", str(d)], ["check", str(d)], ["ledger", "head", str(d)]):
        r = subprocess.run([sys.executable, "-m", "delphi.cli", *args], capture_output=True, text=True)
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, (args, r.stderr)
        text = (r.stdout + r.stderr).strip()
        assert len(text.splitlines()) == 1, text
        assert f"{led.path}: entry 1 (line 2) is not valid UTF-8: the ledger was edited or damaged" in text


def test_entry_missing_forecast_or_its_fields(tmp_path, capsys):
    d, led = _suite(tmp_path)
    entries = led.read()
    del entries[1]["forecast"]
    _rechain(led, entries, d / "runs")  # a well-formed chain, so only the missing key is wrong
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 1
    assert out.strip() == "ledger FAILS (ledger.jsonl): entry 1 has no 'forecast' (entry edited or damaged)"
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert "LEDGER FAILS VERIFICATION: entry 1 has no 'forecast' (entry edited or damaged)" in out
    assert ("heldout-b: refused: the ledger entry its run.json names" in out
            and "is damaged: entry 1 has no 'forecast'" in out)
    entries = led.read()
    entries[1]["forecast"] = {"run": "heldout-b", "seed": 0}
    entries[0]["forecast"]["loss"] = "3.0"
    _rechain(led, entries, d / "runs")
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1
    assert "entry 0: the forecast's 'loss' has the wrong type or value (entry edited or damaged)" in out
    assert "entry 1: the forecast has no 'budget', 'flops', 'extrapolation', 'metric', 'loss'" in out


def test_check_exits_1_on_refused_rows(tmp_path, capsys):
    d = tmp_path / "suite"
    led = Ledger(d / "ledger.jsonl")
    spec = _spec("heldout-a")
    run = _start(d, spec, _register(led, spec))
    _finish(run)
    changed = json.loads((run / "run.json").read_text())
    changed["optimizer"]["lr"] = 0.03
    (run / "run.json").write_text(json.dumps(changed))
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1 and "heldout-a: refused: the run's spec differs from the registered one" in out
    (run / "run.json").write_text(json.dumps({**changed, "optimizer": spec.optimizer.to_dict()}))
    (run / "started.json").write_text(json.dumps({"started_at": "2020-01-01T00:00:00+00:00"}))
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1 and "heldout-a: refused: the run started before its forecast was registered" in out
    (run / "started.json").unlink()  # hiding the start time does not get a finished run scored
    code, out, _ = _cli(capsys, "check", d)
    assert code == 1 and "refused: the run has a summary.json but no readable started.json" in out


def test_recompute_without_saved_weights_is_refused(tmp_path, capsys):
    d, _ = _suite(tmp_path, names=("heldout-a",))
    code, out, _ = _cli(capsys, "check", d, "--recompute")
    assert code == 1
    assert ("heldout-a: refused: --recompute could not re-evaluate the run: run heldout-a has no saved weights "
            "(hf/config.json is missing): nothing to re-evaluate") in out
    code, _, err = _cli(capsys, "check", d, "--recompute", "--tolerance", "-1")
    assert code == 2 and "--tolerance must be a non-negative relative difference" in err


def test_recomputed_chain_forgery_is_caught_by_the_published_head(tmp_path, capsys):
    d, led = _suite(tmp_path)
    code, out, err = _cli(capsys, "ledger", "head", d)
    head = out.strip()
    assert code == 0 and head == led.head() and head.startswith("2:") and "--expect-head" in err
    code, out, _ = _cli(capsys, "ledger", "verify", d, "--expect-head", head)
    assert code == 0 and "extends the published head" in out
    entries = led.read()
    original = entries[1]["hash"]
    entries[1]["forecast"]["loss"] = LOSS  # the forecast "improved" after the result was known
    _rechain(led, entries, d / "runs")
    code, out, _ = _cli(capsys, "ledger", "verify", d)
    assert code == 0  # undetectable without an anchor
    code, out, _ = _cli(capsys, "ledger", "verify", d, "--expect-head", head)
    assert code == 1
    assert out.strip() == (f"ledger FAILS (ledger.jsonl): entry 1 is {entries[1]['hash'][:12]}…, not the published "
                           f"head 2:{original[:12]}…: the ledger was rewritten after that head was published")
    code, out, _ = _cli(capsys, "check", d, "--expect-head", head)
    assert code == 1 and "the ledger was rewritten after that head was published" in out
    code, out, _ = _cli(capsys, "ledger", "verify", d, "--expect-head", original)  # a bare hash works too
    assert code == 1 and f"the published head {original[:12]}… is not in the ledger" in out
    code, _, err = _cli(capsys, "ledger", "verify", d, "--expect-head", "2:xyz")
    assert code == 2 and "published head '2:xyz' is not COUNT:HASH" in err


def test_head_of_an_empty_or_broken_ledger_is_refused(tmp_path, capsys):
    led = Ledger(tmp_path / "ledger.jsonl")
    led.path.write_text("")
    code, _, err = _cli(capsys, "ledger", "head", tmp_path)
    assert code == 2 and "has no entries yet: register a forecast" in err
    code, out, _ = _cli(capsys, "ledger", "verify", tmp_path)
    assert code == 0 and "0 entries" in out  # nothing references it and nothing anchors it
    _filled(tmp_path, 2)
    led.head_path.unlink()
    code, _, err = _cli(capsys, "ledger", "head", tmp_path)
    assert code == 2 and "fails verification" in err and "ledger.jsonl.head is missing" in err


needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")


def _key(tmp_path, name="key", comment="alice@example.org"):
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True)
    return key


@needs_ssh_keygen
def test_signatures_catch_a_recomputed_chain(tmp_path, capsys):
    d, led = _suite(tmp_path)
    key = _key(tmp_path)
    code, out, _ = _cli(capsys, "ledger", "sign", d, "--key", key)
    assert code == 0 and "signed entries 0–1" in out
    line = out.strip().splitlines()[-1].removeprefix("allowed-signers line for verifiers: ")
    assert line.startswith("alice@example.org ssh-ed25519 ")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(line + "\n")
    code, out, _ = _cli(capsys, "ledger", "verify", d, "--allowed-signers", allowed)
    assert code == 0 and "signatures verified against allowed_signers" in out
    code, out, _ = _cli(capsys, "ledger", "sign", d, "--key", key)
    assert code == 0 and "every entry is already signed" in out
    code, out, _ = _cli(capsys, "check", d, "--allowed-signers", allowed)
    assert code == 0, out

    # a new, unsigned entry: the chain is intact, but the tail is not covered
    spec = _spec("heldout-c")
    _finish(_start(d, spec, _register(led, spec)))
    code, out, _ = _cli(capsys, "ledger", "verify", d, "--allowed-signers", allowed)
    assert code == 1 and out.strip() == ("ledger FAILS (ledger.jsonl): entry 2 not signed: sign them with "
                                         "`delphi ledger sign DIR --key KEY`")
    _cli(capsys, "ledger", "sign", d, "--key", key)

    # the forger rewrites entry 1 and recomputes the chain
    entries = led.read()
    signed_as = entries[1]["hash"]
    entries[1]["forecast"]["loss"] = LOSS
    _rechain(led, entries, d / "runs")
    code, out, _ = _cli(capsys, "ledger", "verify", led.path, "--allowed-signers", allowed)
    assert code == 1
    assert (f"ledger FAILS (ledger.jsonl): entry 1 was signed as {signed_as[:12]}…, the ledger's entry 1 is "
            f"{entries[1]['hash'][:12]}…: the ledger was rewritten after it was signed") in out
    # ... and signs the forged chain with a key of their own after deleting the real signatures
    led.sig_path.unlink()
    code, out, _ = _cli(capsys, "ledger", "verify", led.path, "--allowed-signers", allowed)
    assert code == 1 and "no signatures (ledger.jsonl.sig is missing or empty)" in out
    _cli(capsys, "ledger", "sign", d, "--key", _key(tmp_path, "mallory", "alice@example.org"))
    code, out, _ = _cli(capsys, "ledger", "verify", led.path, "--allowed-signers", allowed)
    assert code == 1
    assert ("entry 0: the signature of 'alice@example.org' does not verify against allowed_signers (forged, or "
            "signed with a key that file does not allow)") in out
    code, out, _ = _cli(capsys, "check", d, "--allowed-signers", allowed)
    assert code == 1 and "does not verify against allowed_signers" in out


@needs_ssh_keygen
def test_entries_are_signed_on_append_with_the_key_variable(tmp_path, monkeypatch):
    key = _key(tmp_path)
    monkeypatch.setenv("DELPHI_LEDGER_KEY", str(key))
    led = _filled(tmp_path, 2)
    assert [r["index"] for r in led.read_signatures()] == [0, 1]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.org {' '.join((tmp_path / 'key.pub').read_text().split()[:2])}\n")
    res = led.verify(allowed_signers=allowed)
    assert res.ok and res.signed == 2
    monkeypatch.setenv("DELPHI_LEDGER_KEY", str(tmp_path / "nope"))
    with pytest.raises(DelphiError, match="DELPHI_LEDGER_KEY=.*nope: no such private key"):
        led.append({"kind": "note"})
    assert len(led.read()) == 2  # nothing written


def test_signing_without_ssh_keygen_is_a_clear_error(tmp_path, capsys, monkeypatch):
    d, _ = _suite(tmp_path, names=("heldout-a",))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "key").write_text("not used")
    for args in (("ledger", "sign", d, "--key", tmp_path / "key"),
                 ("ledger", "verify", d, "--allowed-signers", tmp_path / "key")):
        code, _, err = _cli(capsys, *args)
        assert code == 2
        assert err.strip().endswith("ledger signatures need ssh-keygen (OpenSSH 8.1 or newer), which is not on "
                                    "PATH; install the OpenSSH client tools")


def test_ledger_without_trailing_newline_still_appends(tmp_path):
    led = _filled(tmp_path, 2)
    led.path.write_bytes(led.path.read_bytes().rstrip(b"\n"))
    assert led.verify().ok
    led.append({"kind": "note"})
    assert led.verify().ok and len(led.read()) == 3


def test_recompute_catches_a_summary_edited_together_with_its_metrics(tmp_path, capsys, monkeypatch):
    """The one test that trains: a 3-step run of a 2-layer model, re-evaluated from its saved weights."""
    import torch

    from delphi.sweep.executors import prepare_run_dir
    from delphi.train import train_run

    monkeypatch.setenv("DELPHI_THREADS", "1")
    threads = torch.get_num_threads()
    d = tmp_path / "suite"
    led = Ledger(d / "ledger.jsonl")
    spec = _spec("heldout-a")
    entry = _register(led, spec, loss=8.0)
    tagged = RunSpec.from_dict({**spec.to_dict(), "tags": {**spec.tags, "ledger_entry": entry["hash"]}})
    run = d / "runs" / spec.name
    prepare_run_dir(tagged, run)
    try:
        summary = train_run(tagged, run, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["status"] == "completed"
    code, out, _ = _cli(capsys, "check", d, "--recompute", "--json")
    assert code == 0, out
    (row,) = json.loads(out)["results"]
    assert row["status"] == "scored" and row["actual"] == summary["loss"]
    assert row["recomputed"] == pytest.approx(summary["loss"], rel=1e-5)

    # the loss edited everywhere a text editor reaches: summary.json, its eval record, metrics.jsonl
    forged = round(summary["loss"] * 0.97, 4)
    s = json.loads((run / "summary.json").read_text())
    s["loss"] = s["eval"]["macro_loss"] = forged
    (run / "summary.json").write_text(json.dumps(s))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r["kind"] == "eval":
            r["macro_loss"] = forged
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = _cli(capsys, "check", d)
    assert code == 0  # consistent files: only the weights can tell
    code, out, _ = _cli(capsys, "check", d, "--recompute")
    assert code == 1
    assert (f"heldout-a: refused: re-evaluating the saved weights gives loss {summary['loss']:.6g}, summary.json "
            f"says {forged:.6g} (") in out
    assert "the summary was edited or the weights replaced" in out
