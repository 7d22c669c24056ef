"""When a run checkpoints and what a checkpoint holds.

Due every `checkpoint_every` steps and/or every `checkpoint_every_minutes` (measured on rank 0,
checked at logging steps, and broadcast so every rank agrees), and at the end. A checkpoint holds
everything that influences the trajectory (weights, optimizer moments, RNG states, loader
position, `RunState`), so a resumed run continues bitwise as if never stopped. The files are
written by `delphi.train.checkpoint` (atomic, verified on load).
"""

from __future__ import annotations

import time
from pathlib import Path

from delphi.train import checkpoint as ckpt
from delphi.train import distributed as dist
from delphi.train.state import RunState, rng_state, set_rng_state


class CheckpointPolicy:
    def __init__(self, root: Path, info: dist.DistInfo, *, every_steps: int, every_minutes: float,
                 check_every: int = 1):
        self.root, self.info = Path(root), info
        self.every_steps, self.every_minutes, self.check_every = every_steps, every_minutes, check_every
        self.last_save = time.perf_counter()
        self.time_s = 0.0  # spent writing checkpoints (summary.json time_s.checkpoint)

    def start(self, check_every: int) -> None:
        """The loop starts: the minute clock runs from now; the clock is read every `check_every` steps."""
        self.check_every = check_every
        self.last_save = time.perf_counter()

    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        if self.every_minutes and step % self.check_every == 0:
            due = (time.perf_counter() - self.last_save) / 60.0 >= self.every_minutes
            return bool(dist.broadcast_object(due, self.info))
        return False

    def save(self, *, model, optimizer, loader, state: RunState, spec) -> None:
        """Every rank writes its file; rank 0 commits the step once all are on disk."""
        t0 = time.perf_counter()
        info = self.info
        payload = {"step": state.step, "model": dist.local_state_dict(model), "optimizer": optimizer.state_dict(),
                   "rng": rng_state(), "loader": loader.state_dict(), "trainer": state.to_dict(),
                   "spec": spec.to_dict()}
        if info.is_main:
            ckpt.clean_partial(self.root)
        dist.barrier(info)
        ckpt.write_rank_file(self.root, state.step, info.rank, payload)
        dist.barrier(info)
        if info.is_main:
            ckpt.commit(self.root, state.step, info.world_size)
        dist.barrier(info)
        self.last_save = time.perf_counter()
        self.time_s += self.last_save - t0

    def restore(self, *, model, optimizer, loader) -> RunState | None:
        """Load the newest intact checkpoint into the model, optimizer, loader and RNGs; its
        `RunState`, or None when there is none (a fresh run)."""
        found = ckpt.latest_valid(self.root, self.info.rank, self.info.world_size)
        if found is None:
            return None
        _, payload = found
        dist.load_local_state_dict(model, payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        loader.load_state_dict(payload["loader"])
        set_rng_state(payload["rng"])
        return RunState.from_dict(payload["trainer"])
