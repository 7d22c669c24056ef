"""Parity with the real `transformers.Qwen3ForCausalLM`, in both directions, and export round trips."""

import json
from pathlib import Path

import pytest
import torch
import transformers

from delphi.config import ModelShape
from delphi.errors import DelphiError
from delphi.model import Qwen3, rope_inv_freq
from delphi.model.hf import export_hf, hf_config, load_hf, shape_from_hf_config

FIXTURES = Path(__file__).parent / "data" / "model"
TOL = 1e-4


def shape(**kw) -> ModelShape:
    base = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8, intermediate_size=64,
                vocab_size=61, seq_len=48)
    return ModelShape(**{**base, **kw})


SHAPES = {
    "mha-llama3": shape(),
    "gqa-plain-rope-eps1e-6": shape(num_kv_heads=2, rope_scaling=False, rms_norm_eps=1e-6, rope_theta=10000.0),
    "gqa1-headdim-ne-hidden": shape(hidden_size=24, num_heads=4, num_kv_heads=1, head_dim=16, num_layers=3),
    "llama3-custom": shape(num_kv_heads=2, rope_factor=4.0, rope_low_freq_factor=2.0, rope_high_freq_factor=8.0,
                           rope_original_max_position=64, rope_theta=1000.0),
    "tied": shape(tie_embeddings=True),
}
# > 2048 positions: Delphi's Llama-3 band (wavelengths 2048..8192) is exercised; dims kept tiny.
LONG = shape(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32,
             vocab_size=31, seq_len=2304)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight (norm gains included) so a swapped or misplaced tensor shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def hf_from_dir(path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(SHAPES) + ["long-2304"])
def test_ours_to_hf_parity(name, tmp_path):
    s = LONG if name == "long-2304" else SHAPES[name]
    torch.manual_seed(0)
    ours = randomized(Qwen3(s))
    export_hf(ours, None, tmp_path)
    hf = hf_from_dir(tmp_path)
    assert type(hf).__name__ == "Qwen3ForCausalLM"
    assert torch.equal(hf.model.rotary_emb.inv_freq, rope_inv_freq(s))
    assert hf.model.rotary_emb.rope_type == ("llama3" if s.rope_scaling else "default")
    batch = 1 if s is LONG else 2
    ids = torch.randint(0, s.vocab_size, (batch, s.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = hf(ids).logits, ours(ids)
    assert ref.shape == got.shape == (batch, s.seq_len, s.vocab_size)
    assert max_diff(ref, got) <= TOL
    assert ref.abs().max() > 0.5  # the comparison is not between near-zero tensors


def test_long_sequence_depends_on_llama3_scaling():
    """Guard that the long parity case can fail: plain RoPE on the same weights gives other logits."""
    torch.manual_seed(0)
    scaled = randomized(Qwen3(LONG))
    plain = Qwen3(shape(**{**LONG.to_dict(), "rope_scaling": False}))
    plain.load_state_dict(scaled.state_dict())
    ids = torch.randint(0, LONG.vocab_size, (1, LONG.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_diff(scaled(ids)[:, 2048:], plain(ids)[:, 2048:]) > 100 * TOL


@pytest.mark.parametrize("name", ["mha-llama3", "gqa-plain-rope-eps1e-6", "tied"])
@pytest.mark.parametrize("sharded", [False, True])
def test_hf_to_ours_parity(name, sharded, tmp_path):
    s = SHAPES[name]
    cfg = transformers.Qwen3Config(**{k: v for k, v in hf_config(s).items()
                                      if k not in ("architectures", "model_type", "rope_scaling", "rope_theta")})
    torch.manual_seed(0)
    hf = randomized(transformers.Qwen3ForCausalLM(cfg), seed=2)
    hf.save_pretrained(str(tmp_path), max_shard_size="8KB" if sharded else "1GB")
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    ours = load_hf(tmp_path)
    assert ours.shape == s
    ids = torch.randint(0, s.vocab_size, (2, s.seq_len), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_diff(hf(ids).logits, ours(ids)) <= TOL
    if s.tie_embeddings:
        assert ours.lm_head.weight is ours.embed_tokens.weight


def test_config_json_fields(tmp_path):
    s = SHAPES["mha-llama3"]
    export_hf(Qwen3(s), None, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert cfg["head_dim"] == 8 and cfg["rms_norm_eps"] == 1e-5
    assert cfg["tie_word_embeddings"] is False and cfg["attention_bias"] is False
    assert cfg["rope_theta"] == 500000.0
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    assert cfg["rope_scaling"] == llama3  # transformers 4.x
    assert cfg["rope_parameters"] == {**llama3, "rope_theta": 500000.0}  # transformers 5.x
    assert cfg["max_position_embeddings"] == s.seq_len and cfg["dtype"] == "float32"
    plain = hf_config(SHAPES["gqa-plain-rope-eps1e-6"])
    assert plain["rope_scaling"] is None and plain["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}


@pytest.mark.parametrize("shard", [None, 6000])
def test_round_trip_is_bit_identical(shard, tmp_path):
    torch.manual_seed(0)
    model = randomized(Qwen3(SHAPES["gqa1-headdim-ne-hidden"]))
    first, second = tmp_path / "a", tmp_path / "b"
    export_hf(model, None, first, max_shard_size=shard)
    export_hf(load_hf(first), None, second, max_shard_size=shard)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    assert ("model.safetensors.index.json" in files) == (shard is not None)
    for f in files:
        assert (first / f).read_bytes() == (second / f).read_bytes(), f


def test_export_unwraps_torch_compile(tmp_path):
    torch.manual_seed(0)
    model = randomized(Qwen3(SHAPES["mha-llama3"]))
    export_hf(model, None, tmp_path / "raw")
    export_hf(torch.compile(model), None, tmp_path / "compiled")  # wrapper only; nothing is compiled
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "raw" / f).read_bytes() == (tmp_path / "compiled" / f).read_bytes()
    with pytest.raises(DelphiError, match="expected a delphi.model.Qwen3"):
        export_hf(torch.nn.Linear(2, 2), None, tmp_path / "bad")


def test_bf16_export_round_trip_and_reexport_cleans_old_shards(tmp_path):
    torch.manual_seed(0)
    model = randomized(Qwen3(SHAPES["mha-llama3"]))
    export_hf(model, None, tmp_path, max_shard_size=6000)
    export_hf(model, None, tmp_path, dtype="bfloat16")  # replaces the sharded fp32 export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    back = load_hf(tmp_path, dtype=torch.bfloat16)
    assert back.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(back.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))
    ids = torch.randint(0, 61, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model(ids), back(ids)
    assert out.dtype == torch.bfloat16 and max_diff(out.float(), ref) < 0.05 * ref.abs().max().item()
    again = tmp_path / "again"
    export_hf(back, None, again)
    assert (again / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_export_with_tokenizer(tmp_path):
    from delphi.data.tokenizers import load_tokenizer

    tok = load_tokenizer("embedded-bpe")
    s = shape(vocab_size=tok.vocab_size)
    export_hf(Qwen3(s), tok, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["eos_token_id"] == tok.eos_id
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "def f(x):\n    return x ** 2  # square"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    hf_from_dir(tmp_path)


def test_transformers_457_checkpoint_loads(tmp_path):
    """A sharded checkpoint written by transformers 4.57.6 (rope_scaling/rope_theta layout, GQA, llama3
    scaling): our logits equal the ones 4.57 computed when it wrote the checkpoint, and the installed
    transformers agrees."""
    src = FIXTURES / "qwen3_tiny_tf457"
    expected = json.loads((src / "expected_logits.json").read_text())
    ours = load_hf(src)
    assert ours.shape.num_kv_heads == 2 and ours.shape.rope_factor == 4.0 and ours.shape.rope_theta == 10000.0
    assert rope_inv_freq(ours.shape).tolist() == expected["inv_freq"]
    ids = torch.tensor([expected["input_ids"]])
    with torch.no_grad():
        logits = ours(ids)[0]
        current = hf_from_dir(src)(ids).logits[0]
    for t, row in expected["logits_rows"].items():
        assert max_diff(logits[int(t)], torch.tensor(row)) <= TOL
    assert max_diff(logits, current) <= TOL


# ---- errors ----------------------------------------------------------------------------------

def test_load_errors_are_one_line_delphi_errors(tmp_path):
    with pytest.raises(DelphiError, match="config.json not found"):
        load_hf(tmp_path / "nope")
    export_hf(Qwen3(SHAPES["mha-llama3"]), None, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())

    def with_cfg(**changes):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **changes}))

    with_cfg(model_type="llama")
    with pytest.raises(DelphiError, match="only 'qwen3'"):
        load_hf(tmp_path)
    with_cfg(rope_scaling={"rope_type": "yarn", "factor": 2.0}, rope_parameters=None)
    with pytest.raises(DelphiError, match="rope type 'yarn'"):
        load_hf(tmp_path)
    with_cfg(num_hidden_layers=3)
    with pytest.raises(DelphiError, match="missing: layers.2"):
        load_hf(tmp_path)
    with_cfg(intermediate_size=65)
    with pytest.raises(DelphiError, match=r"mlp\.\w+_proj\.weight has shape"):
        load_hf(tmp_path)
    with_cfg()
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(DelphiError, match="no model.safetensors"):
        load_hf(tmp_path)


def test_config_layouts_of_both_transformers_generations():
    s = SHAPES["llama3-custom"]
    full = hf_config(s)
    v4 = {k: v for k, v in full.items() if k != "rope_parameters"}
    v5 = {k: v for k, v in full.items() if k not in ("rope_scaling", "rope_theta")}
    assert shape_from_hf_config(v4) == s == shape_from_hf_config(v5)
    with pytest.raises(DelphiError, match="qk_norm"):
        hf_config(shape(qk_norm=False))
    with pytest.raises(DelphiError, match="lacks 'hidden_size'"):
        shape_from_hf_config({k: v for k, v in full.items() if k != "hidden_size"})
