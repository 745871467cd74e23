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

import base64
import html
import io
import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .comparator import AGREE, DRIFT, UNJUDGED, Comparison, RecordArrays, RecordDiff, config_of, record_arrays
from .config import Config
from .describe import describe_record
from .errors import InputError
from .memstate import Memstate, write_atomic
from .records import LOAD, Step, step_label, step_records

MAX_GRID_ROWS = 60  # steps shown in the grid; longer runs show the start and the steps around the first divergence
MAX_TILES = 256  # hidden units drawn as 28x28 tiles
WORST_ROWS = 12  # worst elements listed for the focus record
SIDE = 28  # MNIST images are 28x28 pixels
DPI = 80
KEY_PARAMETERS = ("loss/value", "hidden/weight", "hidden/bias", "output/weight", "output/bias")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(x: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(x), quote=True)


def anchor(step: Step, name: str) -> str:
    """The id of a record's row in the record table."""
    return "r-" + str(step) + "-" + name.replace("/", "-")


def category(r: RecordDiff) -> str:
    """exact (bit for bit) | noise (within the bound) | consistent (the bound says nothing there; each side
    is its op applied to its own inputs) | unjudged | propagated | origin | unclassified."""
    if r.kind == AGREE:
        return "exact" if r.max_abs == 0 else "consistent" if r.judged_by == "consistency" else "noise"
    if r.kind == UNJUDGED:
        return "unjudged"
    if r.is_origin:
        return "origin"
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
    if cat in ("consistent", "unjudged"):  # never a shade of "within noise"
        return COLOURS[cat]
    decades = math.log10(r.worst_ratio) if math.isfinite(r.worst_ratio) and r.worst_ratio > 1 else 6.0
    return f"hsl(32 95% {78 - 30 * min(decades / 6, 1.0):.0f}%)"


CELL_MARK = {"exact": "", "noise": "", "consistent": "c", "unjudged": "-", "propagated": "p", "origin": "O",
             "unclassified": "?"}
COLOURS = {"consistent": "hsl(200 45% 82%)", "unjudged": "hsl(270 25% 80%)"}


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


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height))


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{esc(alt)}">'


# --- the grid --------------------------------------------------------------------------------


def grid_units(units: list[Step], focus: Step | None, limit: int = MAX_GRID_ROWS) -> list[Step | None]:
    """The units the grid shows, None where a run of steps is left out: all when they fit, else
    the first third of `limit` and the rest around `focus` (the first divergence)."""
    if len(units) <= limit:
        return list(units)
    head = limit // 3
    at = units.index(focus) if focus in units else head
    lo = max(head, at - limit // 6)
    hi = min(len(units), lo + limit - head)
    lo = max(head, hi - (limit - head))
    shown: list[Step | None] = list(units[:head])
    if lo > head:
        shown.append(None)
    shown += units[lo:hi]
    if hi < len(units):
        shown.append(None)
    return shown


def render_grid(c: Comparison, cells: dict[tuple[Step, str], RecordDiff], units: list[Step | None],
                names: list[str]) -> str:
    head = "".join(f'<th class="rec"><span>{esc(n)}</span></th>' for n in names)
    rows = []
    for u in units:
        if u is None:
            rows.append(f'<tr class="gap"><th>&hellip;</th><td colspan="{len(names)}">steps not shown</td></tr>')
            continue
        tds = []
        for n in names:
            r = cells.get((u, n))
            if r is None:
                tds.append('<td class="none"></td>')
                continue
            cat = category(r)
            title = f"{step_label(u)} {n}: {status_text(r)}{ratio_phrase(r)}"
            tds.append(f'<td class="{cat}" style="background:{cell_colour(r)}"><a href="#{esc(anchor(u, n))}" '
                       f'title="{esc(title)}">{CELL_MARK[cat]}</a></td>')
        rows.append(f"<tr><th>{esc(step_label(u))}</th>{''.join(tds)}</tr>")
    legend = " ".join(f'<span class="key" style="background:{col}">{esc(label)}</span>' for label, col in (
        ("equal bit for bit", "#f2f2f2"), ("within noise", "hsl(130 50% 80%)"),
        ("consistent (c): bound vacuous, each side its op of its own inputs", COLOURS["consistent"]),
        ("not judged (-)", COLOURS["unjudged"]),
        ("propagated (p), darker by decades past its bound", "hsl(32 95% 60%)"), ("origin (O)", "hsl(0 80% 45%)")))
    return (f'<section id="grid"><h2>Steps by records</h2><p class="legend">{legend}</p>'
            f'<div class="scroll"><table class="grid"><thead><tr><th>step</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


# --- the causal chain ------------------------------------------------------------------------


def causal_chain(cfg: Config, start: tuple[Step, str], present: set[tuple[Step, str]]) -> list[list[tuple[Step, str]]]:
    """Records downstream of `start` through the dataflow graph, grouped by distance from it.
    Within the start's step; when the loss is not downstream there (an origin in the update),
    on through the next step to its loss and updated parameters."""
    specs = step_records(cfg)
    same = {s.name: [t.name for t in specs if s.name in t.inputs] for s in specs}
    later = {s.name: [t.name for t in specs if s.name in t.previous] for s in specs}

    def after(step: Step) -> Step:
        return 0 if step == LOAD else int(step) + 1

    def walk(steps: set[Step]) -> list[list[tuple[Step, str]]]:
        levels, seen, level = [], {start}, [start]
        while level:
            levels.append(level)
            nxt: list[tuple[Step, str]] = []
            for step, name in level:
                succ = [(step, m) for m in same.get(name, [])] + [(after(step), m) for m in later.get(name, [])]
                for k in succ:
                    if k[0] in steps and k in present and k not in seen:
                        seen.add(k)
                        nxt.append(k)
            level = nxt
        return levels

    levels = walk({start[0]})
    if not any(k == (start[0], "loss/value") for lv in levels for k in lv):
        levels = walk({start[0], after(start[0])})
    return levels


def render_chain(c: Comparison, cfg: Config | None, focus: RecordDiff, cells: dict[tuple[Step, str], RecordDiff]) -> str:
    if cfg is None:
        return ""
    levels = causal_chain(cfg, (focus.step, focus.name), set(cells))
    downstream = [k for lv in levels[1:] for k in lv]
    if not downstream:
        return ""
    diverged = [k for k in downstream if not cells[k]]
    cols = []
    for lv in levels:
        boxes = []
        for step, name in lv:
            r = cells[(step, name)]
            boxes.append(f'<a class="node {category(r)}" style="background:{cell_colour(r)}" '
                         f'href="#{esc(anchor(step, name))}"><b>{esc(name)}</b><br>{esc(step_label(step))}: '
                         f'{esc(status_text(r) + ratio_phrase(r))}</a>')
        cols.append(f'<div class="level">{"".join(boxes)}</div>')
    arrow = '<div class="arrow">&rarr;</div>'
    ends = [k for k in downstream if k[1] in KEY_PARAMETERS]
    end_text = "; ".join(f"{step_label(s)} {n} {status_text(cells[(s, n)])}{ratio_phrase(cells[(s, n)])}"
                         for s, n in ends)
    return (f'<section id="chain"><h2>Causal chain from {esc(focus.where)}</h2>'
            f"<p>{len(downstream)} records are computed from it downstream; {len(diverged)} of them diverge. "
            f"{esc(end_text)}.</p><div class=\"chain\">{arrow.join(cols)}</div></section>")


# --- plots -----------------------------------------------------------------------------------


def error_plot(c: Comparison, focus: RecordDiff | None) -> str:
    """Worst |A-B| / bound per step for the loss, the focus record, the parameters and any record."""
    plotted = [r for r in c.records if r.step != LOAD and has_ratio(r)]  # a shape or a stop has no ratio to plot
    steps = sorted({int(r.step) for r in plotted})
    if not steps:
        return ""
    finite = [r.worst_ratio for r in plotted if math.isfinite(r.worst_ratio)]
    floor, top = 1e-3, max(10.0, 3 * max(finite, default=1.0))  # the axis follows the data; inf is drawn at the top
    names = list(dict.fromkeys(([focus.name] if focus else []) + list(KEY_PARAMETERS)))
    by = {(r.step, r.name): r for r in plotted}
    from matplotlib.ticker import MaxNLocator, NullLocator

    fig = _figure(9, 3.6)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.14, top=0.96)
    ax = fig.add_subplot()
    worst = [max((min(r.worst_ratio, top) for r in plotted if r.step == s), default=0.0) for s in steps]
    ax.plot(steps, np.maximum(worst, floor), color="black", lw=2, label="worst of any record")
    for n in names:
        ys = [min(by[(s, n)].worst_ratio, top) if (s, n) in by else np.nan for s in steps]
        if not all(np.isnan(ys)):
            ax.plot(steps, np.maximum(ys, floor), marker="." if len(steps) < 40 else None, lw=1.2, label=n)
    ax.axhline(1.0, color="red", ls="--", lw=1, label="its bound")
    structural = focus is not None and focus.step != LOAD and not has_ratio(focus)
    if focus is not None and focus.step != LOAD:
        ax.axvline(int(focus.step), color="grey", ls=":", lw=1,
                   label=f"{focus.name} ({focus.kind}, no ratio)" if structural else None)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, top * 2)
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost a third of the plot's time
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("step")
    ax.set_ylabel("|A-B| / bound, worst element")
    ax.legend(fontsize=7, ncols=2)
    infinite = sum(1 for r in plotted if math.isinf(r.worst_ratio))
    return (f'<section id="errors"><h2>Error over steps</h2>{_img(_png(fig), "worst ratio per step")}'
            f"<p>The bound is what two correct sides can accumulate within one step; parameters whose ratio "
            f"grows across steps without an origin are drift. The axis runs from {floor:g} to {top:.3g}, the largest "
            f"finite ratio times 3"
            + (f"; {infinite} infinite ratio(s) (NaN or Inf against a number) are drawn at its top" if infinite else "")
            + (f". {focus.where} differs in {focus.kind}, which has no ratio: the dotted line marks its step"
               if structural and focus is not None else "")
            + ".</p></section>")


def axis_names(name: str, ndim: int) -> tuple[str, str]:
    """What a record's rows and columns are (spec shapes)."""
    if name == "hidden/grad_weight" or name.startswith("hidden/weight"):  # and its optimizer buffers
        return "hidden unit", "pixel"
    if name == "output/grad_weight" or name.startswith("output/weight"):
        return "class", "hidden unit"
    if ndim == 1:
        return "", "hidden unit" if name.startswith("hidden/") else ("sample" if name == "input/y" else "class")
    if name == "input/x":
        return "sample", "pixel"
    return "sample", "hidden unit" if name.startswith("hidden/") else "class"


def tiles(x: np.ndarray, limit: int = MAX_TILES) -> np.ndarray:
    """(n, 784) rows as 28x28 images in a grid, one pixel of NaN between them: row k's pixel
    p lands at tile k, row p // 28, column p % 28."""
    n = min(x.shape[0], limit)
    cols = max(1, math.ceil(math.sqrt(2 * n)))
    rows = math.ceil(n / cols)
    out = np.full((rows * (SIDE + 1) - 1, cols * (SIDE + 1) - 1), np.nan)  # (rows*29-1, cols*29-1)
    for k in range(n):
        r, col = divmod(k, cols)
        out[r * (SIDE + 1):r * (SIDE + 1) + SIDE, col * (SIDE + 1):col * (SIDE + 1) + SIDE] = x[k].reshape(SIDE, SIDE)
    return out


def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.nan)


def heatmaps(arr: RecordArrays, name: str, labels: tuple[str, str], tiled: bool) -> str:
    """A, B and |A-B| side by side; A and B on one colour scale."""
    a, b = _finite(np.atleast_2d(arr.a)), _finite(np.atleast_2d(arr.b))
    d = np.abs(a - b)
    if tiled:
        a, b, d = tiles(a), tiles(b), tiles(d)
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if lo < 0 < hi:
        lim = max(-lo, hi)
        lo, hi, cmap = -lim, lim, "RdBu_r"
    else:
        cmap = "viridis"
    rows, cols = axis_names(name, arr.a.ndim)
    if tiled:  # three panels stacked, each as wide as the page, so that a tile is tens of pixels across
        panel = 9.0 * a.shape[0] / a.shape[1]
        fig = _figure(10, 3 * (panel + 0.4))
        axes = fig.subplots(3, 1, gridspec_kw={"left": 0.02, "right": 0.98, "bottom": 0.01, "top": 0.97,
                                               "hspace": 0.12})
    else:
        fig = _figure(13, 4.2 if a.shape[1] / max(a.shape[0], 1) < 4 else 3.2)
        axes = fig.subplots(1, 3, gridspec_kw={"left": 0.04, "right": 0.98, "bottom": 0.12, "top": 0.9, "wspace": 0.3})
    dmax = float(np.nanmax(d)) if np.isfinite(d).any() else 1.0
    for ax, data, title, cm, vmin, vmax in ((axes[0], a, labels[0], cmap, lo, hi), (axes[1], b, labels[1], cmap, lo, hi),
                                            (axes[2], d, f"|{labels[0]} - {labels[1]}|", "magma", 0.0, dmax or 1.0)):
        im = ax.imshow(data, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest",
                       aspect="equal" if tiled else "auto")
        ax.set_title(title, fontsize=9)
        if tiled:
            ax.set_axis_off()
        else:
            ax.set_ylabel(rows, fontsize=8)
            ax.set_xlabel(cols, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    what = f"{name}: one 28x28 tile per {rows}" if tiled else name
    return _img(_png(fig), what)


def histogram(arr: RecordArrays, labels: tuple[str, str]) -> str:
    """log10 |A-B| of the differing elements, against log10 of what is allowed."""
    d = np.abs(arr.a - arr.b).ravel()
    fin = d[np.isfinite(d) & (d > 0)]
    fig = _figure(6.5, 3.2)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    if fin.size:
        ax.hist(np.log10(fin), bins=60, histtype="stepfilled", color="tab:orange", alpha=0.8, label=f"|{labels[0]}-{labels[1]}| ({fin.size})")
    if arr.allowed is not None:
        allowed = np.broadcast_to(arr.allowed, arr.a.shape).ravel()
        allowed = allowed[np.isfinite(allowed) & (allowed > 0)]
        if allowed.size:
            ax.hist(np.log10(allowed), bins=60, histtype="stepfilled", color="tab:green", alpha=0.5, label="allowed (noise bound)")
    ax.set_xlabel("log10 of the absolute difference")
    ax.set_ylabel("elements")
    summary = f"{d.size - int((d > 0).sum())} of {d.size} elements are equal; {int((~np.isfinite(d)).sum())} non-finite"
    ax.set_title(summary, fontsize=9)
    ax.legend(fontsize=8)
    return _img(_png(fig), f"histogram of the differences: {summary}")


def worst_table(arr: RecordArrays, labels: tuple[str, str], limit: int = WORST_ROWS) -> str:
    """The worst elements by |A-B| over the bound (by |A-B| where there is no bound)."""
    with np.errstate(all="ignore"):
        d = np.abs(arr.a - arr.b)
        d = np.where(np.isnan(d) & ~(np.isnan(arr.a) & np.isnan(arr.b)), np.inf, np.nan_to_num(d, nan=0.0))
        allowed = None if arr.allowed is None else np.broadcast_to(arr.allowed, d.shape)
        key = d if allowed is None else np.where(d == 0, 0.0, d / allowed)
    order = np.argsort(-np.nan_to_num(key, nan=np.inf).ravel(), kind="stable")[:limit]
    a, b = labels
    head = (f"<tr><th>index</th><th>{esc(a)}</th><th>{esc(b)}</th><th>|{esc(a)}-{esc(b)}|</th><th>allowed</th>"
            f"<th>ratio</th><th>{esc(a)} - op({esc(a)}'s inputs)</th><th>{esc(b)} - op({esc(b)}'s inputs)</th></tr>")
    rows = []
    for flat in order:
        i = np.unravel_index(int(flat), d.shape)
        cells = [[int(k) for k in i], f"{arr.a[i]:.9g}", f"{arr.b[i]:.9g}", f"{d[i]:.3g}",
                 "" if allowed is None else f"{allowed[i]:.3g}", "" if allowed is None else f"{key[i]:.3g}",
                 "" if arr.off_a is None else f"{arr.off_a[i]:.3g}", "" if arr.off_b is None else f"{arr.off_b[i]:.3g}"]
        rows.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
    return f'<table class="worst">{head}{"".join(rows)}</table>'


def render_focus(c: Comparison, focus: RecordDiff, a: Memstate, b: Memstate) -> str:
    labels = (f"A {c.a.name}", f"B {c.b.name}")
    what = "First origin" if focus.is_origin else "First divergence"
    parts = [f'<section id="focus"><h2>{what}: {esc(focus.where)}</h2>',
             "<ul>" + "".join(f"<li>{esc(line.strip())}</li>" for line in describe_record(focus, (c.a.label, c.b.label)))
             + "</ul>"]
    arr = record_arrays(a, b, focus.step, focus.name, c.tolerance) if focus.kind in ("values", "labels") else None
    if arr is not None:
        if arr.a.ndim >= 1 and arr.a.size > 1:
            parts.append(heatmaps(arr, focus.name, labels, tiled=False))
            if arr.a.ndim == 2 and arr.a.shape[1] == SIDE * SIDE:
                n = arr.a.shape[0]
                more = f" (the first {MAX_TILES} of {n})" if n > MAX_TILES else ""
                parts.append(f"<h3>As 28x28 images, one per row{more}</h3>")
                parts.append(heatmaps(arr, focus.name, labels, tiled=True))
            parts.append(histogram(arr, labels))
        parts.append("<h3>Worst elements</h3>" + worst_table(arr, labels))
        if arr.off_a is not None and arr.off_b is not None:
            parts.append("<p>The last two columns are each side's value minus the op applied to that side's own "
                         "recorded inputs: a correct side stays within its own rounding there.</p>")
    parts.append("</section>")
    return "".join(parts)


# --- tables ----------------------------------------------------------------------------------


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


# --- the page --------------------------------------------------------------------------------


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.1em}
.verdict.agree{background:#e3f6e5;border:1px solid #6c6}
.verdict.drift{background:#fff3dc;border:1px solid #e90}
.verdict.diverged{background:#fde4e4;border:1px solid #d33}
.scroll{overflow:auto;max-height:75vh}
table{border-collapse:collapse} td,th{padding:2px 6px;text-align:left;vertical-align:top}
table.grid td{width:18px;height:16px;padding:0;border:1px solid #fff;text-align:center;font-size:11px}
table.grid td a{display:block;color:#000;text-decoration:none;height:100%}
table.grid td.origin a{color:#fff;font-weight:bold}
table.grid th.rec{height:11em;vertical-align:bottom;padding:0}
table.grid th.rec span{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px}
table.grid tr.gap td{color:#888;font-style:italic}
table.grid th{font-size:11px;white-space:nowrap}
.key{padding:1px 6px;margin-right:6px;border-radius:3px;font-size:12px}
table.records td,table.manifests td,table.manifests th,table.worst td{border-bottom:1px solid #eee;font-size:12px}
table.records tr.origin td:nth-child(3){color:#b00;font-weight:bold}
table.records tr.propagated td:nth-child(3){color:#b60}
table.records tr:target{outline:3px solid #36c}
table.manifests tr.differs{background:#fff3b0}
.chain{display:flex;align-items:center;overflow-x:auto;gap:4px}
.level{display:flex;flex-direction:column;gap:4px}
.node{display:block;padding:3px 6px;border-radius:4px;font-size:11px;color:#000;text-decoration:none;white-space:nowrap}
.node.origin{color:#fff}
.arrow{font-size:20px;color:#888}
img{max-width:100%}
footer{margin-top:2em;color:#888;font-size:12px}
"""


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
        head = (f"DRIFT: {len(c.divergences)} records differ by more than a step's rounding, the first at {first.where}; "
                f"every one is explained by differences upstream (no origin).")
        return ReportFacts(title, "DRIFT", head + (" Exit 1 under --strict." if c.strict else " This passes."), code)
    n, more = len(c.origins), len(c.divergences) - len(c.origins)
    counts = (f"{n} origin{'s' if n != 1 else ''} in all, {more} more record{'s' if more != 1 else ''} only pass "
              f"differences on.")
    if first.kind != "values":  # stopped, missing, shape, labels: what happened says more than the op
        return ReportFacts(title, "DIVERGED", f"DIVERGED at {first.where} ({first.kind}): {first.note or 'the first origin'}. "
                           + counts, code)
    return ReportFacts(title, "DIVERGED", f"DIVERGED at {step_label(first.step)}, layer {layer}, op {op or layer} "
                       f"({first.kind}): the first origin. " + counts, code)


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
             (f"<p>A = {esc(c.a.name)} ({esc(c.a.path)})<br>B = {esc(c.b.name)} ({esc(c.b.path)})<br>"
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
        parts.append(error_plot(c, first))
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

