"""The Delphi recipe against the published suite (model cards, run configs) and its own rules."""

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delphi.config import ModelShape
from delphi.recipe import DELPHI, DELPHI_ISOFLOP_BUDGETS, DELPHI_V1, Recipe, get_recipe
from delphi.errors import DelphiError
from delphi.recipe.presets import CPU, recipe_from_table

ALLOC_A, ALLOC_ALPHA = 0.026719627901911736, 0.5800829529762268


def test_released_1e22_model_is_reproduced_exactly():
    c = DELPHI.heldout(1e22, ALLOC_A, ALLOC_ALPHA, batch_size=1024)
    assert (c.shape.hidden_size, c.shape.num_layers, c.shape.num_heads) == (3840, 37, 30)
    assert c.shape.intermediate_size == 15360
    assert c.params == 9_714_698_752
    assert c.tokens == 160_369_213_440
    assert c.train_steps == 38_235
    assert c.batch_size == 1024


def test_9e18_grid_contains_the_669m_model_card():
    by_h = {c.shape.hidden_size: c for c in DELPHI.candidates(9e18)}
    c = by_h[1280]
    assert c.shape.num_layers == 13
    assert c.params == 669_160_448
    assert c.tokens == 2_336_227_328
    assert c.train_steps - 1 == 35_647  # the card prints the last step index


def test_isoflop_grid_has_78_runs():
    assert DELPHI.isoflop_budgets == (3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20)
    assert len(DELPHI.grid()) == 78


def test_published_3e18_d1024_hyperparameters():
    c = {c.shape.hidden_size: c for c in DELPHI.candidates(3e18)}[1024]
    assert c.batch_size == 8
    assert c.optimizer.lr == pytest.approx(0.00275999052746201, rel=1e-12)
    assert c.optimizer.adam_lr == pytest.approx(0.00033154735825338737, rel=1e-12)
    assert c.optimizer.epsilon == pytest.approx(3.6604122149949323e-08, rel=1e-12)
    assert c.name == "isoflop-3e+18-d1024-L11-B8-delphi"


def test_parameter_counts_match_model_cards_and_levanter():
    s = DELPHI.shape(640)
    assert s.num_layers == 7
    assert s.num_params == 210_054_272
    assert s.num_params_levanter == 210_052_480  # without the 2·128·L QK-norm weights


def test_flops_per_token_matches_levanter_example():
    s = DELPHI.shape(2560)
    assert s.num_layers == 26
    assert s.flops_per_token == 7_206_174_720


@pytest.mark.parametrize("hidden,layers", [(512, 6), (1024, 11), (1280, 13), (2560, 26), (3840, 37)])
def test_depth_formula(hidden, layers):
    assert DELPHI.depth(hidden) == layers == round(hidden / (64 + 4 * math.log2(hidden) - 9))


def test_width_step_grows_above_2e19():
    assert DELPHI.widths(1.8e19).step == 128
    assert DELPHI.widths(3e19).step == 256


def test_max_params_cap():
    assert DELPHI.max_params(3e18) == 12e9
    assert DELPHI.max_params(1.2e21) == pytest.approx(24e9)
    assert DELPHI.max_params(1e40) == 1e12


def test_heldout_picks_smallest_tokens_above_target_else_most_tokens():
    cands = DELPHI.candidates(1e21)
    target = 1e9  # below every candidate's tokens → smallest tokens
    c = DELPHI.heldout(1e21, target / 1e21**0.5, 0.5)
    assert c.tokens == min(x.tokens for x in cands)
    c = DELPHI.heldout(1e21, 1e30, 0.5)  # above all → most tokens
    assert c.tokens == max(x.tokens for x in cands)


def test_fixed_batch_recomputes_hyperparameters_from_candidate_tokens():
    c0 = DELPHI.heldout(1e22, ALLOC_A, ALLOC_ALPHA)
    c = DELPHI.heldout(1e22, ALLOC_A, ALLOC_ALPHA, batch_size=1024)
    ref = DELPHI.hyperparams(1024, c0.tokens, 3840)
    assert c.optimizer == ref
    assert c.name == "isoflop-1e+22-d3840-L37-B1024-delphi"


def test_batch_rule_halves_until_hyperparameters_in_bounds():
    for c in DELPHI.grid():
        B = c.batch_size
        assert B & (B - 1) == 0 and 8 <= B <= 8192
        if B > 8:  # halved until inside the bounds, so nothing was clipped to them
            assert c.optimizer.lr < 0.01 and c.optimizer.adam_lr < 0.01 and c.optimizer.beta2 > 0.9
        assert 0.9 <= c.optimizer.beta2 <= 0.9999
        assert c.optimizer.lr <= 0.01 and c.optimizer.adam_lr <= 0.01
        assert c.shape.num_params_levanter <= DELPHI.max_params(c.budget)
        assert c.target_tokens / c.shape.num_params_levanter <= 250
        assert c.tokens == c.batch_size * c.train_steps * 4096
        # rounding the steps moves the compute by at most half a step's worth
        assert abs(c.flops - c.budget) <= 3 * c.shape.flops_per_token * c.batch_size * 4096 / 2 + 1


def test_integer_batch_rounding_keeps_the_step_count_near_the_target():
    import dataclasses

    pow2 = dataclasses.replace(CPU, batch_rounding="power_of_two")
    whole = dataclasses.replace(CPU, batch_rounding="integer")
    budget = 6e11
    p_steps = [c.train_steps for c in pow2.candidates(budget)]
    w = whole.candidates(budget)
    # power-of-two batches put neighbouring widths up to 2× apart in steps ...
    assert max(p_steps) / min(p_steps) > 1.5
    # ... whole-sequence batches (not only powers of two) keep every run whose batch is above the
    # minimum within rounding of the target
    assert any(c.batch_size & (c.batch_size - 1) for c in w)
    for c in w:
        assert isinstance(c.batch_size, int) and c.batch_size >= whole.min_batch
        if c.batch_size > whole.min_batch:
            assert abs(c.train_steps / whole.target_steps - 1) < 0.5 / c.batch_size + 0.01
    # the same widths survive (no candidate is rejected by the rounding)
    assert [c.shape.hidden_size for c in w] == [c.shape.hidden_size for c in pow2.candidates(budget)]


def test_unknown_batch_rounding_is_a_user_error():
    import dataclasses

    with pytest.raises(DelphiError, match="batch_rounding must be one of"):
        dataclasses.replace(CPU, batch_rounding="nearest")
    with pytest.raises(DelphiError, match="batch_rounding must be like"):
        recipe_from_table({"preset": "cpu", "batch_rounding": 2})


def test_v1_recipe_rules():
    for c in DELPHI_V1.candidates(3e18):
        B, H = c.batch_size, c.shape.hidden_size
        assert c.optimizer.name == "adamc"
        assert c.optimizer.lr == pytest.approx(0.33 * math.sqrt(B) / H)
        assert c.optimizer.weight_decay == 0.1 and c.optimizer.beta1 == 0.95 and c.optimizer.epsilon == 1e-15
        assert c.optimizer.beta2 == pytest.approx(max(0.95, 0.98 ** (B / 128)))
        assert c.optimizer.max_grad_norm == 1.0
    # no tokens-per-parameter cap: the v1 grid keeps small, over-trained widths the AdamH grid drops
    assert len(DELPHI_V1.grid()) > len(DELPHI.grid())


def test_recipe_constants_are_replaceable():
    import dataclasses

    small = dataclasses.replace(DELPHI, name="small", seq_len=256, head_dim=32, vocab_size=4096, min_width=64,
                                width_step=32, target_steps=2**9, min_batch=4, ref_tokens=1e7, ref_batch=16,
                                isoflop_budgets=(1e13,))
    cands = small.candidates(1e13)
    assert cands and all(c.shape.seq_len == 256 and c.shape.head_dim == 32 for c in cands)


def test_bad_budgets_raise_user_errors():
    for bad in (0, -1, float("nan"), float("inf"), "x"):
        with pytest.raises(DelphiError):
            DELPHI.candidates(bad)
    with pytest.raises(DelphiError):
        get_recipe("nope")
    with pytest.raises(DelphiError):
        DELPHI.heldout(1e10, ALLOC_A, ALLOC_ALPHA)


# ---- accounting properties --------------------------------------------------------------------

shapes = st.builds(
    lambda H_heads, kv_div, d, I, V, s, L, tie, qk: ModelShape(
        hidden_size=H_heads * d, num_layers=L, num_heads=H_heads, num_kv_heads=H_heads // kv_div, head_dim=d,
        intermediate_size=I, vocab_size=V, seq_len=s, tie_embeddings=tie, qk_norm=qk),
    st.sampled_from([2, 4, 8]), st.sampled_from([1, 2]), st.sampled_from([16, 32, 64, 128]),
    st.integers(1, 5000), st.integers(2, 200_000), st.integers(1, 8192), st.integers(1, 96), st.booleans(),
    st.booleans())


@given(shapes)
@settings(max_examples=200, deadline=None)
def test_param_count_is_sum_of_matrices(s):
    H, n, kv, d, I, V, L = (s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim, s.intermediate_size,
                            s.vocab_size, s.num_layers)
    per_layer = H * n * d + H * kv * d * 2 + n * d * H + 3 * H * I + 2 * H + (2 * d if s.qk_norm else 0)
    total = L * per_layer + H + V * H * (1 if s.tie_embeddings else 2)
    assert s.num_params == total
    assert s.num_params - s.num_params_levanter == (2 * d * L if s.qk_norm else 0)


@given(shapes, st.integers(1, 10**12))
@settings(max_examples=200, deadline=None)
def test_flops_accounting(s, tokens):
    fpt = s.flops_per_token
    # the matmul part is at least 2 FLOPs per non-embedding weight, the attention part grows with s
    assert fpt >= 2 * (s.num_params_levanter - s.vocab_size * s.hidden_size * (1 if s.tie_embeddings else 2)
                       - (2 * s.num_layers + 1) * s.hidden_size) + 2 * s.hidden_size * s.vocab_size - 1
    assert s.training_flops(tokens) == pytest.approx(3 * fpt * tokens, rel=1e-15)
    longer = ModelShape(**{**s.to_dict(), "seq_len": s.seq_len + 1})
    assert longer.flops_per_token - fpt == s.num_layers * (4 * s.num_heads * s.head_dim + 3 * s.num_heads)


@given(st.floats(1e17, 1e24))
@settings(max_examples=60, deadline=None)
def test_candidates_spend_the_budget(budget):
    for c in DELPHI.candidates(budget):
        assert c.target_tokens == pytest.approx(budget / (3 * c.shape.flops_per_token))
        assert abs(c.tokens - c.target_tokens) <= c.batch_size * 4096 / 2 + 1


# ---- CLI contract ------------------------------------------------------------------------------

KEYS = {"name", "budget", "hidden_size", "num_layers", "num_heads", "params", "batch_size", "train_steps",
        "tokens", "learning_rate", "adam_lr", "epsilon", "beta1", "beta2", "max_grad_norm", "tokens_per_param",
        "flops"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "delphi.cli", *args], capture_output=True, text=True)


def test_cli_plan_json_contract():
    r = _cli("plan", "--budget", "3e18", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 5 and all(KEYS <= set(row) for row in rows)
    r = _cli("plan", "--budget", "1e22", "--alloc-a", str(ALLOC_A), "--alloc-alpha", str(ALLOC_ALPHA),
             "--batch-size", "1024", "--json")
    (row,) = json.loads(r.stdout)
    assert row["params"] == 9_714_698_752 and row["tokens"] == 160_369_213_440 and row["train_steps"] == 38_235
    assert row["flops"] == pytest.approx(3 * DELPHI.shape(3840).flops_per_token * 160_369_213_440)


@pytest.mark.parametrize("args", [["--budget", "0"], ["--budget", "abc"], ["--budget", "3e18", "--recipe", "x"],
                                  ["--budget", "1e10"], ["--budget", "-5"]])
def test_cli_plan_bad_input_is_one_line_exit_2(args):
    r = _cli("plan", *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
