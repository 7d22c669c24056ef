"""Optimizers and schedules: AdamH (Delphi), AdamW and Cautious AdamC (baselines), WSD.

`build_optimizer(model, hparams)` partitions a model the way Levanter's AdamH mask does: every
`nn.Linear` weight is a "matrix" (AdamH / decayed), everything else (token embedding, RMSNorm
gains incl. QK-norm, any bias) is "other" (Adam / not decayed).
"""

from __future__ import annotations

from delphi.optim.schedule import WSD, set_lr

__all__ = ["WSD", "set_lr", "partition_params", "build_optimizer", "AdamH", "AdamW", "CautiousAdamC"]


def __getattr__(name):
    # torch-backed classes load lazily so `from delphi.optim import WSD` stays torch-free.
    if name == "AdamH":
        from delphi.optim.adamh import AdamH

        return AdamH
    if name in ("AdamW", "CautiousAdamC"):
        from delphi.optim import baselines

        return getattr(baselines, name)
    raise AttributeError(name)


def partition_params(model):
    """(matrix params, other params): nn.Linear weights vs everything else, in module order."""
    import torch.nn as nn

    matrix_ids: set[int] = set()
    matrices = []
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            if id(module.weight) not in matrix_ids:
                matrix_ids.add(id(module.weight))
                matrices.append(module.weight)
    others, seen = [], set(matrix_ids)
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            others.append(p)
    return matrices, others


def build_optimizer(model, hparams, *, foreach: bool = True, all_reduce=None):
    """The optimizer a `RunSpec.optimizer` (OptimizerHParams) asks for, over `model`'s params.

    Every group starts at its peak lr; call `set_lr(opt, WSD.from_hparams(hparams, N), step)`
    before each step to follow the schedule.
    """
    from delphi.optim.adamh import AdamH
    from delphi.optim.baselines import AdamW

    matrices, others = partition_params(model)
    betas = (hparams.beta1, hparams.beta2)
    common = dict(betas=betas, eps=hparams.epsilon, max_grad_norm=hparams.max_grad_norm)
    if hparams.name == "adamh":
        groups = [dict(params=matrices, kind="adamh", lr=hparams.lr, clip_key="adamh"),
                  dict(params=others, kind="adam", lr=hparams.adam_lr, clip_key="adam")]
        groups = [g for g in groups if g["params"]]
        return AdamH(groups, **common, foreach=foreach, all_reduce=all_reduce)
    groups = [dict(params=matrices, weight_decay=hparams.weight_decay),
              dict(params=others, weight_decay=0.0)]
    groups = [g for g in groups if g["params"]]
    adamc = hparams.name == "adamc"
    return AdamW(groups, lr=hparams.lr, weight_decay=hparams.weight_decay, cautious=adamc, adamc=adamc,
                 **common, foreach=foreach, all_reduce=all_reduce)
