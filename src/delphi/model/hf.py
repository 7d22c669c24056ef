"""Hugging Face interop: write our Qwen3 as a `transformers` checkpoint, and read any Qwen3 one.

    export_hf(model, tokenizer, out_dir)   # config.json + model.safetensors (+ tokenizer files)
    model = load_hf(dir)                   # single-file or sharded safetensors (or pytorch_model.bin)

Our parameter names are HF's minus the `model.` prefix (the LM head keeps its name), so the
conversion is a renaming; no tensor is permuted. The written `config.json` loads with both
transformers 4.57 and 5.x: 4.x reads `rope_theta` + `rope_scaling`, 5.x reads `rope_parameters`
(and lets a legacy `rope_scaling` take precedence), so all three are written and agree.

Export is deterministic (sorted JSON, fixed shard order), so export -> load_hf -> export gives
byte-identical files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from delphi.config import ModelShape
from delphi.errors import DelphiError
from delphi.model.qwen3 import Qwen3

__all__ = ["export_hf", "load_hf", "hf_config", "shape_from_hf_config", "to_hf_state_dict"]

CONFIG_NAME = "config.json"
SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
        return _DTYPES[value.removeprefix("torch.")]
    raise DelphiError(f"unsupported dtype {value!r}; use float32, bfloat16 or float16")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- config ----------------------------------------------------------------------------------

def hf_config(shape: ModelShape, *, dtype: torch.dtype = torch.float32, bos_token_id: int | None = None,
              eos_token_id: int | None = None) -> dict:
    """The `config.json` dict of a `Qwen3ForCausalLM` with this shape."""
    if not shape.qk_norm:
        raise DelphiError("HF export: Qwen3 checkpoints always have QK-norm; this model was built with qk_norm=False")
    rope: dict = {"rope_type": "default"}
    if shape.rope_scaling:
        rope = {
            "rope_type": "llama3",
            "factor": float(shape.rope_factor),
            "low_freq_factor": float(shape.rope_low_freq_factor),
            "high_freq_factor": float(shape.rope_high_freq_factor),
            "original_max_position_embeddings": int(shape.rope_original_max_position),
        }
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.seq_len,  # the trained context
        "rms_norm_eps": shape.rms_norm_eps,
        # transformers 4.x: rope_theta + rope_scaling (null for plain RoPE);
        # transformers 5.x: rope_parameters (theta inside).
        "rope_theta": float(shape.rope_theta),
        "rope_scaling": dict(rope) if shape.rope_scaling else None,
        "rope_parameters": {**rope, "rope_theta": float(shape.rope_theta)},
        "tie_word_embeddings": bool(shape.tie_embeddings),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": shape.num_layers,
        "layer_types": ["full_attention"] * shape.num_layers,
        # Written for HF's own init of *new* models only; Delphi's init does not use it.
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "dtype": _dtype_name(dtype),
    }


def shape_from_hf_config(cfg: dict, *, seq_len: int | None = None) -> ModelShape:
    """A `ModelShape` from a Qwen3 `config.json` dict (transformers 4.x or 5.x layout)."""
    if cfg.get("model_type") != "qwen3":
        raise DelphiError(f"HF checkpoint: model_type is {cfg.get('model_type')!r}; only 'qwen3' checkpoints can be loaded")
    if cfg.get("attention_bias"):
        raise DelphiError("HF checkpoint: attention_bias=true is not supported (Delphi's Qwen3 has no biases)")
    if cfg.get("use_sliding_window"):
        raise DelphiError("HF checkpoint: sliding-window attention is not supported; set use_sliding_window=false")
    if cfg.get("hidden_act", "silu") != "silu":
        raise DelphiError(f"HF checkpoint: hidden_act {cfg.get('hidden_act')!r} is not supported (only silu)")
    try:
        H, n = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or n)
        # Same precedence as transformers 5.x: a legacy rope_scaling wins over rope_parameters.
        rope = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
        if any(isinstance(v, dict) for v in rope.values()):
            raise DelphiError("HF checkpoint: per-layer-type rope_parameters are not supported")
        theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = {}
        if rope_type == "llama3":
            scaling = dict(rope_scaling=True, rope_factor=float(rope["factor"]),
                           rope_low_freq_factor=float(rope["low_freq_factor"]),
                           rope_high_freq_factor=float(rope["high_freq_factor"]),
                           rope_original_max_position=int(rope["original_max_position_embeddings"]))
        elif rope_type == "default":
            scaling = dict(rope_scaling=False)
        else:
            raise DelphiError(f"HF checkpoint: rope type {rope_type!r} is not supported (only default and llama3)")
        return ModelShape(
            hidden_size=H,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=n,
            num_kv_heads=kv,
            head_dim=int(cfg.get("head_dim") or H // n),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            seq_len=int(seq_len or cfg.get("max_position_embeddings") or 4096),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qk_norm=True,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            **scaling,
        )
    except KeyError as e:
        raise DelphiError(f"HF checkpoint: config.json lacks {e.args[0]!r}") from None


# ---- export ----------------------------------------------------------------------------------

def _unwrap(model) -> Qwen3:
    # torch.compile wraps in `_orig_mod`, DDP in `.module`.
    for attr in ("_orig_mod", "module"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            model = getattr(model, attr)
    if not isinstance(model, Qwen3):
        raise DelphiError(f"HF export: expected a delphi.model.Qwen3, got {type(model).__name__}")
    return model


def to_hf_state_dict(model: Qwen3, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our weights under HF names, as contiguous CPU tensors (gathered if FSDP-sharded)."""
    model = _unwrap(model)
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.shape.tie_embeddings:
            continue  # HF stores a tied head once, as the embedding
        if hasattr(t, "full_tensor"):  # DTensor (FSDP2): gather the full weight
            t = t.full_tensor()
        t = t.detach().to("cpu", dtype=dtype or t.dtype).contiguous()
        out[name if name.startswith("lm_head.") else "model." + name] = t
    return out


def export_hf(model, tokenizer, out_dir, *, dtype=None, max_shard_size: int | None = None) -> Path:
    """Write `model` (and `tokenizer`, unless None) as a Hugging Face Qwen3 checkpoint in `out_dir`.

    `dtype`: storage dtype (default: the model's); `max_shard_size`: bytes per safetensors shard
    (default: one file). `AutoModelForCausalLM.from_pretrained(out_dir)` and, with a tokenizer,
    `AutoTokenizer.from_pretrained(out_dir)` then load it offline. Returns `out_dir` as a Path.
    """
    from safetensors.torch import save_file

    model = _unwrap(model)
    shape = model.shape
    store_dtype = _dtype(dtype) if dtype is not None else next(model.parameters()).dtype
    bos = eos = None
    if tokenizer is not None:
        if tokenizer.vocab_size > shape.vocab_size:
            raise DelphiError(f"HF export: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size "
                              f"is {shape.vocab_size}; export with the tokenizer the model was trained with")
        eos = getattr(tokenizer, "eos_id", None)
        bos = getattr(tokenizer, "bos_id", None)
    cfg = hf_config(shape, dtype=store_dtype, bos_token_id=bos, eos_token_id=eos)
    tensors = to_hf_state_dict(model, store_dtype)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Weights of an earlier export with a different sharding would confuse loaders.
    for p in out.iterdir():
        if p.name in (SAFE_SINGLE, SAFE_INDEX) or _SHARD_RE.match(p.name):
            p.unlink()

    meta = {"format": "pt"}
    shards = _shard(tensors, max_shard_size)
    if len(shards) == 1:
        save_file(shards[0], str(out / SAFE_SINGLE), metadata=meta)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata=meta)
            weight_map.update({k: fname for k in shard})
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                              "total_parameters": sum(t.numel() for t in tensors.values())},
                 "weight_map": dict(sorted(weight_map.items()))}
        (out / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_hf(out)
    return out


def _shard(tensors: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Greedy split in name order (embedding first, head last); a tensor is never split."""
    if not max_bytes:
        return [tensors]
    shards, current, size = [], {}, 0
    for name in sorted(tensors, key=_hf_order):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name]
        size += nbytes
    shards.append(current)
    return shards


def _hf_order(name: str):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if "embed_tokens" in name else 2, 0, name)


# ---- import ----------------------------------------------------------------------------------

def _read_tensors(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    if (path / SAFE_INDEX).exists() or (path / SAFE_SINGLE).exists():
        from safetensors import safe_open

        if (path / SAFE_INDEX).exists():
            files = sorted(set(_weight_map(path / SAFE_INDEX).values()))
        else:
            files = [SAFE_SINGLE]
        out = {}
        for fname in files:
            if not (path / fname).exists():
                raise DelphiError(f"HF checkpoint {path}: shard {fname} listed in the index is missing")
            with safe_open(str(path / fname), framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k).to(dtype)  # cast per tensor: peak memory ~ one copy
        return out
    if (path / BIN_INDEX).exists() or (path / BIN_SINGLE).exists():
        files = sorted(set(_weight_map(path / BIN_INDEX).values())) if (path / BIN_INDEX).exists() else [BIN_SINGLE]
        out = {}
        for fname in files:
            sd = torch.load(path / fname, map_location="cpu", weights_only=True)
            out.update({k: v.to(dtype) for k, v in sd.items()})
        return out
    raise DelphiError(f"HF checkpoint {path}: no model.safetensors, model.safetensors.index.json or "
                      f"pytorch_model.bin found")


def _weight_map(index_path: Path) -> dict[str, str]:
    try:
        return json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise DelphiError(f"HF checkpoint: {index_path} is not a valid index ({e})") from None


def load_hf(path, *, dtype=torch.float32, device="cpu", seq_len: int | None = None) -> Qwen3:
    """Build our Qwen3 from a local Hugging Face Qwen3 checkpoint directory.

    Reads `config.json` and the weights (sharded or single safetensors, or pytorch_model.bin),
    casting them to `dtype`. `seq_len` overrides the RoPE table length (default: the config's
    max_position_embeddings). Nothing is downloaded.
    """
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise DelphiError(f"HF checkpoint: {path / CONFIG_NAME} not found; pass a directory written by export_hf "
                          f"or save_pretrained")
    try:
        cfg = json.loads((path / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise DelphiError(f"HF checkpoint: {path / CONFIG_NAME} is not valid JSON ({e})") from None
    shape = shape_from_hf_config(cfg, seq_len=seq_len)
    dtype = _dtype(dtype)
    tensors = _read_tensors(path, dtype)

    state = {}
    for k, v in tensors.items():
        name = k.removeprefix("model.")
        if name == "lm_head.weight" and shape.tie_embeddings:
            continue
        if name.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some older exports saved; recomputed from the config
        state[name] = v
    with torch.device("meta"):
        model = Qwen3(shape)  # no memory and no init: the checkpoint provides every weight
    expected = set(model.state_dict())
    if shape.tie_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise DelphiError(f"HF checkpoint {path}: weights do not match config.json "
                          f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})")
    for name, v in state.items():
        want = model.get_parameter(name).shape
        if v.shape != want:
            raise DelphiError(f"HF checkpoint {path}: {name} has shape {tuple(v.shape)}, config.json implies {tuple(want)}")
    model.load_state_dict(state, strict=False, assign=True)
    if shape.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # The RoPE buffers are still on meta: materialise them on the target device, then fill.
    model.rope_cos = torch.empty(model.rope_cos.shape, device=device)
    model.rope_sin = torch.empty(model.rope_sin.shape, device=device)
    model.init_rope()
    return model.to(device)
