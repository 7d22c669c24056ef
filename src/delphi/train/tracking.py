"""Experiment trackers: where a run's metrics go besides its `metrics.jsonl`.

A run names its backends in `RunSpec.tracking` (a suite in `[tracking]`):

* `tensorboard`: event files in `<run>/tensorboard/` (`tensorboard --logdir <suite>/runs` shows
  every run of a suite). A resumed run hides the events logged after its checkpoint (TensorBoard's
  purge step), as `metrics.jsonl` drops those rows.
* `wandb`: a Weights & Biases run in `<run>/wandb/`, in offline mode unless `WANDB_MODE` says
  otherwise, so nothing needs a network (`wandb sync <run>/wandb/offline-run-*` uploads it later).
  The W&B run is named after the run, grouped under its suite (`tags.suite`), typed by its role
  (`tags.role`), has the RunSpec as its config and the summary as its summary; a resumed run
  continues the same W&B run.

Both are optional packages (`pip install 'delphi[tracking]'`); a run that asks for a missing one
stops before any work with a message naming the command. Only rank 0 tracks. This module imports
neither package (nor torch) until a tracker is opened.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError

# backend → (the module it needs, the pip command that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "pip install 'delphi[tensorboard]' (or pip install tensorboard)"),
            "wandb": ("wandb", "pip install 'delphi[wandb]' (or pip install wandb)")}
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


def missing_packages(backends) -> list[str]:
    """One line per requested backend whose package is not installed here."""
    out = []
    for b in backends:
        module, command = PACKAGES[b]
        if not _installed(module):
            out.append(f"tracking backend {b!r} needs the {module} package: {command}")
    return out


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module in sys.modules without a spec
        return sys.modules.get(module) is not None


def check_available(backends, where: str = "") -> None:
    """A DelphiError (before any work) when a requested backend's package is missing."""
    missing = missing_packages(backends)
    if missing:
        raise DelphiError((f"{where}: " if where else "") + "; ".join(missing))


def new_run_id() -> str:
    """An id for a tracker run (OS randomness: the run's RNG streams are left untouched)."""
    return uuid.uuid4().hex[:12]


def scalars(row: dict) -> dict[str, float]:
    """A metrics row as tracker scalars: `train/loss`, `train/grad_norm/adamh`, `eval/macro_loss`,
    `eval/loss/<domain>`, `eval/bpb/<domain>`, ... (None and non-numbers left out)."""
    kind = row.get("kind", "train")
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in ("kind", "step"):
            continue
        if key == "domains" and isinstance(value, dict):
            for domain, d in value.items():
                for metric in ("loss", "bpb"):
                    if _is_number(d.get(metric)):
                        out[f"{kind}/{metric}/{domain}"] = float(d[metric])
        elif isinstance(value, dict):
            out.update({f"{kind}/{key}/{k}": float(v) for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            out[f"{kind}/{key}"] = float(value)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class TensorBoardTracker:
    def __init__(self, out: Path, spec, start_step: int, run_id: str):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events a killed process logged after the checkpoint we resume from are hidden.
        self.writer = SummaryWriter(log_dir=str(Path(out) / TENSORBOARD_DIR), purge_step=start_step + 1)
        if start_step == 0:
            self.writer.add_text("run_spec", "```json\n" + spec.to_json() + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, summary: dict | None) -> None:
        if summary is not None:
            self.writer.add_text("summary", "```json\n" + json.dumps(summary, indent=2, sort_keys=True) + "\n```",
                                 summary.get("steps_done", 0))
        self.writer.close()


class WandbTracker:
    def __init__(self, out: Path, spec, start_step: int, run_id: str):
        import wandb

        (Path(out) / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(
            project=spec.tracking.project, group=spec.tags.get("suite"), job_type=spec.tags.get("role", "train"),
            name=spec.name, id=run_id, resume="allow", config=spec.to_dict(), dir=str(out),
            mode=os.environ.get("WANDB_MODE") or "offline", settings=wandb.Settings(console="off", silent=True))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, summary: dict | None) -> None:
        if summary is not None:
            self.run.summary.update({k: v for k, v in summary.items()
                                     if isinstance(v, str) or (_is_number(v) and math.isfinite(v))})
        self.run.finish(exit_code=0 if summary is None or summary.get("status") != "failed" else 1)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def open_trackers(spec, out: Path, start_step: int, run_id: str) -> list:
    """The trackers `spec.tracking` names, opened for a run starting (or resuming) at `start_step`."""
    check_available(spec.tracking.backends, f"run {spec.name}")
    return [TRACKERS[b](out, spec, start_step, run_id) for b in spec.tracking.backends]
