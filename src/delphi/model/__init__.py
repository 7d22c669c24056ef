"""Delphi's Qwen3 decoder (`qwen3.py`) and its Hugging Face interop (`hf.py`).

    from delphi.model import Qwen3, describe
    model = Qwen3(shape)                      # Delphi init; torch.manual_seed first for determinism
    logits = model(input_ids, document_ids)   # [B, T, V]
    describe(shape)["params"]                 # counted on the meta device, nothing allocated

`delphi.model.hf` (imported lazily, it pulls in safetensors): `export_hf(model, tokenizer, out_dir)`
and `load_hf(dir) -> Qwen3`.
"""

from delphi.model.qwen3 import Qwen3, RMSNorm, describe, rope_inv_freq

__all__ = ["Qwen3", "RMSNorm", "describe", "rope_inv_freq"]
