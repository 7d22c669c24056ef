"""Warmup-stable-decay (WSD) learning-rate schedule, exactly as Levanter builds it for Delphi.

With N optimizer steps, `w = int(warmup_fraction·N)` warmup steps rise linearly from exactly 0
(optax.linear_schedule(0 → peak, w), so the first update uses lr 0), then `N − w − d` steps hold
the peak, then `d = int(decay_fraction·N)` steps decay linearly to `min_lr_ratio·peak`. The pieces
are joined like optax.join_schedules: each piece sees `count − boundary`. The final step (count
N−1) therefore has lr = peak·(1 − (d−1)/d) = peak/d when min_lr_ratio is 0.

Pure Python (no torch), so the recipe and planners can evaluate it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from delphi.errors import DelphiError


def _linear(init: float, end: float, steps: int, count: int) -> float:
    # optax.linear_schedule: clip(count, 0, steps)/steps interpolation; steps <= 0 → end value.
    if steps <= 0:
        return end
    frac = min(max(count, 0), steps) / steps
    return init + (end - init) * frac


@dataclass(frozen=True)
class WSD:
    """The multiplier of the peak learning rate at each optimizer step (`count` from 0)."""

    num_steps: int
    warmup_fraction: float = 0.1
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.num_steps <= 0:
            raise DelphiError(f"schedule: num_steps must be positive, got {self.num_steps}")
        if not (0 <= self.warmup_fraction <= 1 and 0 <= self.decay_fraction <= 1):
            raise DelphiError("schedule: warmup and decay fractions must be in [0, 1]")

    @property
    def warmup_steps(self) -> int:
        # Levanter's _convert_frac_or_steps: int(f·N) — truncation, not rounding.
        return int(self.warmup_fraction * self.num_steps)

    @property
    def decay_steps(self) -> int:
        return int(self.decay_fraction * self.num_steps)

    @property
    def stable_steps(self) -> int:
        return self.num_steps - self.warmup_steps - self.decay_steps

    def __call__(self, count: int) -> float:
        w, d, s = self.warmup_steps, self.decay_steps, self.stable_steps
        if w > 0 and count < w:
            return _linear(0.0, 1.0, w, count)
        if count < w + s:
            return 1.0
        return _linear(1.0, self.min_lr_ratio, d, count - (w + s))

    @classmethod
    def from_hparams(cls, hparams, num_steps: int) -> "WSD":
        return cls(num_steps=num_steps, warmup_fraction=hparams.warmup_fraction,
                   decay_fraction=hparams.decay_fraction, min_lr_ratio=hparams.min_lr_ratio)


def set_lr(optimizer, schedule: WSD, count: int) -> float:
    """Set every param group's `lr` to `peak_lr · schedule(count)` before the step with that count.

    Returns the multiplier. Each group carries its own `peak_lr` (AdamH's `lr` and the Adam
    group's `adam_lr` follow the same shape).
    """
    factor = schedule(count)
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
    return factor
