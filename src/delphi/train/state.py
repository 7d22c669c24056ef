"""What a run carries from step to step and through a checkpoint besides weights and moments:
counters and timings (`RunState`), the divergence guards, and the process's RNG states."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class DivergenceGuard:
    """Stops a run whose loss is non-finite, or stays far above its running minimum
    (`> ratio · min` for `patience` consecutive observations)."""

    what: str
    ratio: float = 1.5
    patience: int = 3
    best: float = math.inf
    bad: int = 0

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"non-finite {self.what} ({value})"
        if value > self.ratio * self.best:
            self.bad += 1
            if self.bad >= self.patience:
                return (f"{self.what} {value:.4g} stayed above {self.ratio}x its running minimum "
                        f"{self.best:.4g} for {self.bad} consecutive checks")
        else:
            self.bad = 0
        self.best = min(self.best, value)
        return None


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    window_losses: list = field(default_factory=list)
    last_eval: dict | None = None
    train_guard: DivergenceGuard = field(default_factory=lambda: DivergenceGuard("train loss"))
    eval_guard: DivergenceGuard = field(default_factory=lambda: DivergenceGuard("eval macro loss"))
    tracking_id: str | None = None  # the tracker run (W&B id) a resumed run continues

    def observe_train_loss(self, loss: float, window: int) -> str | None:
        """Why the run diverged at this step, or None: a non-finite loss at once, else the mean
        of every `window` steps' losses goes to the train-loss guard."""
        self.window_losses.append(loss)
        if not math.isfinite(loss):
            return f"non-finite train loss ({loss}) at step {self.step}"
        if len(self.window_losses) >= window:
            reason = self.train_guard.observe(sum(self.window_losses) / len(self.window_losses))
            self.window_losses = []
            if reason:
                return f"{reason} (step {self.step})"
        return None

    def observe_eval(self, ev: dict) -> str | None:
        loss = ev["macro_loss"] if ev["macro_loss"] is not None else math.nan
        reason = self.eval_guard.observe(loss)
        return f"{reason} (step {self.step})" if reason else None

    def to_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "train_time_s": self.train_time_s,
                "wall_time_s": self.wall_time_s, "window_losses": list(self.window_losses),
                "last_eval": self.last_eval, "train_guard": vars(self.train_guard).copy(),
                "eval_guard": vars(self.eval_guard).copy(), "tracking_id": self.tracking_id}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        return cls(step=d["step"], tokens=d["tokens"], train_time_s=d["train_time_s"], wall_time_s=d["wall_time_s"],
                   window_losses=list(d["window_losses"]), last_eval=d["last_eval"],
                   train_guard=DivergenceGuard(**d["train_guard"]), eval_guard=DivergenceGuard(**d["eval_guard"]),
                   tracking_id=d.get("tracking_id"))


def rng_state() -> dict:
    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
