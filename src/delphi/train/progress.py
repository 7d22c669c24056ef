"""What a person watching a run sees on stderr."""

from __future__ import annotations

import sys


class Progress:
    """A rich progress bar (step, loss, tokens/s, ETA), or in quiet mode one plain line about
    every 5% of the run (for logs): `[name] step 40/200 loss 7.1234 12,345 tok/s ETA 61s`."""

    def __init__(self, enabled: bool, name: str, total: int, start: int):
        self.enabled, self.total, self.name = enabled, total, name
        self._bar = None
        self._next_line = start
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(name, total=total, completed=start, loss="-", tps="-")

    def update(self, step: int, loss: float, tps: float, eta_s: float | None):
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
        elif step >= self._next_line or step == self.total:
            eta = f"{eta_s:.0f}s" if eta_s is not None else "?"
            print(f"[{self.name}] step {step}/{self.total} loss {loss:.4f} {tps:,.0f} tok/s ETA {eta}",
                  file=sys.stderr, flush=True)
            self._next_line = step + max(1, self.total // 20)

    def message(self, text: str):
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.stop()
