"""What the text report and the HTML report say about one diverging record, in words."""

from __future__ import annotations

from .comparator import RecordDiff


def describe_record(r: RecordDiff, names: tuple[str, str]) -> list[str]:
    """Lines on the worst element, how many are over, and whether the op itself differs (origin)."""
    a, b = names
    lines = []
    if r.kind in ("values", "labels"):
        idx = list(r.worst_index) if r.worst_index is not None else []
        bound = {"noise": "the noise bound", "consistency": "the noise bound, vacuous here"}.get(r.judged_by,
                                                                                             "the tolerance")
        own = abs(r.worst_a - r.worst_b) if r.worst_a is not None and r.worst_b is not None else r.max_abs
        lines.append(f"  worst element {idx}: {a}={r.worst_a!r} {b}={r.worst_b!r} |{a}-{b}|={own:.3g} "
                     f"({r.worst_ratio:.3g}x {bound}); the record's largest |{a}-{b}|={r.max_abs:.3g}, "
                     f"rel={r.max_rel:.3g}, ulp={r.max_ulp:.0f}")
        if r.judged_by == "consistency":
            lines.append(f"  {r.n_over} of {r.size} elements where a side is not the op applied to its own inputs")
        else:
            lines.append(f"  {r.n_over} of {r.size} elements beyond {bound}")
        if r.role == "origin" and r.n_unexplained:
            where = list(r.unexplained_index or ())
            lines.append(f"  origin: {r.n_unexplained} elements not explained by the inputs' differences "
                         f"(worst {where}: {r.explained_ratio:.3g}x the op's own rounding)")
            if r.inconsistent in (a, b):
                other = b if r.inconsistent == a else a
                lines.append(f"  {r.inconsistent}'s value is not the op applied to {r.inconsistent}'s own inputs; "
                             f"{other}'s is")
            elif r.inconsistent:
                lines.append("  neither side's value is the op applied to its own inputs as the spec defines it")
        elif r.role == "origin" and r.name == "input/x" and r.inconsistent in (a, b):
            other = b if r.inconsistent == a else a
            lines.append(f"  {r.inconsistent}'s pixels are not bytes / 255; {other}'s are")
        elif r.role == "origin" and r.judged_by == "graph":
            lines.append("  origin by the graph alone: its inputs are not recorded, and none recorded diverged")
        elif r.role == "propagated":
            lines.append(f"  propagated: the inputs' differences explain it ({r.explained_ratio:.3g}x the op's own "
                         f"rounding at worst)" if r.judged_by != "graph" else "  propagated: an input diverged before it")
        nonfinite = [f"{a} {r.nan_a} NaN {r.inf_a} Inf" if r.nan_a or r.inf_a else "",
                     f"{b} {r.nan_b} NaN {r.inf_b} Inf" if r.nan_b or r.inf_b else ""]
        if any(nonfinite):
            lines.append("  non-finite: " + "; ".join(x for x in nonfinite if x))
    elif r.kind == "shape":
        lines.append(f"  shape {a} {list(r.shape_a or ())} vs {b} {list(r.shape_b or ())}")
    if r.note:
        lines.append(f"  {r.note}")
    return lines
