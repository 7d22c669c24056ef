"""Small frozen dataclasses shared across stages.

`ModelShape` is the architecture plus its exact parameter and FLOP accounting (pure Python, no
torch). `OptimizerHParams` holds everything the optimizer and schedule need. `RunSpec` fully
determines one training run and round-trips through JSON, so a run can be moved to another
machine by copying its `run.json`. `TrackingSpec` says where a run's metrics go besides its
`metrics.jsonl` (TensorBoard, W&B); it is not part of what determines the run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from delphi.errors import DelphiError
from delphi.validate import (MAX_SEED, Bool, Int, ListOf, Num, Optional, Problems, Str, StrDict, check_fields,
                             dataclass_problems)


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
        dataclass_problems(self, SHAPE_RULES, "model shape")
        problems = Problems("model shape")
        _shape_relations(self.__dict__, problems, lambda n: n)
        problems.raise_if_any()

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
        return _build(cls, d, SHAPE_RULES, "model shape")


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
        dataclass_problems(self, OPTIMIZER_RULES, "optimizer")
        problems = Problems("optimizer")
        _optimizer_relations(self.__dict__, problems, lambda n: n)
        problems.raise_if_any()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OptimizerHParams":
        return _build(cls, d, OPTIMIZER_RULES, "optimizer")


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains on: a mixture (name of a built-in mixture, or a path to a mixture
    file) and a tokenizer (name of a built-in tokenizer, or a path to a tokenizer.json)."""

    mixture: str = "embedded"
    tokenizer: str = "embedded-bpe"
    block_cross_document_attention: bool = True
    cache_dir: str | None = None

    def __post_init__(self):
        dataclass_problems(self, DATA_RULES, "data")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return _build(cls, d, DATA_RULES, "data")


@dataclass(frozen=True)
class TrackingSpec:
    """Experiment trackers a run logs to besides its `metrics.jsonl`: `backends` among
    `TRACKING_BACKENDS` (TensorBoard event files in the run's `tensorboard/`, a W&B run in its
    `wandb/`, offline unless `WANDB_MODE` says otherwise), `project` the W&B project."""

    backends: tuple[str, ...] = ()
    project: str = "delphi"

    def __post_init__(self):
        if isinstance(self.backends, list):
            object.__setattr__(self, "backends", tuple(self.backends))
        dataclass_problems(self, TRACKING_RULES, "tracking")

    def to_dict(self) -> dict[str, Any]:
        return {"backends": list(self.backends), "project": self.project}

    @classmethod
    def from_dict(cls, d: Any) -> "TrackingSpec":
        """From its JSON object, or from a list of backends (the short form)."""
        return _build(cls, _tracking_dict(d), TRACKING_RULES, "tracking")


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
    # Where metrics go besides metrics.jsonl: not part of the run's identity (equality ignores it,
    # and run.json holds it only when set), so adding a tracker to a run changes no result.
    tracking: TrackingSpec = field(default_factory=TrackingSpec, compare=False)

    def __post_init__(self):
        what = f"run {self.name}" if isinstance(self.name, str) else "run spec"
        if isinstance(self.tracking, (list, tuple)):
            object.__setattr__(self, "tracking", TrackingSpec(backends=tuple(self.tracking)))
        dataclass_problems(self, RUN_RULES, what)
        for name, cls in (("shape", ModelShape), ("optimizer", OptimizerHParams), ("data", DataSpec),
                          ("tracking", TrackingSpec)):
            if not isinstance(getattr(self, name), cls):
                raise DelphiError(f"{what}: {name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    @property
    def tokens(self) -> int:
        return self.batch_size * self.train_steps * self.shape.seq_len

    @property
    def flops(self) -> float:
        return self.shape.training_flops(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.tracking == TrackingSpec():
            del d["tracking"]  # run.json and ledger entries of untracked runs stay as they were
        else:
            d["tracking"] = self.tracking.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, where: str = "run spec", *, check_files: bool = False) -> "RunSpec":
        """A RunSpec from its JSON object; every field is checked and all problems are reported
        together (`where` names the source, e.g. the file). With `check_files`, the mixture and
        tokenizer must also be found on this machine (a spec about to be trained)."""
        problems = Problems(where)
        check_run_dict(d, problems)
        if check_files and not problems:
            data_problems(DataSpec(**d.get("data", {})), problems, "data.", vocab_size=d["shape"]["vocab_size"])
        problems.raise_if_any()
        d = dict(d)
        d["shape"] = ModelShape(**d["shape"])
        d["optimizer"] = OptimizerHParams(**d["optimizer"])
        if "data" in d:
            d["data"] = DataSpec(**d["data"])
        if "tracking" in d:
            d["tracking"] = TrackingSpec(**_tracking_dict(d["tracking"]))
        return cls(**d)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "run spec", *, check_files: bool = False) -> "RunSpec":
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DelphiError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                  "give the run's JSON file (e.g. its run.json)") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DelphiError(f"{where}: not valid JSON ({e})") from None
        except RecursionError:
            raise DelphiError(f"{where}: not valid JSON (nested too deeply)") from None
        return cls.from_dict(doc, where=where, check_files=check_files)


# ---- validation rules (`delphi.validate`): one place for what every field may hold ------------------

SHAPE_RULES = {
    **{n: Int(1) for n in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                           "intermediate_size", "vocab_size", "seq_len", "rope_original_max_position")},
    "tie_embeddings": Bool(), "qk_norm": Bool(), "rope_scaling": Bool(),
    "rms_norm_eps": Num(0, lo_open=True, sane_hi=1.0),
    "rope_theta": Num(0, lo_open=True),
    "rope_factor": Num(0, lo_open=True),
    "rope_low_freq_factor": Num(0, lo_open=True),
    "rope_high_freq_factor": Num(0, lo_open=True),
}

OPTIMIZERS = ("adamh", "adamw", "adamc")
OPTIMIZER_RULES = {
    "name": Str(OPTIMIZERS),
    "lr": Num(0, lo_open=True, sane_hi=10.0),
    "adam_lr": Num(0, lo_open=True, sane_hi=10.0),
    "beta1": Num(0, 1, hi_open=True),
    "beta2": Num(0, 1, hi_open=True),
    "epsilon": Num(0, lo_open=True, sane_hi=1.0),
    "max_grad_norm": Num(0, note="0: no clipping"),
    "weight_decay": Num(0, sane_hi=10.0),
    "z_loss_weight": Num(0, sane_hi=1.0),
    "warmup_fraction": Num(0, 1),
    "decay_fraction": Num(0, 1),
    "min_lr_ratio": Num(0, 1),
}

DATA_RULES = {
    "mixture": Str(what="a mixture name (\"embedded\") or a mixture file path"),
    "tokenizer": Str(what="a tokenizer name (\"embedded-bpe\") or a tokenizer.json path"),
    "block_cross_document_attention": Bool(),
    "cache_dir": Optional(Str(what="a directory path")),
}

TRACKING_BACKENDS = ("tensorboard", "wandb")
TRACKING_RULES = {
    "backends": ListOf(Str(TRACKING_BACKENDS), unique=True, what="a list of tracking backends",
                       example='["tensorboard", "wandb"]'),
    "project": Str(what="a W&B project name"),
}

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("auto", "on", "off")
RUN_RULES = {
    "name": Str(name_like=True, what="a non-empty run name"),
    "batch_size": Int(1),
    "train_steps": Int(1),
    "seed": Int(0, MAX_SEED),
    "budget": Optional(Num(0, lo_open=True, unit="of FLOPs")),
    "recipe": Optional(Str(what="a recipe name")),
    "eval_every": Int(0, note="steps; 0: only at the end"),
    "eval_windows_per_domain": Int(1),
    "checkpoint_every": Int(0, note="steps; 0: only time-based and final"),
    "checkpoint_every_minutes": Num(0, unit="of minutes", note="0: no time-based checkpoints"),
    "precision": Str(PRECISIONS),
    "compile": Str(COMPILE_MODES),
    "tags": StrDict(),
}


def _shape_relations(d: dict[str, Any], problems: Problems, key) -> None:
    heads, kv = d.get("num_heads"), d.get("num_kv_heads")
    if isinstance(heads, int) and isinstance(kv, int) and heads > 0 and kv > 0 and heads % kv:
        problems.add(key("num_heads"), f"({heads}) must be a multiple of num_kv_heads ({kv})")
    lo, hi = d.get("rope_low_freq_factor", 1.0), d.get("rope_high_freq_factor", 4.0)
    if (d.get("rope_scaling", True) is True and isinstance(lo, (int, float)) and isinstance(hi, (int, float))
            and not isinstance(lo, bool) and not isinstance(hi, bool) and not hi > lo):
        problems.add(key("rope_high_freq_factor"), f"must be greater than rope_low_freq_factor ({lo:g}) when "
                                                   f"rope_scaling is on, got {hi!r}")


def _optimizer_relations(d: dict[str, Any], problems: Problems, key) -> None:
    w, dec = d.get("warmup_fraction", 0.1), d.get("decay_fraction", 0.2)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in (w, dec)) and w + dec > 1:
        problems.add(key("warmup_fraction"), f"and decay_fraction must sum to at most 1, got {w:g} + {dec:g}")


def _section(d: Any, cls, rules: dict, problems: Problems, prefix: str, strict: bool = True) -> bool:
    """Check one nested object (shape, optimizer, data) of a RunSpec; True when it can be built."""
    if not isinstance(d, dict):
        problems.add(prefix.rstrip("."), f"must be an object, got {show_type(d)}")
        return False
    before = len(problems)
    names = {f.name for f in dataclasses.fields(cls)}
    problems.unknown_keys(prefix.rstrip("."), d, names, what="field")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        _missing(problems, prefix.rstrip("."), missing)
    check_fields(problems, d, rules, key=lambda n: prefix + n, strict=strict)
    if cls is ModelShape:
        _shape_relations(d, problems, lambda n: prefix + n)
    elif cls is OptimizerHParams:
        _optimizer_relations(d, problems, lambda n: prefix + n)
    return len(problems) == before


def show_type(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null", int: "a number",
            float: "a number", dict: "an object"}.get(type(v), type(v).__name__)


def check_run_dict(d: Any, problems: Problems, prefix: str = "") -> None:
    """Every problem of a RunSpec's JSON object, recorded under key paths like `optimizer.beta2`."""
    if not isinstance(d, dict):
        problems.add(prefix.rstrip("."), f"a run spec must be a JSON object with name, shape, optimizer, batch_size "
                                         f"and train_steps, got {show_type(d)}")
        return
    names = {f.name for f in dataclasses.fields(RunSpec)}
    problems.unknown_keys(prefix.rstrip("."), d, names, what="field")
    missing = [n for n in ("name", "shape", "optimizer", "batch_size", "train_steps") if n not in d]
    if missing:
        _missing(problems, prefix.rstrip("."), missing)
    check_fields(problems, d, RUN_RULES, key=lambda n: prefix + n)
    for name, cls, rules in (("shape", ModelShape, SHAPE_RULES), ("optimizer", OptimizerHParams, OPTIMIZER_RULES),
                             ("data", DataSpec, DATA_RULES), ("tracking", TrackingSpec, TRACKING_RULES)):
        if name in d:
            _section(_tracking_dict(d[name]) if name == "tracking" else d[name], cls, rules, problems,
                     f"{prefix}{name}.")


def _tracking_dict(d: Any) -> Any:
    """A tracking object from its short form (a list of backends); anything else as it is."""
    return {"backends": d} if isinstance(d, (list, tuple)) else d


def _build(cls, d: Any, rules: dict, what: str):
    problems = Problems(what)
    if _section(d, cls, rules, problems, ""):
        return cls(**d)
    problems.raise_if_any()


def _missing(problems: Problems, key: str, missing: list[str]) -> None:
    text = f"missing field(s) {', '.join(missing)}"
    problems.add(key, f"is {text}") if key else problems.add("", text)


def data_problems(data: DataSpec, problems: Problems, prefix: str = "data.", vocab_size: int | None = None) -> None:
    """Record what would stop `data` from loading here: a mixture (name or file) that does not
    resolve, a tokenizer that does not load, or a tokenizer larger than the model's vocabulary."""
    from delphi.data.mixture import resolve_mixture
    from delphi.data.tokenizers import load_tokenizer

    try:
        resolve_mixture(data.mixture)
    except DelphiError as e:
        problems.add_error(f"{prefix}mixture", e)
    try:
        vocab = load_tokenizer(data.tokenizer).vocab_size
    except DelphiError as e:
        problems.add_error(f"{prefix}tokenizer", e)
        return
    if vocab_size is not None and vocab > vocab_size:
        problems.add(f"{prefix}tokenizer", f"{data.tokenizer!r} has {vocab} tokens but shape.vocab_size is "
                                           f"{vocab_size}; set shape.vocab_size >= {vocab}")
