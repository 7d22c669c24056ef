"""Loading runs tables: every format, exclusions, and the errors people will hit."""

import json

import pandas as pd
import pytest

from delphi.errors import DelphiError
from delphi.fit.runs_table import excluded_note, flatten_summary, load_runs_table


def summary(name, flops, params, tokens, loss, status="completed", budget=None):
    lv = float("nan") if loss is None else loss
    return {"name": name, "status": status, "reason": None if status == "completed" else "loss spiked",
            "budget": budget, "seed": 0, "recipe": "delphi", "hidden_size": 64, "num_layers": 2,
            "batch_size": 8, "train_steps": 100, "learning_rate": 0.01, "params": params, "tokens": tokens,
            "flops": flops, "loss": loss, "bpb": lv / 3,
            "eval": {"macro_loss": loss, "macro_bpb": lv / 3, "micro_loss": lv + 0.01, "micro_bpb": lv / 3,
                     "domains": {"prose": {"loss": lv - 0.1, "bpb": 1.0, "tokens": 100, "bytes": 400},
                                 "code": {"loss": lv + 0.1, "bpb": 0.8, "tokens": 100, "bytes": 300}}},
            "final_train_loss": loss, "wall_time_s": 1.0, "tokens_per_s": 1e4, "mfu": 0.1,
            "epochs": {"prose": 0.5, "code": 1.2}, "code_version": "abc", "tags": {"role": "isoflop"}}


RUNS = [summary("a", 1e15, 1e6, 1.6e8, 4.0, budget=1e15), summary("b", 1e15, 2e6, 8e7, 3.9, budget=1e15),
        summary("c", 1e15, 4e6, 4e7, 4.1, budget=1e15),
        summary("d", 1e15, 8e6, 2e7, float("nan"), status="diverged", budget=1e15),
        summary("e", 1e15, 8e6, 2e7, None, status="failed", budget=1e15)]


def test_suite_directory_flattens_summaries(tmp_path):
    for r in RUNS:
        (tmp_path / "runs" / r["name"]).mkdir(parents=True)
        (tmp_path / "runs" / r["name"] / "summary.json").write_text(json.dumps(r))
    df = load_runs_table(tmp_path)
    assert sorted(df["name"]) == ["a", "b", "c"]
    assert df.attrs["excluded"] == {"diverged": 1, "failed": 1}
    assert excluded_note(df) == "excluded 2 runs: 1 diverged, 1 failed"
    assert {"loss/prose", "bpb/code", "eval/micro_loss", "epochs/code", "tags/role"} <= set(df.columns)
    assert df.loc[df["name"] == "a", "loss/prose"].item() == pytest.approx(3.9)
    assert df["flops"].dtype == float and df["loss"].tolist() == [4.0, 3.9, 4.1]
    by_domain = load_runs_table(tmp_path, metric="bpb/code")
    assert by_domain["bpb/code"].tolist() == [0.8] * 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "json"])
def test_file_formats(tmp_path, fmt):
    rows = [flatten_summary(r) for r in RUNS]
    p = tmp_path / f"runs.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(p, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(p)
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in RUNS) + "\n")  # nested summaries, one a line
    else:
        p.write_text(json.dumps(rows))
    df = load_runs_table(p)
    assert sorted(df["name"]) == ["a", "b", "c"] and sum(df.attrs["excluded"].values()) == 2
    assert df["params"].tolist() == [1e6, 2e6, 4e6]


def test_flops_falls_back_to_budget(tmp_path):
    p = tmp_path / "runs.csv"
    pd.DataFrame({"budget": [1e18, 1e18, 3e18], "params": [1, 2, 3], "tokens": [4, 5, 6], "loss": [3, 2, 1]}).to_csv(p, index=False)
    assert load_runs_table(p)["flops"].tolist() == [1e18, 1e18, 3e18]
    pd.DataFrame({"budget": [1e18, 1e18], "flops": [1.01e18, None], "params": [1, 2], "tokens": [4, 5],
                  "loss": [3, 2]}).to_csv(p, index=False)
    assert load_runs_table(p)["flops"].tolist() == [1.01e18, 1e18]


@pytest.mark.parametrize("bad, message", [
    ({"drop": "tokens"}, "missing column(s) 'tokens'"),
    ({"drop": "flops"}, "missing column(s) 'flops' (flops may be given as 'budget')"),
    ({"set": ("loss", 2, "oops")}, "runs.csv: row 3 (line 4) (run c): column 'loss' is not a number ('oops')"),
    ({"set": ("loss", 1, float("inf"))}, "row 2 (line 3) (run b): column 'loss' is not a finite number (inf)"),
    ({"set": ("tokens", 0, None)}, "row 1 (line 2) (run a): column 'tokens' is missing"),
    ({"set": ("params", 1, -5)}, "row 2 (line 3) (run b): column 'params' must be positive, got -5.0"),
])
def test_errors_name_row_and_column(tmp_path, bad, message):
    df = pd.DataFrame([flatten_summary(r) for r in RUNS[:3]]).drop(columns=["budget"])
    if "drop" in bad:
        df = df.drop(columns=[bad["drop"]])
    else:
        col, i, v = bad["set"]
        df[col] = df[col].astype(object)
        df.loc[i, col] = v
    p = tmp_path / "runs.csv"
    df.to_csv(p, index=False)
    with pytest.raises(DelphiError) as e:
        load_runs_table(p)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_other_errors(tmp_path):
    with pytest.raises(DelphiError, match="does not exist"):
        load_runs_table(tmp_path / "nope.csv")
    with pytest.raises(DelphiError, match="no summary.json"):
        load_runs_table(tmp_path)
    (tmp_path / "runs.txt").write_text("x")
    with pytest.raises(DelphiError, match="unsupported file type"):
        load_runs_table(tmp_path / "runs.txt")
    (tmp_path / "runs.jsonl").write_text('{"flops": 1}\n{not json\n')
    with pytest.raises(DelphiError, match="line 2 is not valid JSON"):
        load_runs_table(tmp_path / "runs.jsonl")
    (tmp_path / "one.json").write_text('{\n  "buckets": []\n}\n')
    with pytest.raises(DelphiError, match="holds one JSON object"):
        load_runs_table(tmp_path / "one.json")
    p = tmp_path / "all_bad.csv"
    pd.DataFrame([flatten_summary(r) for r in RUNS[3:]]).to_csv(p, index=False)
    with pytest.raises(DelphiError, match="no completed runs.*1 diverged, 1 failed"):
        load_runs_table(p)
    p = tmp_path / "metric.csv"
    pd.DataFrame([flatten_summary(r) for r in RUNS[:3]]).to_csv(p, index=False)
    with pytest.raises(DelphiError, match="missing column.*'bpb/math'.*metric columns present: loss, bpb"):
        load_runs_table(p, metric="bpb/math")
    d = tmp_path / "suite" / "r1"
    d.mkdir(parents=True)
    (d / "summary.json").write_text("{broken")
    with pytest.raises(DelphiError, match="summary.json is not valid JSON"):
        load_runs_table(tmp_path / "suite")
