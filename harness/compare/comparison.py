"""The outcome of comparing two memstates: each side as the report names it, every record's RecordDiff,
the notes, and the verdict: agree (nothing diverges), drift (divergences, no origin; suspects among them
are listed), diverged (an origin) or unsupported (a side refused the config: nothing to compare, not a
crash). Truthy when it passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.judge.record import SUSPECT, UNJUDGED, RecordDiff, Tolerance

AGREE_VERDICT, DRIFT, DIVERGED, UNSUPPORTED = "agree", "drift", "diverged", "unsupported"


@dataclass
class Side:
    """What the report says about one side."""

    label: str
    path: str
    name: str
    status: str
    stop_summary: str
    manifest: dict[str, Any]
    precision: str = "float32"  # what it computed in beyond its dtype (declared, or stated on the command line)

    @property
    def title(self) -> str:
        """The name, with a reduced precision where it has one: "numpy (tf32)"."""
        return self.name if self.precision == "float32" else f"{self.name} ({self.precision})"


@dataclass
class Comparison:
    """The outcome of comparing two memstates.

    Truthy when it passes: agree, or drift unless `strict` (then only agree passes).
    """

    a: Side
    b: Side
    tolerance: Tolerance
    records: list[RecordDiff]
    notes: list[str] = field(default_factory=list)
    manifest_diff: list[tuple[str, Any, Any]] = field(default_factory=list)
    strict: bool = False

    @property
    def divergences(self) -> list[RecordDiff]:
        return [r for r in self.records if not r]

    @property
    def origins(self) -> list[RecordDiff]:
        """Every origin, in step order."""
        return [r for r in self.records if r.is_origin]

    @property
    def suspects(self) -> list[RecordDiff]:
        """Divergences beyond random rounding that some order of summation could still explain (not origins)."""
        return [r for r in self.records if r.role == SUSPECT]

    @property
    def first(self) -> RecordDiff | None:
        """The answer: the first origin, else (drift) the first divergence, else None."""
        origins = self.origins  # a RecordDiff that diverges is falsy, so no `or` here
        if origins:
            return origins[0]
        return next(iter(self.divergences), None)

    @property
    def refused(self) -> Side | None:
        """The side that refused the config (ended `unsupported`), if one did."""
        return next((s for s in (self.a, self.b) if s.status == "unsupported"), None)

    @property
    def verdict(self) -> str:
        if self.refused is not None:
            return UNSUPPORTED
        if self.origins:
            return DIVERGED
        return DRIFT if self.divergences else AGREE_VERDICT

    def __bool__(self) -> bool:
        return self.verdict == AGREE_VERDICT or (self.verdict == DRIFT and not self.strict)  # unsupported fails

    @property
    def exit_code(self) -> int:
        """0 passes, 1 fails, 2 when a side's memstate is damaged (compared only up to the damage)."""
        return 2 if "damaged" in (self.a.status, self.b.status) else 0 if self else 1

    def to_dict(self) -> dict[str, Any]:
        def rec(r: RecordDiff) -> dict[str, Any]:
            return {k: v for k, v in asdict(r).items()}
        return {
            "verdict": self.verdict,
            "passed": bool(self),
            "exit_code": self.exit_code,
            "strict": self.strict,
            "first": rec(self.first) if self.first is not None else None,
            "diagnosis": asdict(self.first.diagnosis) if self.first is not None and self.first.diagnosis else None,
            "origins": [(r.step, r.name) for r in self.origins],
            "suspects": [(r.step, r.name) for r in self.suspects],
            "not_judged": [{"step": r.step, "name": r.name, "why": r.note} for r in self.records if r.kind == UNJUDGED],
            "judged_by_consistency": [(r.step, r.name) for r in self.records if r.judged_by == "consistency"],
            "tolerance": asdict(self.tolerance),
            "a": {k: v for k, v in asdict(self.a).items() if k != "manifest"},
            "b": {k: v for k, v in asdict(self.b).items() if k != "manifest"},
            "notes": self.notes,
            "manifest_diff": [{"path": p, "a": a, "b": b} for p, a, b in self.manifest_diff],
            "counts": {"records": len(self.records), "diverged": len(self.divergences),
                       "origins": len(self.origins), "suspects": len(self.suspects)},
            "records": [rec(r) for r in self.records],
        }
