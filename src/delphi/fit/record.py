"""`fit.json`: what the fit stage of `delphi run` hands to the forecast, check and report stages.

One `FitRecord` holds the IsoFLOP fit (every bucket with its runs, parabola and vertex; the
allocation laws), the loss law with the bootstrap and leave-one-out parameter draws its
intervals are read from, the fit settings, the fit-health verdict and the SHA-256 of the runs
table it was fitted on. `FitRecord.from_dict(record.to_dict())` is the same fit: a reader draws
parabolas, the law and its band, and forecasts with the registered intervals, without fitting.

Schema versions (`schema_version`, docs/artefacts.md): 2 is written now; a fit.json without the
field is version 1, written before the record carried the buckets' runs and the law's draws. A
version-1 record still loads (`legacy` is True): it predicts, but its law has no intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.files import atomic_write_json, schema_version
from delphi.fit.health import FitHealth
from delphi.fit.isoflop import IsoFlopFit
from delphi.fit.loss_law import LossLaw

SCHEMA_VERSION = 2


@dataclass(frozen=True, eq=False)
class FitRecord:
    metric: str
    compute: str  # the compute definition of the loss law's C (`delphi.fit.compute`)
    isoflop: IsoFlopFit
    loss_law: LossLaw
    runs_table_sha256: str
    settings: dict = field(default_factory=dict)  # metric, bootstrap, seed, compute, form, interval, ceiling
    health: FitHealth | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def legacy(self) -> bool:
        """Written before fit.json carried the buckets' runs and the law's draws (version 1)."""
        return self.schema_version < SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "metric": self.metric, "compute": self.compute,
                "isoflop": self.isoflop.to_dict(), "loss_law": self.loss_law.to_dict(draws=True),
                "runs_table_sha256": self.runs_table_sha256, "settings": dict(self.settings),
                "health": None if self.health is None else self.health.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, what: str = "fit.json") -> "FitRecord":
        """A DelphiError (one line, naming `what`) when `d` is not a fit record."""
        if not isinstance(d, dict):
            raise DelphiError(f"{what} is not a JSON object")
        version = schema_version(d, what, SCHEMA_VERSION)
        for key in ("isoflop", "loss_law"):
            if not isinstance(d.get(key), dict):
                raise DelphiError(f"{what} has no {key!r} object: it is not a fit record")
        try:
            health = FitHealth.from_dict(d["health"]) if isinstance(d.get("health"), dict) else None
            return cls(metric=str(d.get("metric") or "loss"), compute=str(d.get("compute") or "total"),
                       isoflop=IsoFlopFit.from_dict(d["isoflop"]), loss_law=LossLaw.from_dict(d["loss_law"]),
                       runs_table_sha256=str(d.get("runs_table_sha256") or ""),
                       settings=dict(d.get("settings") or {}), health=health, schema_version=version)
        except (KeyError, TypeError, ValueError) as e:
            raise DelphiError(f"{what} is not a readable fit record ({type(e).__name__}: {e})") from None

    def write(self, path: str | Path) -> Path:
        """Write the record to `path` (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> "FitRecord":
        import json

        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise DelphiError(f"{path}: cannot read it ({e})") from None
        except json.JSONDecodeError as e:
            raise DelphiError(f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(d, what=str(path))


__all__ = ["SCHEMA_VERSION", "FitRecord"]
