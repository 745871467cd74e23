"""What a comparison says in words: the text the command prints (the verdict, the first origin, the notes)
and the sentences on one diverging record that the text and the HTML report share."""

from __future__ import annotations

from harness.compare.comparison import Comparison
from harness.errors import printable
from harness.judge.record import RecordDiff
from harness.spec.records import step_label


def describe_record(r: RecordDiff, names: tuple[str, str]) -> list[str]:
    """Lines on the worst element, how many are over, and whether the op itself differs (origin)."""
    a, b = names
    lines = []
    if r.diagnosis is not None:  # what kind of bug the origin looks like
        lines.append(f"  looks like: {r.diagnosis.detail}")
        if r.diagnosis.evidence:
            lines.append(f"    evidence: {r.diagnosis.evidence}")
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
        if r.role in ("origin", "suspect") and r.n_unexplained:
            where = list(r.unexplained_index or ())
            lines.append(f"  {r.role}: {r.n_unexplained} elements not explained by the inputs' differences "
                         f"(worst {where}: {r.explained_ratio:.3g}x the op's own random rounding)")
            if r.evidence:
                lines.append(f"    {'why an origin' if r.role == 'origin' else 'why not an origin'}: {r.evidence}")
            if r.role == "origin" and r.inconsistent in (a, b):  # of a suspect, which side rounds further says nothing
                other = b if r.inconsistent == a else a
                lines.append(f"  {r.inconsistent}'s value is not the op applied to {r.inconsistent}'s own inputs; "
                             f"{other}'s is")
            elif r.role == "origin" and r.inconsistent:
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


def _suspects(c: Comparison, names: tuple[str, str], limit: int) -> list[str]:
    """The suspects: records beyond random rounding that some correct order of summation could produce."""
    suspects = c.suspects
    if not suspects:
        return []
    steps = len({r.step for r in suspects})
    lines = [(f"{len(suspects)} suspect record(s) at {steps} step(s): beyond the op's random rounding, within what "
              f"some order of summation (sorted, grouped, blocked) can round, and with no preferred sign; not origins "
              f"(docs/comparing.md, \"Origin, suspect or propagated\"), first ones:")]
    for r in suspects[:limit]:
        lines.append(f"  {step_label(r.step)} {r.name}: {r.n_unexplained}/{r.size} beyond random rounding (up to "
                     f"{r.explained_ratio:.3g}x), {r.worst_case_ratio:.2g} of its worst case, t = {r.systematic:.2g}")
    return lines


def format_text(c: Comparison, limit: int = 8) -> str:
    names = (c.a.label, c.b.label)
    cfg = c.a.manifest.get("config", {})
    lines = [f"memstate: {c.a.label} = {c.a.title} ({c.a.path})", f"          {c.b.label} = {c.b.title} ({c.b.path})"]
    if cfg:
        lines.append("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    lines.append(f"tolerance: {c.tolerance.describe()}")
    for path, x, y in c.manifest_diff:
        lines.append(f"differs: {path}: {names[0]}={x!r} {names[1]}={y!r}")
    for note in c.notes:
        lines.append(f"note: {note}")
    for side in (c.a, c.b):  # a side that stopped: its own words (stderr, the compiler's output), not only a code
        stopped = side.manifest.get("stopped") or {}
        for key, what in (("build_output", "build output"), ("stderr_tail", "stderr")):
            text = stopped.get(key)
            if side.status != "complete" and isinstance(text, str) and text.strip():
                tail_lines = text.strip().splitlines()[-8:]
                lines.append(f"{side.label}'s {what}, last {len(tail_lines)} line(s):")
                lines.extend(f"  | {line}" for line in tail_lines)
    n_steps = len({r.step for r in c.records})
    lines.append(f"compared {len(c.records)} records over {n_steps} units (load + steps): "
                 f"{len(c.records) - len(c.divergences)} agree, {len(c.divergences)} diverge")
    first = c.first
    refused = c.refused
    if refused is not None:
        lines.append(f"verdict: UNSUPPORTED: {refused.label} ({refused.name}) {refused.stop_summary}; nothing of "
                     f"this config was compared (not a crash: the implementation refused it), exit 1")
        return "\n".join(printable(line) for line in lines)
    if first is None:
        consistent = [r for r in c.records if r.judged_by == "consistency"]
        lines.append("verdict: AGREE (every record within its noise bound" + (
            f"; {len(consistent)} where that bound says nothing judged by each side's consistency with its own "
            f"inputs instead, see the notes)" if consistent else ")"))
        return "\n".join(printable(line) for line in lines)
    if c.verdict == "drift" and all(r.kind == "unjudged" for r in c.divergences):
        lines.append(f"verdict: NOT JUDGED IN FULL (drift): {len(c.divergences)} record(s) could not be judged, first "
                     f"{first.where}: {first.note}; every other record within its noise bound")
        lines.append("  this passes only without --strict" + (": exit 1 (--strict)" if c.strict else ""))
        return "\n".join(printable(line) for line in lines)
    if c.verdict == "drift":
        suspects = c.suspects
        lines.append(f"verdict: DRIFT: {len(c.divergences)} record(s) differ by more than a step's rounding, first at "
                     f"{first.where}; " + (f"{len(suspects)} suspect(s) (possible rounding), no origin" if suspects
                                           else "each is explained by differences upstream (no origin)"))
        lines.append("  drift passes" + (" only without --strict: exit 1 (--strict)" if c.strict else
                                          "; use --strict to make it fail"))
        lines.extend(describe_record(first, names))
        lines.extend(_suspects(c, names, limit))
        return "\n".join(printable(line) for line in lines)
    origins = c.origins
    lines.append(f"verdict: DIVERGED at {first.where} ({first.kind}): the first origin")
    lines.extend(describe_record(first, names))
    if len(origins) > 1:
        lines.append(f"{len(origins)} origins in all (where the op itself differs), first ones:")
        for r in origins[:limit]:
            lines.append(f"  {step_label(r.step)} {r.name} ({r.kind})")
    lines.extend(_suspects(c, names, limit))
    propagated = [r for r in c.divergences if not r.is_origin and r.role != "suspect"]
    if propagated:
        lines.append(f"{len(propagated)} more diverging record(s) only pass differences on, first ones:")
        for r in propagated[:limit]:
            extra = f"{r.n_over}/{r.size} over, worst {r.worst_ratio:.3g}x" if r.kind == "values" else r.note
            lines.append(f"  {step_label(r.step)} {r.name} {extra}")
    return "\n".join(printable(line) for line in lines)
