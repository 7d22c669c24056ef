"""The parts a run is built from, each behind a small registry: a new model or optimizer is one
entry here, and the trainer picks it by name (docs/extending.md).

* `MODELS`: name → `ModelDef` (build with Delphi's initialisation, build an empty skeleton for a
  gathered state dict, export to Hugging Face). The trainer builds `DEFAULT_MODEL`.
* `OPTIMIZERS`: `OptimizerHParams.name` → a builder `(model, hparams, all_reduce) -> optimizer`.
  Every builder splits parameters as Levanter does (`delphi.optim.partition_params`: every
  `nn.Linear` weight is a matrix, everything else is "other"); the names a spec may give are
  `delphi.config.OPTIMIZERS` (a test keeps the two in step).
* `open_data`: the training loader and the validation windows of a spec's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from delphi.config import ModelShape, OptimizerHParams, RunSpec
from delphi.errors import DelphiError
from delphi.train import distributed as dist


@dataclass(frozen=True)
class ModelDef:
    """How the trainer makes and saves one kind of model."""

    build: Callable[[ModelShape], Any]  # initialised weights (seed torch first for determinism)
    skeleton: Callable[[ModelShape], Any]  # same modules on the meta device, nothing initialised
    export: Callable[[Any, Any, Path], None]  # (model, tokenizer, directory): the final model


MODELS: dict[str, ModelDef] = {}
OPTIMIZERS: dict[str, Callable[..., Any]] = {}
DEFAULT_MODEL = "qwen3"


def register_model(name: str, model: ModelDef) -> ModelDef:
    MODELS[name] = model
    return model


def register_optimizer(name: str):
    """Decorator: `@register_optimizer("adamh") def build(model, hp, *, all_reduce=None)`."""

    def add(builder):
        OPTIMIZERS[name] = builder
        return builder

    return add


def model_def(name: str = DEFAULT_MODEL) -> ModelDef:
    if name not in MODELS:
        raise DelphiError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(spec: RunSpec, info: dist.DistInfo, name: str = DEFAULT_MODEL):
    """Model `name` of `spec.shape`, initialised from `spec.seed`, on this process's device and
    wrapped for data parallelism (FSDP2 / DDP; as is for one process)."""
    import torch

    torch.manual_seed(spec.seed)
    return dist.wrap_model(model_def(name).build(spec.shape).to(info.device), info)


def build_optimizer(model, hparams: OptimizerHParams, *, info: dist.DistInfo | None = None, all_reduce=None):
    """The optimizer `hparams.name` names, over the parameters of `model` (unwrapped), every group
    at its peak lr. Under FSDP2 (`info`) the norms it takes are summed over the shards."""
    if hparams.name not in OPTIMIZERS:
        raise DelphiError(f"unknown optimizer {hparams.name!r}; registered optimizers: {', '.join(sorted(OPTIMIZERS))}")
    if all_reduce is None and info is not None and info.distributed and info.parallel == "fsdp":
        all_reduce = lambda t: dist.all_reduce_sum(t.to(info.device), info).cpu()  # noqa: E731
    return OPTIMIZERS[hparams.name](dist.unwrap(model), hparams, all_reduce=all_reduce)


def export_model(model, spec: RunSpec, info: dist.DistInfo, tokenizer, out: Path, name: str = DEFAULT_MODEL) -> None:
    """Export the trained model (gathered from every rank under data parallelism: a collective;
    rank 0 writes) to `out`."""
    mdef = model_def(name)
    if info.distributed:
        full = dist.full_state_dict(model)
        if not info.is_main:
            return
        model = mdef.skeleton(spec.shape)
        model.load_state_dict(full)
    else:
        model = dist.unwrap(model)
    mdef.export(model, tokenizer, out)


# ---- the Qwen3 decoder ---------------------------------------------------------------------------

def _qwen3(shape: ModelShape):
    from delphi.model import Qwen3

    return Qwen3(shape)


def _qwen3_skeleton(shape: ModelShape):
    import torch

    from delphi.model import Qwen3

    with torch.device("meta"):
        model = Qwen3(shape)
    model = model.to_empty(device="cpu")
    model.init_rope()
    return model


def _qwen3_export(model, tokenizer, out: Path) -> None:
    from delphi.model.hf import export_hf

    export_hf(model, tokenizer, out)


register_model("qwen3", ModelDef(build=_qwen3, skeleton=_qwen3_skeleton, export=_qwen3_export))


# ---- optimizers ----------------------------------------------------------------------------------

def _groups(*groups: dict) -> list[dict]:
    return [g for g in groups if g["params"]]


@register_optimizer("adamh")
def _adamh(model, hp: OptimizerHParams, *, all_reduce=None):
    """AdamH (lr) on the matrices, Adam (adam_lr) on the rest; each group clipped on its own."""
    from delphi.optim import AdamH, partition_params

    matrices, others = partition_params(model)
    groups = _groups(dict(params=matrices, kind="adamh", lr=hp.lr, clip_key="adamh"),
                     dict(params=others, kind="adam", lr=hp.adam_lr, clip_key="adam"))
    return AdamH(groups, betas=(hp.beta1, hp.beta2), eps=hp.epsilon, max_grad_norm=hp.max_grad_norm,
                 all_reduce=all_reduce)


def _adamw_family(model, hp: OptimizerHParams, *, adamc: bool, all_reduce=None):
    from delphi.optim import AdamW, partition_params

    matrices, others = partition_params(model)
    groups = _groups(dict(params=matrices, weight_decay=hp.weight_decay), dict(params=others, weight_decay=0.0))
    return AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay, cautious=adamc, adamc=adamc,
                 betas=(hp.beta1, hp.beta2), eps=hp.epsilon, max_grad_norm=hp.max_grad_norm, all_reduce=all_reduce)


@register_optimizer("adamw")
def _adamw(model, hp: OptimizerHParams, *, all_reduce=None):
    """AdamW, decoupled decay on the matrices only, one global clip."""
    return _adamw_family(model, hp, adamc=False, all_reduce=all_reduce)


@register_optimizer("adamc")
def _adamc(model, hp: OptimizerHParams, *, all_reduce=None):
    """Cautious AdamC (Delphi v1): the cautious mask and lr-proportional decay."""
    return _adamw_family(model, hp, adamc=True, all_reduce=all_reduce)


# ---- data ----------------------------------------------------------------------------------------

def open_data(spec: RunSpec, info: dist.DistInfo, progress: bool):
    """(prepared data, training loader, validation sets). Rank 0 prepares (tokenises) first, the
    others reuse its cache."""
    from delphi.data import PackedLoader, prepare_data, validation_sets

    if info.is_main:
        prepared = prepare_data(spec.data, progress=progress)
    dist.barrier(info)
    if not info.is_main:
        prepared = prepare_data(spec.data, progress=False)
    vocab = prepared.tokenizer.vocab_size
    if vocab > spec.shape.vocab_size:
        raise DelphiError(f"run {spec.name}: tokenizer {prepared.tokenizer.name!r} has {vocab} tokens but the model's "
                          f"vocab_size is {spec.shape.vocab_size}; set shape.vocab_size >= {vocab}")
    loader = PackedLoader(prepared, spec.shape.seq_len, spec.batch_size, spec.seed)
    val = validation_sets(prepared, spec.shape.seq_len, spec.eval_windows_per_domain)
    return prepared, loader, val
