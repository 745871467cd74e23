"""The report's pictures, PNG data URIs drawn with matplotlib (no pyplot, no global state): error over steps,
the focus record as heatmaps (hidden-layer weights also as 28x28 tiles per unit), a histogram of its differences
against its bound, and its worst elements."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from harness.compare.comparison import Comparison
from harness.compare.stream import RecordArrays, config_of, record_arrays
from harness.judge.record import RecordDiff
from harness.report.cells import esc, has_ratio
from harness.report.text import describe_record
from harness.report.grid import key_records
from harness.spec.config import Config
from harness.spec.network import INPUT, LABELS, Layer, network
from harness.spec.records import LOAD
from harness.store.memstate import Memstate

MAX_TILES = 256  # hidden units drawn as 28x28 tiles


WORST_ROWS = 12  # worst elements listed for the focus record


SIDE = 28  # MNIST images are 28x28 pixels; other square images tile by their own side


DPI = 80


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height))


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{esc(alt)}">'


def error_plot(c: Comparison, focus: RecordDiff | None, cfg: Config | None = None) -> str:
    """Worst |A-B| / bound per step for the loss, the focus record, the parameters and any record."""
    plotted = [r for r in c.records if r.step != LOAD and has_ratio(r)]  # a shape or a stop has no ratio to plot
    steps = sorted({int(r.step) for r in plotted})
    if not steps:
        return ""
    finite = [r.worst_ratio for r in plotted if math.isfinite(r.worst_ratio)]
    floor, top = 1e-3, max(10.0, 3 * max(finite, default=1.0))  # the axis follows the data; inf is drawn at the top
    names = list(dict.fromkeys(([focus.name] if focus else []) + list(key_records(cfg))))
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


def axis_names(name: str, ndim: int, cfg: Config | None = None) -> tuple[str, str]:
    """What a record's rows and columns are (spec shapes), from its layer in the network."""
    net = network(cfg or Config())
    if name == INPUT:
        return "sample", "pixel"
    if name == LABELS:
        return "", "sample"
    prefix, _, op = name.partition("/")
    layer = next((x for x in net.layers if x.name == prefix), net.output)  # the loss: the output's

    def units(x: Layer) -> str:
        return "class" if x.output else f"{x.name} unit"
    if op == "grad_weight" or op.startswith("weight"):  # and its optimizer buffers
        return units(layer), "pixel" if layer.source == INPUT else units(net.layer(layer.source.partition("/")[0]))
    return ("" if ndim == 1 else "sample"), units(layer)


def image_side(pixels: int) -> int | None:
    """The side of a square image of this many pixels (28 for 784), or None where it is not square."""
    side = math.isqrt(pixels)
    return side if side > 1 and side * side == pixels else None


def tiles(x: np.ndarray, limit: int = MAX_TILES) -> np.ndarray:
    """(n, side*side) rows as side x side images in a grid (28x28 for MNIST), one pixel of NaN between
    them: row k's pixel p lands at tile k, row p // side, column p % side."""
    side = image_side(x.shape[1]) or SIDE
    n = min(x.shape[0], limit)
    cols = max(1, math.ceil(math.sqrt(2 * n)))
    rows = math.ceil(n / cols)
    out = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)  # (rows*29-1, cols*29-1) for MNIST
    for k in range(n):
        r, col = divmod(k, cols)
        out[r * (side + 1):r * (side + 1) + side, col * (side + 1):col * (side + 1) + side] = x[k].reshape(side, side)
    return out


def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.nan)


def heatmaps(arr: RecordArrays, name: str, labels: tuple[str, str], tiled: bool, cfg: Config | None = None) -> str:
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
    rows, cols = axis_names(name, arr.a.ndim, cfg)
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
    side = image_side(arr.a.shape[-1]) or SIDE
    what = f"{name}: one {side}x{side} tile per {rows}" if tiled else name
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
    cfg = config_of(a) or config_of(b)
    if arr is not None:
        if arr.a.ndim >= 1 and arr.a.size > 1:
            parts.append(heatmaps(arr, focus.name, labels, tiled=False, cfg=cfg))
            side = image_side(arr.a.shape[-1]) if arr.a.ndim == 2 else None
            if side and axis_names(focus.name, 2, cfg)[1] == "pixel":  # a row per image or per unit's weights
                n = arr.a.shape[0]
                more = f" (the first {MAX_TILES} of {n})" if n > MAX_TILES else ""
                parts.append(f"<h3>As {side}x{side} images, one per row{more}</h3>")
                parts.append(heatmaps(arr, focus.name, labels, tiled=True, cfg=cfg))
            parts.append(histogram(arr, labels))
        parts.append("<h3>Worst elements</h3>" + worst_table(arr, labels))
        if arr.off_a is not None and arr.off_b is not None:
            parts.append("<p>The last two columns are each side's value minus the op applied to that side's own "
                         "recorded inputs: a correct side stays within its own rounding there.</p>")
    parts.append("</section>")
    return "".join(parts)
