"""How one record shows in the report: its category (exact, within noise, consistent, not judged, propagated,
origin), its colour and mark in the grid, its status and ratio in words; and HTML escaping."""

from __future__ import annotations

import html
import math

from harness.judge.record import AGREE, SUSPECT, UNJUDGED, RecordDiff
from harness.spec.records import Step


def esc(x: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(x), quote=True)


def anchor(step: Step, name: str) -> str:
    """The id of a record's row in the record table."""
    return "r-" + str(step) + "-" + name.replace("/", "-")


def category(r: RecordDiff) -> str:
    """exact (bit for bit) | noise (within the bound) | consistent (the bound says nothing there; each side
    is its op applied to its own inputs) | unjudged | propagated | suspect (possible rounding of a
    systematic order of summation) | origin | unclassified."""
    if r.kind == AGREE:
        return "exact" if r.max_abs == 0 else "consistent" if r.judged_by == "consistency" else "noise"
    if r.kind == UNJUDGED:
        return "unjudged"
    if r.is_origin:
        return "origin"
    if r.role == SUSPECT:
        return "suspect"
    return "propagated" if r.role else "unclassified"


def cell_colour(r: RecordDiff) -> str:
    """Grey for equal, greens up to the bound, oranges darker by decades past it, red for an origin."""
    cat = category(r)
    if cat == "exact":
        return "#f2f2f2"
    if cat == "noise":
        return f"hsl(130 50% {93 - 28 * min(max(r.worst_ratio, 0.0), 1.0):.0f}%)"
    if cat == "origin":
        return "hsl(0 80% 45%)"
    if cat in ("consistent", "unjudged", "suspect"):  # never a shade of "within noise"
        return COLOURS[cat]
    decades = math.log10(r.worst_ratio) if math.isfinite(r.worst_ratio) and r.worst_ratio > 1 else 6.0
    return f"hsl(32 95% {78 - 30 * min(decades / 6, 1.0):.0f}%)"


CELL_MARK = {"exact": "", "noise": "", "consistent": "c", "unjudged": "-", "propagated": "p", "suspect": "s",
             "origin": "O", "unclassified": "?"}


COLOURS = {"consistent": "hsl(200 45% 82%)", "unjudged": "hsl(270 25% 80%)", "suspect": "hsl(55 90% 62%)"}


def ratio_text(r: RecordDiff) -> str:
    """The worst |A-B| over its bound, or the kind of difference where no ratio applies (shape, stopped...)."""
    if not has_ratio(r):
        return r.kind
    return "inf" if math.isinf(r.worst_ratio) else f"{r.worst_ratio:.3g}"


def has_ratio(r: RecordDiff) -> bool:
    return r.kind in (AGREE, "values", "labels") and r.judged_by != "graph"


def ratio_phrase(r: RecordDiff) -> str:
    """", worst 2.5x its bound" where a ratio means something, else "" (a shape has no ratio)."""
    return f", worst {ratio_text(r)}x its bound" if has_ratio(r) else ""


def status_text(r: RecordDiff) -> str:
    cat = category(r)
    if r.kind == UNJUDGED:
        return "not judged"
    if r.kind not in (AGREE, "values"):
        return f"origin ({r.kind})"
    return {"exact": "equal", "noise": "within noise", "consistent": "consistent (bound vacuous)"}.get(cat, cat)
