# Run with transformers 4.57.6 on PYTHONPATH=TF457_DIR (pip install --target TF457_DIR --no-deps transformers==4.57.6 "huggingface_hub<1" "tokenizers<0.23").
import json, sys, torch, transformers
from transformers import Qwen3Config, Qwen3ForCausalLM
assert transformers.__version__.startswith("4.57"), transformers.__version__
out = sys.argv[1]
torch.manual_seed(1234)
cfg = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 32},
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
m = Qwen3ForCausalLM(cfg).eval()
with torch.no_grad():
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.uniform_(0.5, 1.5)  # non-trivial norm gains, so swapped norms would show
m.save_pretrained(out, max_shard_size="40KB")
ids = torch.arange(96).remainder(64).view(1, 96)
with torch.no_grad():
    logits = m(ids).logits[0]
json.dump({"transformers_version": transformers.__version__, "input_ids": ids[0].tolist(),
           "logits_rows": {str(t): logits[t].tolist() for t in (0, 31, 95)},
           "inv_freq": m.model.rotary_emb.inv_freq.tolist()},
          open(f"{out}/expected_logits.json", "w"), indent=1)
print(sorted(__import__("os").listdir(out)))
