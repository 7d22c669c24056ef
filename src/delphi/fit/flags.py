"""Machine-readable flags on fit results: one code per kind of degenerate or doubtful data.

Every fit result says what is doubtful about its input with flags: a stable code for tools and
one line for a person. Two levels:

- a bucket's flags (`isoflop.BucketFit.flags`): codes only, explained by `FLAG_TEXT`;
- a fit's flags (`IsoFlopFit.flags`, `LossLaw.flags`, `ParametricFit.flags`): `Flag`s whose text
  names the runs, budgets or parameters concerned.

`--json` prints them (`"flags"`: codes per bucket; `[{"code", "text"}]` per fit), the text output
prints each as a `warning:` line, and the fit-health gate (`delphi.fit.health`, check `data`)
carries them into fit.json, the ledger entry, `delphi check` and the report (`health.flags`: every
code raised). `FLAG_TEXT` is the one list of codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---- IsoFLOP buckets ----------------------------------------------------------------------------
VERTEX_ABOVE = "vertex_above_range"  # optimum beyond the largest token count: grid centred too low
VERTEX_BELOW = "vertex_below_range"  # optimum below the smallest token count: grid centred too high
# Inside the range but with a single run on one side of it: the vertex rests on that run and the
# curvature of the other side (measured on the `micro` benchmark: 2.2% below every run at 6e10).
VERTEX_ONE_SIDED = "vertex_one_sided"
TOO_FEW_RUNS = "too_few_runs"  # < 3 runs (or distinct token counts): no parabola
NO_MINIMUM = "no_minimum"  # the parabola opens downward
FLAT_CURVE = "flat_curve"  # curvature not distinguishable from the runs' noise: the vertex would be noise

# ---- a whole fit --------------------------------------------------------------------------------
DUPLICATE_RUNS = "duplicate_runs"  # repeated rows removed from the runs table
NO_ALLOCATION_LAW = "no_allocation_law"  # fewer than 2 budgets with a significant minimum
ALLOCATION_IMPLAUSIBLE = "allocation_implausible"  # D* or N* does not grow with compute (or grows faster than C)
LOSS_RISES = "loss_rises"  # the metric rises with compute somewhere (optima, or runs for the parametric fit)
ASYMPTOTE_AT_DATA = "asymptote_at_data"  # the loss law's E reached the lowest optimum: weakly identified
ALPHA_AT_BOUND = "alpha_at_bound"  # the loss law's exponent at the edge of its search range
EXPONENT_NOT_POSITIVE = "exponent_not_positive"  # a parametric exponent <= 0: loss rising with size or data
EXPONENT_IMPLAUSIBLE = "exponent_implausible"  # a parametric exponent far above any published fit

FLAG_TEXT = {
    VERTEX_ABOVE: "optimum beyond the largest token count (grid off-centre; vertex extrapolated)",
    VERTEX_BELOW: "optimum below the smallest token count (grid off-centre; vertex extrapolated)",
    VERTEX_ONE_SIDED: "only one run on one side of the optimum (vertex poorly bracketed)",
    TOO_FEW_RUNS: "fewer than 3 runs of different sizes at this budget (no parabola)",
    NO_MINIMUM: "the loss curve has no minimum (parabola opens downward)",
    FLAT_CURVE: "curvature not distinguishable from the runs' noise (the vertex would be noise)",
    DUPLICATE_RUNS: "repeated runs removed from the runs table",
    NO_ALLOCATION_LAW: "fewer than 2 budgets with a minimum: no allocation law",
    ALLOCATION_IMPLAUSIBLE: "the allocation exponents are implausible (optima do not grow with compute)",
    LOSS_RISES: "the metric does not fall with compute (somewhere, or overall)",
    ASYMPTOTE_AT_DATA: "the loss law's asymptote E reached the lowest optimum (weakly identified)",
    ALPHA_AT_BOUND: "the loss law's exponent sits at the edge of its search range",
    EXPONENT_NOT_POSITIVE: "a parametric exponent is not positive (loss rising with size or data)",
    EXPONENT_IMPLAUSIBLE: "a parametric exponent is far above published fits",
}


@dataclass(frozen=True)
class Flag:
    """One flag on a fit: `code` (a key of `FLAG_TEXT`) and the line a person reads."""

    code: str
    text: str
    detail: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"code": self.code, "text": self.text, **({"detail": self.detail} if self.detail else {})}

    @classmethod
    def from_dict(cls, d: dict | str) -> "Flag":
        """The inverse of `to_dict` (a bare code gets its `FLAG_TEXT`)."""
        if isinstance(d, str):
            return cls(d, flag_text(d))
        return cls(str(d["code"]), str(d.get("text") or flag_text(str(d["code"]))), dict(d.get("detail") or {}))


def flag_text(code: str) -> str:
    """The explanation of a flag code (the code made readable when it is unknown)."""
    return FLAG_TEXT.get(code, code.replace("_", " "))


def codes(flags) -> list[str]:
    """The distinct codes of `flags` (Flags or codes), in order of first appearance."""
    return list(dict.fromkeys(f.code if isinstance(f, Flag) else str(f) for f in flags))
