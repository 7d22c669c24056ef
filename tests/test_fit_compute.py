"""Compute definitions of the fits (`delphi.fit.compute`, `--compute`): total (default),
non-embedding, DeepSeek's M."""

import json

import numpy as np
import pandas as pd
import pytest

from delphi.cli import main
from delphi.config import ModelShape
from delphi.errors import DelphiError
from delphi.fit.compute import shape_compute, table_compute
from delphi.fit.isoflop import fit_isoflop

V, SEQ = 1024, 128


def shape(H: int, L: int = 2) -> ModelShape:
    return ModelShape(hidden_size=H, num_layers=L, num_heads=max(1, H // 16), num_kv_heads=max(1, H // 16),
                      head_dim=16, intermediate_size=4 * H, vocab_size=V, seq_len=SEQ)


def test_definitions_follow_the_shape_accounting():
    s, D = shape(64), 1e6
    total = shape_compute(s, D, "total")
    assert total == s.training_flops(D)
    # non-embedding: the LM head (2·H·V forward FLOPs per token, ×3 for training) removed
    assert shape_compute(s, D, "non-embedding") == pytest.approx(total - 6 * 64 * V * D)
    assert shape_compute(s, D, "deepseek-m") == pytest.approx((72 * 2 * 64 ** 2 + 12 * 2 * 64 * SEQ) * D)
    with pytest.raises(DelphiError, match="unknown compute definition 'flops'"):
        shape_compute(s, D, "flops")


@pytest.fixture(scope="module")
def table():
    """IsoFLOP buckets of shapes whose LM head is a large share of the compute."""
    rng = np.random.default_rng(0)
    rows = []
    for C in (1e11, 3e11, 1e12, 3e12, 1e13):
        for H in (16, 24, 32, 48, 64, 96, 128):
            s = shape(H)
            D = C / (3 * s.flops_per_token)
            N = s.num_params
            loss = 1.5 + 30 / N ** 0.3 + 60 / D ** 0.3 + rng.normal(0, 0.002)
            rows.append({"name": f"h{H}-{C:.0e}", "status": "completed", "budget": C, "flops": s.training_flops(D),
                         "params": N, "tokens": D, "loss": loss, "hidden_size": H, "num_layers": 2,
                         "vocab_size": V, "seq_len": SEQ})
    return pd.DataFrame(rows)


def test_total_is_the_planned_budget_and_others_the_optimal_shapes_compute(table):
    tot = fit_isoflop(table, "loss")
    assert tot.compute == "total"
    assert np.array_equal(tot.optima()["compute"], tot.optima()["flops"])  # unchanged default
    ne = fit_isoflop(table, "loss", compute="non-embedding")
    per_run = table_compute(table, "non-embedding")
    for b in ne.used:
        sel = table["budget"].to_numpy() == b.flops
        # the optimal shape's compute lies within the bucket's runs' range and below the total
        assert per_run[sel].min() <= b.optimal_compute <= per_run[sel].max()
        assert b.optimal_compute < b.flops
    # buckets, vertices and the allocation laws (planned budgets) are the same under any definition
    assert [b.optimal_loss for b in ne.used] == [b.optimal_loss for b in tot.used]
    assert ne.tokens_law.alpha == tot.tokens_law.alpha
    d = ne.to_dict()
    assert d["compute"] == "non-embedding" and "allocation_compute" in d
    assert {"runs_below_optimum", "runs_above_optimum", "optimal_compute"} <= set(d["buckets"][0])


def test_missing_shape_columns_are_one_clear_error(table):
    with pytest.raises(DelphiError, match="compute 'deepseek-m' needs the column\\(s\\) 'seq_len'"):
        fit_isoflop(table.drop(columns=["seq_len"]), "loss", compute="deepseek-m")


def test_cli_compute_option(table, tmp_path, capsys):
    p = tmp_path / "runs.csv"
    table.to_csv(p, index=False)
    assert main(["fit", "loss-law", str(p), "--compute", "deepseek-m", "--predict", "1e14", "--json",
                 "--bootstrap", "200"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["compute"] == "deepseek-m"
    dm = fit_isoflop(table, "loss", compute="deepseek-m").optima()["compute"]
    assert [pt["flops"] for pt in d["points"]] == pytest.approx(list(dm))
    assert main(["fit", "backtest", str(p), "--compute", "non-embedding", "--json", "--bootstrap", "100"]) == 0
    bt = json.loads(capsys.readouterr().out)
    assert bt["compute"] == "non-embedding" and bt["rows"]
    assert main(["fit", "isoflop", str(p), "--compute", "non-embedding"]) == 0
    assert "against non-embedding compute" in capsys.readouterr().out
    table.drop(columns=["vocab_size"]).to_csv(p, index=False)
    assert main(["fit", "isoflop", str(p), "--compute", "non-embedding"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'vocab_size'" in err
