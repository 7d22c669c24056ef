"""Model cards in the form of Delphi's released cards on Hugging Face.

Delphi's cards (e.g. `marin-community/delphi-1e22-9.7Bparams-160Btokens`) open with YAML front
matter, a one-line description, then a "Model details" table (architecture, parameters, widths,
heads, vocabulary, context, RoPE, bias, tying) and a "Training" table (compute, tokens, steps,
optimizer, recipe, schedule, precision). Ours keep that layout and add what the cards leave to the
blog post: both learning rates, β1, β2, ε, clipping, z-loss, data, seed, hardware and time, and the
run's final validation numbers.

Everything comes from the run's RunSpec (`run.json`) and `summary.json`; nothing is re-measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from delphi import fmt
from delphi.config import RunSpec

_OPTIMIZERS = {
    "adamh": "AdamH (Adam with Hyperball) on linear weights; Adam on embeddings and norms",
    "adamw": "AdamW",
    "adamc": "Cautious AdamC",
}
_TOKENIZERS = {"llama3": "Llama 3 tokenizer", "embedded-bpe": "embedded byte-level BPE tokenizer"}


@dataclass(frozen=True)
class ModelCard:
    """A model card as data (so the HTML report can render the same rows) and as Markdown."""

    title: str  # Delphi-style display name, e.g. delphi-9e18-358Mparams-4.7Btokens
    run: str  # the run's directory name
    summary_line: str
    details: list[tuple[str, str]]
    training: list[tuple[str, str]]
    evaluation: list[tuple[str, str]] = field(default_factory=list)
    tags: tuple[str, ...] = ("delphi", "scaling-laws", "pretrained", "research-only")

    def to_markdown(self, *, front_matter: bool = True, heading_level: int = 1) -> str:
        h = "#" * heading_level
        out: list[str] = []
        if front_matter:
            out += ["---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation",
                    "tags:", *[f"- {t}" for t in self.tags], "---", ""]
        out += [f"{h} {self.title}", "", self.summary_line, ""]
        for title, rows in (("Model details", self.details), ("Training", self.training),
                            ("Evaluation", self.evaluation)):
            if not rows:
                continue
            out += [f"{h}# {title}", "", "| | |", "|---|---|"]
            out += [f"| {_md(k)} | {_md(v)} |" for k, v in rows]
            out.append("")
        if front_matter:
            out += [f"{h}# Usage", "", "```python",
                    "from transformers import AutoModelForCausalLM, AutoTokenizer",
                    "",
                    'model = AutoModelForCausalLM.from_pretrained(".")  # this directory',
                    'tokenizer = AutoTokenizer.from_pretrained(".")',
                    "```", ""]
        return "\n".join(out)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def card_title(spec: RunSpec, summary: dict | None = None) -> str:
    """Delphi's naming: delphi-<budget>-<params>params-<tokens>tokens[-seed<k>]."""
    s = summary or {}
    budget = spec.budget if spec.budget is not None else fmt.num(s.get("flops")) or spec.flops
    tokens = fmt.num(s.get("tokens")) or spec.tokens
    params = fmt.num(s.get("params")) or spec.shape.num_params
    title = f"delphi-{fmt.budget_tag(budget)}-{fmt.short(params)}params-{fmt.short(tokens)}tokens"
    return title + (f"-seed{spec.seed}" if spec.seed else "")


def _details(spec: RunSpec, params: int) -> list[tuple[str, str]]:
    """The model: architecture, sizes, vocabulary, position encoding."""
    shape = spec.shape
    arch = ["pre-norm decoder", "RMSNorm", "RoPE"]
    if shape.qk_norm:
        arch.append("QK-norm with learned scaling")
    arch.append("SwiGLU MLPs")
    if shape.num_kv_heads == shape.num_heads:
        kv = f"{shape.num_kv_heads} (no GQA)"
    else:
        kv = f"{shape.num_kv_heads} (GQA, {shape.num_heads // shape.num_kv_heads} query heads per KV head)"
    ratio = shape.intermediate_size / shape.hidden_size
    ratio_text = f"{ratio:g}" if ratio == int(ratio) else f"{ratio:.2f}"
    tok_name = spec.data.tokenizer
    tok_text = _TOKENIZERS.get(tok_name, f"tokenizer {tok_name}")
    rope = f"RoPE (θ = {shape.rope_theta:g}"
    rope += ", Llama 3-style scaling)" if shape.rope_scaling else ", no frequency scaling)"
    return [
        ("Architecture", f"Qwen 3 ({', '.join(arch)})"),
        ("Parameters", f"{params:,}"),
        ("Non-embedding parameters", f"{shape.num_non_embedding_params:,}"),
        ("Hidden size", str(shape.hidden_size)),
        ("Layers", str(shape.num_layers)),
        ("Attention heads", str(shape.num_heads)),
        ("KV heads", kv),
        ("Head dim", str(shape.head_dim)),
        ("FFN intermediate", f"{shape.intermediate_size} (MLP ratio {ratio_text})"),
        ("Vocab size", f"{shape.vocab_size:,} ({tok_text})"),
        ("Max sequence length", str(shape.seq_len)),
        ("Position encoding", rope),
        ("Normalisation", f"RMSNorm (ε = {shape.rms_norm_eps:g})"),
        ("Bias terms", "None"),
        ("Tied embeddings", "Yes" if shape.tie_embeddings else "No"),
    ]


def _training(spec: RunSpec, s: dict, params: int, tokens: int, flops: float) -> list[tuple[str, str]]:
    """How it was trained: compute, tokens, batch, optimizer and schedule, data, where and how long."""
    shape, opt = spec.shape, spec.optimizer
    compute = f"{fmt.pretty_flops(flops)} FLOPs (C = 3 · FLOPs/token · tokens)"
    if spec.budget is not None and abs(flops / spec.budget - 1) > 0.005:
        compute += f"; IsoFLOP budget {fmt.pretty_flops(spec.budget)}"
    batch_tokens = spec.batch_size * shape.seq_len
    training = [
        ("Compute", compute),
        ("Tokens", f"{tokens:,}"),
        ("Tokens per parameter", f"{tokens / params:.3g}"),
        ("Batch size", f"{spec.batch_size} sequences × {shape.seq_len} tokens = {batch_tokens:,} tokens"),
        ("Steps", f"{spec.train_steps:,}"),
        ("Sequence length", str(shape.seq_len)),
        ("Optimizer", _OPTIMIZERS.get(opt.name, opt.name)),
        ("Recipe", spec.recipe or "none (hand-written RunSpec)"),
    ]
    if opt.name == "adamh":
        training += [("Peak LR (AdamH, linear weights)", f"{opt.lr:.4g}"),
                     ("Peak LR (Adam, embeddings and norms)", f"{opt.adam_lr:.4g}")]
    else:
        training.append(("Peak LR", f"{opt.lr:.4g}"))
    floor = "0 floor" if opt.min_lr_ratio == 0 else f"floor {opt.min_lr_ratio:g} × peak"
    clip = f"{opt.max_grad_norm:g} (global norm" + (", per parameter group)" if opt.name == "adamh" else ")")
    training += [
        ("LR schedule", f"WSD: {opt.warmup_fraction:.0%} linear warmup, {opt.decay_fraction:.0%} linear decay, {floor}"),
        ("β1", f"{opt.beta1:g}"),
        ("β2", f"{opt.beta2:.6g}"),
        ("ε", f"{opt.epsilon:.3g}"),
        ("Weight decay", "None" if opt.weight_decay == 0 else f"{opt.weight_decay:g}"),
        ("Gradient clipping", clip),
        ("z-loss weight", "None" if opt.z_loss_weight == 0 else f"{opt.z_loss_weight:g}"),
        ("Data", f"mixture {spec.data.mixture!r}"
                 + (", cross-document attention masked" if spec.data.block_cross_document_attention else "")),
        ("Seed", str(spec.seed)),
        ("Precision", str(s.get("precision") or spec.precision)),
    ]
    hw = _hardware_and_time(s)
    if hw is not None:
        training.append(("Hardware / time", hw))
    code = s.get("code_version")
    if code:
        training.append(("Code version", str(code)))
    return training


def _hardware_and_time(s: dict) -> str | None:
    """Where the run trained and for how long, from its summary (None when it records neither).
    The trainer records processes and threads; a device name only when it writes one."""
    where = [str(s[k]) for k in ("hardware", "device") if s.get(k)][:1]
    ws, threads = fmt.num(s.get("world_size")), fmt.num(s.get("threads"))
    if ws is not None:
        where.append(f"{int(ws)} process" + ("es" if ws > 1 else ""))
    if threads is not None:
        where.append(f"{int(threads)} thread" + ("s" if threads > 1 else ""))
    wall = fmt.num(s.get("wall_time_s"))
    if not where and wall is None:
        return None
    hw = ", ".join(where) if where else "hardware not recorded"
    if wall is not None:
        hw += f", {fmt.duration(wall)}"
    tps = fmt.num(s.get("tokens_per_s"))
    if tps is not None:
        hw += f" ({tps:,.0f} tokens/s"
        mfu = fmt.num(s.get("mfu"))
        hw += f", MFU {mfu:.1%})" if mfu is not None else ")"
    return hw


def _evaluation(s: dict) -> list[tuple[str, str]]:
    """The run's status when it did not complete, its validation losses and final train loss."""
    evaluation: list[tuple[str, str]] = []
    status = s.get("status")
    if status and status != "completed":
        evaluation.append(("Status", f"{status}" + (f": {s.get('reason')}" if s.get("reason") else "")))
    ev = s.get("eval") or {}
    macro_loss = fmt.num(ev.get("macro_loss", s.get("loss")))
    macro_bpb = fmt.num(ev.get("macro_bpb", s.get("bpb")))
    if macro_loss is not None:
        evaluation.append(("Validation loss (macro, nats/token)", f"{macro_loss:.4f}"))
    if macro_bpb is not None:
        evaluation.append(("Validation bits per byte (macro)", f"{macro_bpb:.4f}"))
    for dom, d in sorted((ev.get("domains") or {}).items()):
        if isinstance(d, dict) and fmt.num(d.get("loss")) is not None:
            bpb = fmt.num(d.get("bpb"))
            evaluation.append((f"Validation {dom}", f"loss {float(d['loss']):.4f}"
                               + (f", {bpb:.4f} bits/byte" if bpb is not None else "")))
    ftl = fmt.num(s.get("final_train_loss"))
    if ftl is not None:
        evaluation.append(("Final train loss", f"{ftl:.4f}"))
    return evaluation


def model_card(spec: RunSpec, summary: dict | None = None, *, suite: str | None = None,
               role: str | None = None) -> ModelCard:
    """The card of one trained run. `summary` (summary.json) adds measured numbers when given."""
    s = summary or {}
    params = int(fmt.num(s.get("params")) or spec.shape.num_params)
    tokens = int(fmt.num(s.get("tokens")) or spec.tokens)
    flops = fmt.num(s.get("flops")) or spec.flops
    where = f"the **{suite}** scaling suite" if suite else "a Delphi-style scaling suite"
    kind = " It is a held-out run, trained to check a pre-registered loss forecast." if role == "heldout" else ""
    line = (f"A {fmt.short(params)}-parameter base model from {where}, trained at {fmt.pretty_flops(flops)} FLOPs "
            f"on {fmt.short(tokens)} tokens with the {spec.recipe or 'given'} recipe (run `{spec.name}`).{kind}")
    return ModelCard(title=card_title(spec, s), run=spec.name, summary_line=line, details=_details(spec, params),
                     training=_training(spec, s, params, tokens, flops), evaluation=_evaluation(s))


def write_model_card(card: ModelCard, hf_dir: str | Path) -> Path:
    """Write `README.md` (the Hugging Face model card) into an exported model directory."""
    path = Path(hf_dir) / "README.md"
    path.write_text(card.to_markdown(front_matter=True))
    return path


__all__ = ["ModelCard", "card_title", "model_card", "write_model_card"]
