"""The pre-registration ledger catches every edit, removal and reordering."""

import json
import subprocess
import sys

import pytest

from delphi.errors import DelphiError
from delphi.forecast.ledger import Ledger, entry_hash


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
