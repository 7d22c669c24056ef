"""A tiny randomly initialised Hugging Face causal LM (for tests, demos and cross-checks).

`make_tiny_hf_model(out_dir)` trains a small byte-level BPE on the committed eval subsets' text
(deterministic) and saves it with a randomly initialised `Qwen3ForCausalLM` in `out_dir`, which
`transformers.AutoModelForCausalLM.from_pretrained` and lm-eval's `HFLM` then load offline.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path


def _corpus() -> list[str]:
    from delphi.eval.sources import PACKAGE_DATA

    texts = []
    for name in ("arc_easy", "piqa", "lambada_openai", "winogrande"):
        with lzma.open(PACKAGE_DATA / f"{name}.jsonl.xz", "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                texts += [v for v in r.values() if isinstance(v, str)]
                texts += [c for c in r.get("choices", []) + r.get("context_options", []) if isinstance(c, str)]
    return texts


def make_tiny_hf_model(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 512, hidden_size: int = 64,
                       num_layers: int = 2, max_length: int = 2048) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                      head_dim=hidden_size // 4, max_position_embeddings=max_length, tie_word_embeddings=False,
                      eos_token_id=fast.eos_token_id, bos_token_id=None, pad_token_id=fast.pad_token_id)
    model = Qwen3ForCausalLM(cfg)
    # Larger-than-default init so the random model's predictions are far from uniform (a uniform
    # model would make every comparison trivially pass).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out_dir)
    return out_dir
