"""The HTML report: one self-contained file that shows where two memstates part and why.

The page holds no script and loads nothing: styles are inline, plots are PNG data URIs drawn
with matplotlib, and a Content-Security-Policy forbids scripts and every request, so it opens
offline from a file and reads the same with JavaScript off. Every string that comes from a
manifest, an implementation's name or an error message is escaped.

Sections: the verdict, the first origin and the command that reproduces it; a grid of steps by
records coloured by how far each record is past its bound, every cell linked to that record's
row; the causal chain from the first origin through the dataflow graph; error over steps; the
origin record as heatmaps (hidden-layer weights also as 28x28 tiles per unit), a histogram of
its differences and its worst elements; both manifests side by side. An agreeing pair gets a
short page that says so.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.compare.comparison import DRIFT, Comparison
from harness.compare.stream import config_of
from harness.errors import InputError
from harness.judge.record import AGREE, UNJUDGED, RecordDiff
from harness.report.cells import anchor, category, esc, ratio_text, status_text
from harness.report.text import describe_record
from harness.report.grid import grid_units, render_chain, render_grid
from harness.report.plots import error_plot, render_focus
from harness.report.style import STYLE
from harness.spec.records import LOAD, Step, step_label
from harness.store.format import write_atomic
from harness.store.memstate import Memstate

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_records(c: Comparison, keys: list[tuple[Step, str]], cells: dict[tuple[Step, str], RecordDiff]) -> str:
    labels = (c.a.label, c.b.label)
    rows = []
    for k in keys:
        r = cells[k]
        idx = "" if r.worst_index is None else str(list(r.worst_index))
        vals = ("", "") if r.worst_a is None else (f"{r.worst_a:.9g}", f"{r.worst_b:.9g}")
        words = " ".join(line.strip() for line in describe_record(r, labels)[2:]) if not r else r.note
        over = f"{r.n_over}/{r.size}" if r.size else ""
        cells_html = [esc(step_label(r.step)), esc(r.name), esc(status_text(r)), esc(ratio_text(r)),
                      f"{r.max_abs:.3g}", over, esc(idx), esc(vals[0]), esc(vals[1]), esc(words)]
        rows.append(f'<tr id="{esc(anchor(r.step, r.name))}" class="{category(r)}">'
                    + "".join(f"<td>{x}</td>" for x in cells_html) + "</tr>")
    return ('<section id="records"><h2>Records</h2><div class="scroll"><table class="records"><thead><tr>'
            "<th>step</th><th>record</th><th>status</th><th>worst ratio</th><th>max |A-B|</th><th>over</th>"
            "<th>worst index</th><th>A</th><th>B</th><th>why</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div></section>")


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """A manifest as dotted keys and short printable values."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out.update(flatten(v, key + "."))
            elif key == "units" and isinstance(v, list):
                out[key] = f"{len(v)} units"
            else:
                text = v if isinstance(v, str) else json.dumps(v, default=str)
                out[key] = text if len(text) <= 300 else text[:300] + "..."
    return out


def render_stopped(c: Comparison) -> str:
    """A side that did not complete, in its own words: why it stopped, its stderr's tail, its build output."""
    blocks = []
    for side in (c.a, c.b):
        stopped = side.manifest.get("stopped")
        if side.status == "complete":
            continue
        block = [f"<h3>{esc(side.label)} = {esc(side.name)}: {esc(side.stop_summary)}</h3>"]
        for key, what in (("build_output", "build output"), ("stderr_tail", "stderr (its last 2,000 bytes)")):
            text = stopped.get(key) if isinstance(stopped, dict) else None
            if isinstance(text, str) and text.strip():
                block.append(f"<p>{what}:</p><pre>{esc(text.strip())}</pre>")
        blocks.append("".join(block))
    return f'<section id="stopped"><h2>Where a side stopped</h2>{"".join(blocks)}</section>' if blocks else ""


def render_manifests(c: Comparison) -> str:
    fa, fb = flatten(c.a.manifest), flatten(c.b.manifest)
    keys = list(dict.fromkeys(list(fa) + list(fb)))
    rows = []
    for k in keys:
        x, y = fa.get(k, ""), fb.get(k, "")
        rows.append(f'<tr class="{"differs" if x != y else "same"}"><th>{esc(k)}</th><td>{esc(x)}</td>'
                    f"<td>{esc(y)}</td></tr>")
    return (f'<section id="manifests"><h2>Manifests</h2><p>Rows that differ are highlighted.</p>'
            f'<table class="manifests"><tr><th></th><th>A {esc(c.a.name)}</th><th>B {esc(c.b.name)}</th></tr>'
            f'{"".join(rows)}</table></section>')


@dataclass
class ReportFacts:
    """What the page says at the top, gathered once."""

    title: str
    verdict: str
    headline: str
    exit_code: int


def facts(c: Comparison) -> ReportFacts:
    first = c.first
    units = {r.step for r in c.records}
    title = f"{c.a.name} vs {c.b.name}"
    code = c.exit_code
    if c.refused is not None:
        return ReportFacts(title, "UNSUPPORTED", f"UNSUPPORTED: {c.refused.label} ({c.refused.name}) "
                           f"{c.refused.stop_summary}. Nothing of this config was compared; the implementation "
                           f"refused it (not a crash).", code)
    if first is None:
        closest = max((r for r in c.records if r.kind == AGREE), key=lambda r: r.worst_ratio, default=None)
        equal = sum(1 for r in c.records if r.max_abs == 0)
        if equal == len(c.records):
            tail = f" All {equal} are equal bit for bit."
        elif closest is not None:
            tail = (f" The closest came to {closest.worst_ratio:.2g} of its bound ({closest.where}); "
                    f"{equal} of {len(c.records)} are equal bit for bit.")
        else:
            tail = ""
        steps = sum(1 for u in units if u != LOAD)
        return ReportFacts(title, "AGREE", f"AGREE: every one of the {len(c.records)} records "
                           f"({'the load and ' if LOAD in units else ''}{steps} steps) is within its noise bound.{tail}",
                           code)
    layer, _, op = first.name.partition("/")
    if c.verdict == DRIFT and all(r.kind == UNJUDGED for r in c.divergences):
        return ReportFacts(title, "NOT JUDGED IN FULL", f"NOT JUDGED IN FULL: {len(c.divergences)} record(s) could not "
                           f"be judged, the first at {first.where}: {first.note}. Every other record is within its "
                           f"noise bound." + (" Exit 1 under --strict." if c.strict else " This passes."), code)
    if c.verdict == DRIFT:
        suspects = c.suspects
        head = (f"DRIFT: {len(c.divergences)} records differ by more than a step's rounding, the first at {first.where}; "
                + (f"{len(suspects)} of them suspect (beyond random rounding, within what some order of summation "
                   f"can round: possible rounding, first {suspects[0].where}), no origin." if suspects else
                   "every one is explained by differences upstream (no origin)."))
        return ReportFacts(title, "DRIFT", head + (" Exit 1 under --strict." if c.strict else " This passes."), code)
    n, more = len(c.origins), len(c.divergences) - len(c.origins)
    counts = (f"{n} origin{'s' if n != 1 else ''} in all, {more} more record{'s' if more != 1 else ''} only pass "
              f"differences on.")
    if first.kind != "values":  # stopped, missing, shape, labels: what happened says more than the op
        return ReportFacts(title, "DIVERGED", f"DIVERGED at {first.where} ({first.kind}): {first.note or 'the first origin'}. "
                           + counts, code)
    return ReportFacts(title, "DIVERGED", f"DIVERGED at {step_label(first.step)}, layer {layer}, op {op or layer} "
                       f"({first.kind}): the first origin. " + counts, code)


def diagnosis_banner(c: Comparison) -> str:
    """What the first origin looks like, under the verdict."""
    d = c.first.diagnosis if c.first is not None and c.first.is_origin else None
    if d is None:
        return ""
    evidence = f"<br><small>{esc(d.evidence)}</small>" if d.evidence else ""
    return f'<p class="diagnosis" id="diagnosis">Looks like: {esc(d.detail)}{evidence}</p>'


def render_report(c: Comparison, a: Memstate, b: Memstate, command: str | None = None) -> str:
    """The whole page as a string."""
    f = facts(c)
    cells = {(r.step, r.name): r for r in c.records}
    parts = [(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f"<title>memstate: {esc(f.verdict)}: {esc(f.title)}</title><style>{STYLE}</style></head><body>"),
             f"<h1>memstate: {esc(f.title)}</h1>",
             f'<p class="verdict {c.verdict}" id="verdict">{esc(f.headline)}</p>',
             diagnosis_banner(c),
             (f"<p>A = {esc(c.a.title)} ({esc(c.a.path)})<br>B = {esc(c.b.title)} ({esc(c.b.path)})<br>"
             f"tolerance: {esc(c.tolerance.describe())}<br>exit code {f.exit_code}</p>")]
    if command:
        parts.append(f"<p>Reproduce:</p><pre>{esc(command)}</pre>")
    again = shlex.join(["python", "-m", "harness.compare", os.path.abspath(c.a.path), os.path.abspath(c.b.path)])
    parts.append(f"<p>Compare the saved memstates again (from any directory):</p><pre>{esc(again)}</pre>")
    if c.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in c.notes) + "</ul>")
    parts.append(render_stopped(c))
    first = c.first
    if first is not None:
        cfg = config_of(a) or config_of(b)
        units = list(dict.fromkeys(r.step for r in c.records))
        names = list(dict.fromkeys([r.name for r in c.records if r.step != LOAD] + [r.name for r in c.records]))
        shown = grid_units(units, first.step)
        parts.append(render_grid(c, cells, shown, names))
        parts.append(render_chain(c, cfg, first, cells))
        parts.append(error_plot(c, first, cfg))
        parts.append(render_focus(c, first, a, b))
        keep = {u for u in shown if u is not None}
        parts.append(render_records(c, [k for k in cells if k[0] in keep], cells))
    parts.append(render_manifests(c))
    parts.append("<footer>Written by memstate (python -m harness.compare). The page holds no script and loads "
                 "nothing from the network; docs/report.md explains each section.</footer></body></html>")
    return "".join(parts)


def write_report(c: Comparison, a: Memstate, b: Memstate, path: str | Path, command: str | None = None) -> Path:
    """Render and write the page atomically (a reader never sees half a report)."""
    path = Path(path)
    text = render_report(c, a, b, command)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot write the report: {e.strerror or e}") from None
    return path
