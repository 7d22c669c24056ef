# Ours -> export_hf -> transformers 4.57 AutoModelForCausalLM: logits and inv_freq must match.
import sys, json, tempfile, torch, transformers
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src"))
from delphi.config import ModelShape
from delphi.model import Qwen3, rope_inv_freq
from delphi.model.hf import export_hf
print("transformers", transformers.__version__)
for kw in [dict(num_heads=4, num_kv_heads=4, rope_scaling=True), dict(num_heads=4, num_kv_heads=2, rope_scaling=False),
           dict(num_heads=4, num_kv_heads=1, rope_scaling=True, seq_len=2304)]:
    shape = ModelShape(**{**dict(hidden_size=32, num_layers=2, head_dim=8, intermediate_size=64, vocab_size=64, seq_len=128), **kw})
    torch.manual_seed(0); m = Qwen3(shape)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.1)
    d = tempfile.mkdtemp(); export_hf(m, None, d)
    hf = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    ids = torch.randint(0, 64, (2, shape.seq_len))
    with torch.no_grad(): diff = (hf(ids).logits - m(ids)).abs().max().item()
    print(kw, "rope", hf.model.rotary_emb.rope_type, "inv_freq equal", torch.equal(hf.model.rotary_emb.inv_freq, rope_inv_freq(shape)), "max|dlogits|", diff)
