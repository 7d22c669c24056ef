"""`check --recompute`: evaluate a finished run's saved weights again on its validation windows.

The run's exported final weights (`hf/`, written right after the final evaluation) are loaded and
scored by the trainer's own `evaluate_validation` on the same validation windows
(`validation_sets` of the run's data, sequence length and `eval_windows_per_domain`), with the
micro-batch size and autocast precision the run recorded. The result is compared with
`summary.json` by `delphi.forecast.check`, so a summary whose loss was edited is caught even when
`metrics.jsonl` was edited to match.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from delphi.config import RunSpec
from delphi.errors import DelphiError

# summary.json metric → the key of `evaluate_validation`'s result it was copied from
EVAL_KEYS = {"loss": "macro_loss", "bpb": "macro_bpb"}


def recompute_device(summary: dict[str, Any]) -> str:
    """The device the run was evaluated on when it is available here, else the CPU."""
    import torch

    hardware = summary.get("hardware") if isinstance(summary.get("hardware"), dict) else {}
    trained = str(hardware.get("device") or "cpu")
    return "cuda" if trained.startswith("cuda") and torch.cuda.is_available() else "cpu"


def recompute_eval(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """`evaluate_validation`'s result (macro/micro loss and bpb, per domain) for the weights in
    `run_dir/hf`, on the run's validation windows; adds `device` and `precision` used."""
    run_dir = Path(run_dir)
    spec = RunSpec.from_json((run_dir / "run.json").read_text())
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    if not (run_dir / "hf" / "config.json").is_file():
        raise DelphiError(f"run {spec.name} has no saved weights (hf/config.json is missing): nothing to re-evaluate")

    import torch

    from delphi.data import prepare_data, validation_sets
    from delphi.model.hf import load_hf
    from delphi.train.distributed import DistInfo
    from delphi.train.evaluator import evaluate_validation
    from delphi.train.trainer import _micro_batch_size

    device = device or recompute_device(summary)
    amp = torch.bfloat16 if summary.get("precision") == "bf16" else None
    prepared = prepare_data(spec.data, progress=False)
    val = validation_sets(prepared, spec.shape.seq_len, spec.eval_windows_per_domain)
    model = load_hf(run_dir / "hf", dtype=torch.float32, device=device, seq_len=spec.shape.seq_len)
    model.eval()

    def autocast():
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=amp)

    world = summary.get("world_size") if isinstance(summary.get("world_size"), int) else 1
    result = evaluate_validation(model, val, batch_size=_micro_batch_size(max(1, spec.batch_size // world)),
                                 device=device, autocast=autocast,
                                 use_doc_ids=spec.data.block_cross_document_attention, info=DistInfo(device=device))
    return {**result, "device": device, "precision": "bf16" if amp is not None else "fp32"}
