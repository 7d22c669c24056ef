"""Small frozen dataclasses shared across stages.

`ModelShape` is the architecture plus its exact parameter and FLOP accounting (pure Python, no
torch). `OptimizerHParams` holds everything the optimizer and schedule need. `RunSpec` fully
determines one training run and round-trips through JSON, so a run can be moved to another
machine by copying its `run.json`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from delphi.errors import DelphiError


@dataclass(frozen=True)
class ModelShape:
    """A Qwen3-style decoder's shape (Delphi: MHA, head dim 128, MLP 4H, untied, QK-norm)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    seq_len: int
    tie_embeddings: bool = False
    qk_norm: bool = True
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # Llama-3 RoPE frequency scaling (Delphi's defaults); rope_scaling=False gives plain RoPE.
    rope_scaling: bool = True
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "vocab_size", "seq_len"):
            if int(getattr(self, name)) <= 0:
                raise DelphiError(f"model shape: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_heads % self.num_kv_heads:
            raise DelphiError(
                f"model shape: num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    # ---- parameter accounting -------------------------------------------------------------
    def _layer_params_without_qk_norm(self) -> int:
        H, n, kv, d, I = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        attn = H * n * d + 2 * H * kv * d + n * d * H  # q, k, v, o
        mlp = 3 * H * I  # gate, up, down
        norms = 2 * H  # input and post-attention RMSNorm weights
        return attn + mlp + norms

    @property
    def num_params_levanter(self) -> int:
        """Parameter count without the QK-norm weights (Levanter's `total_trainable_params`)."""
        H, V = self.hidden_size, self.vocab_size
        embed = V * H if self.tie_embeddings else 2 * V * H
        return self.num_layers * self._layer_params_without_qk_norm() + H + embed

    @property
    def num_params(self) -> int:
        """Parameter count as Delphi's model cards print it (QK-norm weights included)."""
        qk = 2 * self.head_dim * self.num_layers if self.qk_norm else 0
        return self.num_params_levanter + qk

    @property
    def num_non_embedding_params(self) -> int:
        return self.num_params - self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    # ---- FLOP accounting (Levanter's lm_flops_per_token with glu=True) ---------------------
    @property
    def flops_per_token(self) -> int:
        """Forward FLOPs per token: attention over the full sequence, LM head in, embedding out."""
        H, L, n, kv, d = self.hidden_size, self.num_layers, self.num_heads, self.num_kv_heads, self.head_dim
        I, V, s = self.intermediate_size, self.vocab_size, self.seq_len
        mlp = 2 * 3 * H * I
        qkv = 2 * H * (n * d + 2 * kv * d)
        out = 2 * H * H
        attn = 4 * s * n * d + 3 * s * n
        return L * (mlp + qkv + out + attn) + 2 * H * V

    def training_flops(self, tokens: int | float) -> float:
        """C = 3 · (forward FLOPs per token) · tokens."""
        return float(3 * self.flops_per_token * tokens)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelShape":
        return _from_dict(cls, d, "model shape")


@dataclass(frozen=True)
class OptimizerHParams:
    """Optimizer + schedule settings of one run.

    `name`: "adamh" (Delphi: AdamH on linear weights, Adam on embeddings/norms), "adamw", or
    "adamc" (Cautious AdamC, Delphi's first attempt). `adam_lr` is the LR of the Adam group
    (embedding, norms) for adamh; ignored otherwise.
    """

    name: str = "adamh"
    lr: float = 0.0063
    adam_lr: float = 0.000656
    beta1: float = 0.9
    beta2: float = 0.9999
    epsilon: float = 1.85e-8
    max_grad_norm: float = 0.1
    weight_decay: float = 0.0
    z_loss_weight: float = 1e-7
    warmup_fraction: float = 0.1
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.name not in ("adamh", "adamw", "adamc"):
            raise DelphiError(f"optimizer: unknown name {self.name!r}; choose adamh, adamw or adamc")
        if not (0 <= self.warmup_fraction <= 1 and 0 <= self.decay_fraction <= 1
                and self.warmup_fraction + self.decay_fraction <= 1):
            raise DelphiError("optimizer: warmup_fraction and decay_fraction must be in [0, 1] and sum to at most 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OptimizerHParams":
        return _from_dict(cls, d, "optimizer")


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains on: a mixture (name of a built-in mixture, or a path to a mixture
    file) and a tokenizer (name of a built-in tokenizer, or a path to a tokenizer.json)."""

    mixture: str = "embedded"
    tokenizer: str = "embedded-bpe"
    block_cross_document_attention: bool = True
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return _from_dict(cls, d, "data")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run. Serialised as the run's `run.json`."""

    name: str
    shape: ModelShape
    optimizer: OptimizerHParams
    batch_size: int  # sequences per optimizer step (global)
    train_steps: int
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    budget: float | None = None  # the declared IsoFLOP budget this run belongs to, if any
    recipe: str | None = None
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    eval_windows_per_domain: int = 16  # validation windows (seq_len tokens each) per domain
    checkpoint_every: int = 0  # steps between checkpoints (0: only time-based and final)
    checkpoint_every_minutes: float = 10.0
    precision: str = "auto"  # "auto" | "fp32" | "bf16"
    compile: str = "auto"  # "auto" | "on" | "off"
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.batch_size <= 0 or self.train_steps <= 0:
            raise DelphiError(f"run {self.name}: batch_size and train_steps must be positive")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise DelphiError(f"run {self.name}: precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.compile not in ("auto", "on", "off"):
            raise DelphiError(f"run {self.name}: compile must be auto, on or off, got {self.compile!r}")

    @property
    def tokens(self) -> int:
        return self.batch_size * self.train_steps * self.shape.seq_len

    @property
    def flops(self) -> float:
        return self.shape.training_flops(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        try:
            d["shape"] = ModelShape.from_dict(d["shape"])
            d["optimizer"] = OptimizerHParams.from_dict(d["optimizer"])
            if "data" in d:
                d["data"] = DataSpec.from_dict(d["data"])
        except KeyError as e:
            raise DelphiError(f"run spec: missing field {e.args[0]!r}") from None
        return _from_dict(cls, d, "run spec")

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise DelphiError(f"run spec: not valid JSON ({e})") from None


def _from_dict(cls, d: dict[str, Any], what: str):
    if not isinstance(d, dict):
        raise DelphiError(f"{what}: expected an object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise DelphiError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    try:
        return cls(**d)
    except TypeError as e:
        raise DelphiError(f"{what}: {e}") from None
