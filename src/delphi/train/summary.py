"""A run's `summary.json`: its row of the runs table (keys in docs/train.md)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from delphi.config import RunSpec
from delphi.train.evaluator import clean_eval, finite_or_none
from delphi.train.state import RunState
from delphi.version import code_version


@dataclass
class Environment:
    """How and where the run trained (summary.json's precision, compiled, world_size, threads,
    time_s and hardware)."""

    amp_dtype: torch.dtype | None = None
    compiled: bool = False
    world_size: int = 1
    threads: int = 1
    peak_flops_per_s: float | None = None
    hardware: dict = field(default_factory=dict)
    # Where this process's wall time went besides training steps: setup (data, model, optimizer,
    # checkpoint restore), the first step (compilation when compiled), evaluation, checkpoints,
    # the HF export.
    time_s: dict = field(default_factory=lambda: {"setup": 0.0, "first_step": 0.0, "eval": 0.0,
                                                  "checkpoint": 0.0, "export": 0.0})


def build_summary(spec: RunSpec, state: RunState, env: Environment, *, status: str, reason: str | None,
                  final_train_loss: float | None, loader=None) -> dict:
    """The summary of a run in `state` (`loader`: how much of each domain it consumed, when known)."""
    epochs = {}
    with contextlib.suppress(Exception):
        epochs = {k: float(v) for k, v in loader.epochs().items()}
    ev = state.last_eval or {}
    fpt = spec.shape.flops_per_token
    tps = state.tokens / state.train_time_s if state.train_time_s > 0 else None
    achieved = 3.0 * fpt * tps if tps else None
    peak = env.peak_flops_per_s
    mfu = achieved / (peak * env.world_size) if achieved and peak else None
    return {
        "name": spec.name, "status": status, "reason": reason, "budget": spec.budget, "seed": spec.seed,
        "recipe": spec.recipe, "hidden_size": spec.shape.hidden_size, "num_layers": spec.shape.num_layers,
        "batch_size": spec.batch_size, "train_steps": spec.train_steps, "steps_done": state.step,
        "learning_rate": spec.optimizer.lr, "optimizer": spec.optimizer.name,
        "params": spec.shape.num_params, "tokens": state.tokens, "flops": 3.0 * fpt * state.tokens,
        "loss": finite_or_none(ev.get("macro_loss")), "bpb": finite_or_none(ev.get("macro_bpb")),
        "eval": clean_eval(ev) if ev else None, "final_train_loss": finite_or_none(final_train_loss),
        "wall_time_s": state.wall_time_s, "train_time_s": state.train_time_s,
        "tokens_per_s": tps, "flops_per_s": achieved, "mfu": mfu,
        "precision": "bf16" if env.amp_dtype == torch.bfloat16 else "fp32", "compiled": bool(env.compiled),
        "world_size": env.world_size, "threads": env.threads,
        "time_s": {k: round(v, 3) for k, v in env.time_s.items()},
        "hardware": {**env.hardware, "peak_flops_per_s": peak},
        "epochs": epochs, "code_version": code_version(), "tags": dict(spec.tags),
    }

